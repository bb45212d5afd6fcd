"""scripts/model_ideas.py: each graph variant it times is the same function as the form the
converters export, checked against the official-structure reference."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, oracle_logits, oracle_model

from restv2_edge.export import export_graph
from restv2_edge.factory import create_model
from restv2_edge.model import GraphForm

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _model_ideas():
    sys.path.insert(0, str(SCRIPTS))  # model_ideas imports its sibling runtime_ideas
    try:
        spec = importlib.util.spec_from_file_location("model_ideas", SCRIPTS / "model_ideas.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.mark.parametrize(
    ("builder", "module"),
    [
        ("tokens_2d_graph", "Tokens2dAttention"),
        ("one_head_3d_graph", "OneHead3dAttention"),
        ("norm_fold_graph", None),
        ("mlp_conv_graph", "pointwise Mlp"),
        ("mlp_conv_ends_graph", "pointwise Mlp"),
        ("linears_conv_graph", "PointwiseLinear"),
    ],
)
def test_variant_computes_the_reference_function(
    tiny_checkpoint: Path, builder: str, module: str | None
) -> None:
    ideas = _model_ideas()
    model = create_model(weights=tiny_checkpoint)
    variant = getattr(ideas, builder)(export_graph(model, "native", raw_input=False))
    if module == "pointwise Mlp":  # the product's pointwise MLP, switched on in the copy
        assert any(
            getattr(m, "form", None) is GraphForm.NATIVE_POINTWISE for m in variant.modules()
        )
    elif module is not None:  # the variant's own module is in the graph
        assert any(type(m) is getattr(ideas, module) for m in variant.modules())
    else:
        assert variant.norm.weight is None and variant.stage1[0].norm2.weight is None
    images = np.random.default_rng(0).standard_normal((2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    images = images.astype(np.float32)
    with torch.no_grad():
        got = variant(torch.from_numpy(images)).numpy()
    expected = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), images)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("script", ["runtime_ideas.py", "model_ideas.py"])
def test_too_few_timed_runs_is_one_error_line(script):
    """Per-round ratios need a whole block of calls: fewer is refused at parse time."""
    command = "conv" if script == "runtime_ideas.py" else "norm-fold"
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), command, "--runs", "3"],
        capture_output=True,
        text=True,
        cwd=SCRIPTS,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: argument --runs: 3 is not an integer of at least 5"
    ]
    assert "Traceback" not in done.stdout + done.stderr
