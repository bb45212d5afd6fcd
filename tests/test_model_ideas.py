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


def _script(name: str):
    sys.path.insert(0, str(SCRIPTS))  # model_ideas imports its sibling runtime_ideas
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.mark.parametrize(
    ("builder", "module", "base_form"),
    [
        ("tokens_2d_graph", "Tokens2dAttention", "native"),
        ("one_head_3d_graph", "OneHead3dAttention", "native"),
        ("norm_fold_graph", None, "native"),
        ("mlp_conv_graph", "pointwise Mlp", "native"),
        ("mlp_conv_graph", "pointwise Mlp", "native-convtranspose"),
        ("mlp_conv_ends_graph", "pointwise Mlp", "native"),
        ("linears_conv_graph", "PointwiseLinear", "native"),
        ("one_head_batch2_graph", "batched one head", "native"),
        ("TransposedMaps", "TransposedMaps", "native-onehead-batched"),
    ],
)
def test_variant_computes_the_reference_function(
    tiny_checkpoint: Path, builder: str, module: str | None, base_form: str
) -> None:
    ideas = _script("model_ideas")
    model = create_model(weights=tiny_checkpoint)
    variant = getattr(ideas, builder)(export_graph(model, base_form, raw_input=False))
    if module == "pointwise Mlp":  # the product's pointwise MLP, switched on in the copy
        assert any(
            getattr(m, "form", None) is GraphForm.NATIVE_POINTWISE for m in variant.modules()
        )
    elif module == "batched one head":  # the product's batched form, switched on in the copy
        assert variant.stage1[0].attn.half_tokens == TINY_IMAGE_SIZE**2 // 16 // 2
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


def test_onnx_int8_ideas_quantize_the_recipes_own_fp32_form(tiny_checkpoint, tmp_path):
    """``runtime_ideas onnx-int8`` starts from the graph the int8 export quantizes (native
    MLPs as Gemm/MatMul), not the fp32 artifact's pointwise form, and that file computes the
    reference function."""
    import onnx
    import onnxruntime as ort

    ideas = _script("runtime_ideas")
    images = np.random.default_rng(1).standard_normal((1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    images = images.astype(np.float32)
    path = ideas.recipe_fp32_onnx(create_model(weights=tiny_checkpoint), images, tmp_path)
    graph = onnx.load(str(path)).graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    pointwise = [
        node
        for node in graph.node
        if node.op_type == "Conv" and weights.get(node.input[1], [0, 0, 0])[2:] == [1, 1]
    ]
    assert len(pointwise) == 1  # the stem's projection; the block MLPs stay linears
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    expected = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), images)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
