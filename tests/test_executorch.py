"""ExecuTorch target: XNNPACK lowering, delegation report, parity in executorch.runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("executorch")

from conftest import oracle_logits, oracle_model, run_cli
from restv2_edge.converters.base import ExportRequest, get_converter
from restv2_edge.converters.executorch import ExecuTorchRunner, lower

from restv2_edge.artifact import open_artifact
from restv2_edge.errors import ExportError
from restv2_edge.parity import compare, load_inputs

# The contract every target shares (manifest fields and hashes, parity on photos, the match
# with the reference model, reproducible files, the refused fp16, the missing extra) is
# tests/test_target_contract.py; this file keeps what is ExecuTorch's own.


def serialized_plan(path: Path):
    """The program's execution plan as ExecuTorch's own deserializer reads it."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    plan = deserialize_pte_binary(path.read_bytes()).program.execution_plan[0]
    calls = [i.instr_args for chain in plan.chains for i in chain.instructions]
    kernels = [plan.operators[c.op_index].name for c in calls if isinstance(c, KernelCall)]
    delegates = [c for c in calls if isinstance(c, DelegateCall)]
    return plan, kernels, delegates


@pytest.fixture(scope="module")
def tiny_pte(tiny_artifact) -> Path:
    """The tiny fp32 program (exported once per session, shared with the contract tests)."""
    return tiny_artifact("executorch", "fp32")[0]


def test_manifest_and_delegation_report(tiny_pte: Path) -> None:
    manifest = json.loads((tiny_pte / "manifest.json").read_text())
    assert manifest["model_file"] == "model.pte"
    assert manifest["graph_form"] == "decomposed"
    assert "executorch" in manifest["versions"]
    [entry] = manifest["files"]
    assert entry["path"] == "model.pte"
    delegation = manifest["export"]["delegation"]
    assert delegation["delegate_segments"] == 1
    assert delegation["not_delegated"] == {}
    assert delegation["delegated_share"] == 1.0
    assert delegation["delegated_ops"] == delegation["total_ops"] > 100
    assert "XNNPACK" in manifest["parity"]["runner"]


def test_program_is_one_xnnpack_delegate(tiny_pte: Path) -> None:
    plan, kernels, delegates = serialized_plan(tiny_pte / "model.pte")
    assert [d.id for d in plan.delegates] == ["XnnpackBackend"]
    assert len(delegates) == 1
    assert kernels == []  # no portable kernel runs at all


def test_threads_resize_the_xnnpack_threadpool(tiny_pte: Path) -> None:
    from executorch.extension.pybindings import portable_lib

    before = portable_lib._threadpool_get_thread_count()
    try:
        open_artifact(tiny_pte, threads=1)
        assert portable_lib._threadpool_get_thread_count() == 1
    finally:
        portable_lib._unsafe_reset_threadpool(before)


class _NonContiguousRepeat(torch.nn.Module):
    """Channel repeat of a transposed (channels-last in memory) map, then a grouped conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(12, 12, 3, padding=1, groups=12)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        grid = tokens.transpose(1, 2).unflatten(2, (4, 4))  # (B, 3, 4, 4), C innermost
        return self.conv(grid.repeat(1, 4, 1, 1))


def test_repeat_is_rewritten_into_the_delegate(tmp_path: Path) -> None:
    model = _NonContiguousRepeat().eval()
    x = torch.randn(1, 16, 3)
    program, summary = lower(model, x)
    assert summary["delegate_segments"] == 1 and summary["not_delegated"] == {}
    path = tmp_path / "repeat.pte"
    path.write_bytes(program.buffer)
    got = ExecuTorchRunner(path, 1)(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


class _LayerNormTail(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def test_heavy_op_outside_the_delegate_is_refused(tmp_path: Path) -> None:
    # XNNPACK does not take native layer_norm: the exporter must refuse, not ship it slow.
    converter = get_converter("executorch")
    with pytest.raises(ExportError, match="native_layer_norm"):
        converter.export(
            _LayerNormTail().eval(), torch.randn(1, 4, 8), tmp_path, ExportRequest(), lambda s: None
        )
    assert not (tmp_path / "model.pte").exists()


def test_t_export_is_one_delegate_and_matches_reference_model(
    t_checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "t-executorch"
    result = run_cli("export", "--target", "executorch", "--weights", t_checkpoint, "--output", out)
    assert result.returncode == 0, result.stderr
    manifest, runner = open_artifact(out)
    assert manifest.variant == "T" and manifest.image_size == 224
    assert manifest.export["delegation"]["delegate_segments"] == 1
    _, kernels, _ = serialized_plan(out / "model.pte")
    assert kernels == []
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 16)
    expected = oracle_logits(oracle_model(t_checkpoint, "T"), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
