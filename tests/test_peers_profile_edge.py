"""Peer pipelines and per-op profiles of the executorch, litert and coreml targets.

Peers are built from the independent official-structure model (tests/reference_restv2.py) and
checked against it on photos. ExecuTorch profiles are checked against the runtime itself (the
delegation the lowered program reports, the wall time of the profiled calls) and the runner's
normal path. LiteRT's profile samples its kernels with Linux perf and is checked against the
wall time of the profiled calls; Core ML has no profiler here and must say so in one line.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, oracle_logits, oracle_model
from restv2_edge.converters.base import get_descriptor

from restv2_edge.artifact import open_artifact
from restv2_edge.errors import ExportError, ProfileError
from restv2_edge.parity import compare, load_inputs
from restv2_edge.preprocess import Preprocessing

RUNS = 4


@pytest.fixture(scope="module")
def photos(photo_dir: Path) -> np.ndarray:
    return load_inputs(Preprocessing(64, crop_pct=1.0), photo_dir, 12).images


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path):
    return oracle_model(tiny_checkpoint, **TINY_CONFIG)


class LinearNorm(torch.nn.Module):
    """Linear, LayerNorm, GELU, linear: the plain XNNPACK lowering leaves the LayerNorm to a
    portable kernel (one fallback node between delegated ones), in seconds."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def small_peer(tmp_path_factory):
    """(module, input, run, work folder): the ExecuTorch fp32 peer of ``LinearNorm``."""
    pytest.importorskip("executorch")
    module = LinearNorm().eval()
    x = np.random.default_rng(0).standard_normal((1, 8, 16)).astype(np.float32)
    work = tmp_path_factory.mktemp("executorch-peer")
    return module, x, get_descriptor("executorch").peers[0].build(module, x, None, work), work


def _first_line_error(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert message and "\n" not in message, message
    return message


def _timed(runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    runner(x)
    return time.perf_counter() - start


def test_the_descriptors_declare_the_plain_pipelines() -> None:
    executorch, litert = get_descriptor("executorch").peers, get_descriptor("litert").peers
    assert [p.precision for p in executorch] == ["fp32", "int8"]
    assert "XnnpackPartitioner" in executorch[0].label
    assert "get_symmetric_quantization_config()" in executorch[1].label
    assert [p.precision for p in litert] == ["fp32"] and "litert_torch.convert" in litert[0].label
    assert get_descriptor("coreml").peers == ()  # no Core ML runtime on Linux


def test_executorch_fp32_peer_runs_the_module(small_peer) -> None:
    module, x, run, work = small_peer
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = run(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (work / "peer-fp32.pte").is_file()


def test_executorch_profile_counts_delegated_and_fallback_nodes(small_peer) -> None:
    """Both linears and the GELU in XNNPACK, the LayerNorm on its portable kernel."""
    from restv2_edge.converters.executorch import ExecuTorchRunner

    _, x, _, work = small_peer
    runner = ExecuTorchRunner(work / "peer-fp32.pte", 1)
    start = time.perf_counter()
    result = runner.profile(x, RUNS)
    wall_ms = (time.perf_counter() - start) * 1000
    delegated = sorted(op.op_type for op in result.ops if op.delegated)
    fallback = [op.op_type for op in result.ops if op.delegated is False]
    assert delegated == ["Fully Connected (NC, F32) GEMM"] * 2 + ["GELU (NC)"], result
    assert fallback == ["native_layer_norm.out"], result
    assert all(op.ms >= 0 for op in result.ops)
    assert len({op.name for op in result.ops}) == len(result.ops)
    assert 0 < sum(op.ms for op in result.ops) * RUNS <= wall_ms


@pytest.mark.slow
def test_executorch_fp32_peer_matches_the_reference(reference, photos, tmp_path) -> None:
    """The official-structure tiny model: the plain lowering computes the same function, and
    its profile has delegated XNNPACK nodes and portable-kernel LayerNorms."""
    from restv2_edge.converters.executorch import ExecuTorchRunner

    pytest.importorskip("executorch")
    run = get_descriptor("executorch").peers[0].build(reference, photos[:1], None, tmp_path)
    expected = oracle_logits(reference, photos[:4])
    got = np.concatenate([run(photos[i : i + 1]) for i in range(4)])
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert compare(expected, got)["max_abs_diff"] <= 1e-4
    result = ExecuTorchRunner(tmp_path / "peer-fp32.pte", 1).profile(photos[:1], RUNS)
    fallback = {op.op_type for op in result.ops if op.delegated is False}
    assert "native_layer_norm.out" in fallback
    assert any("GEMM" in op.op_type for op in result.ops if op.delegated)


def test_executorch_profile_of_the_artifact_is_one_delegate(tiny_artifact, photos) -> None:
    """The project's program runs every node in XNNPACK (export.delegation says one segment
    and nothing outside); its profile says the same, within the time the calls took."""
    pytest.importorskip("executorch")
    folder, manifest = tiny_artifact("executorch", "fp32")
    assert manifest.export["delegation"]["not_delegated"] == {}
    _, runner = open_artifact(folder)
    x = photos[:1]
    before = runner(x)
    fastest = min(_timed(runner, x) for _ in range(3))
    start = time.perf_counter()
    result = runner.profile(x, RUNS)
    wall_ms = (time.perf_counter() - start) * 1000
    assert result.runs == RUNS and "ETDump" in result.profiler and result.notes
    assert len(result.ops) > 20 and all(op.delegated is True for op in result.ops)
    total = sum(op.ms for op in result.ops)
    # within the profiled calls, and not a sliver of a plain one (the cores are shared)
    assert 0.1 * fastest * 1000 <= total and total * RUNS <= wall_ms, (total, fastest, wall_ms)
    np.testing.assert_array_equal(runner(x), before)  # the runner's own path is unchanged
    with pytest.raises(ProfileError):
        runner.profile(x, 0)
    with pytest.raises(ProfileError):
        runner.profile(np.concatenate([x, x]), 1)


def test_executorch_int8_peer_needs_calibration_images(reference, photos, tmp_path) -> None:
    pytest.importorskip("executorch")
    peer = get_descriptor("executorch").peers[1]
    with pytest.raises(ExportError) as info:
        peer.build(reference, photos[:1], None, tmp_path)
    assert _first_line_error(info).startswith("executorch peer int8: needs at least 1")


class RequantizingReshape(torch.nn.Module):
    """A linear, a slice of its output, a reshape, a second linear. XNNPACKQuantizer's
    defaults observe the reshape's output apart from the linear's (the slice holds the
    smaller channels), so XNNPACK gets a reshape that requantizes, and refuses it at load."""

    def __init__(self) -> None:
        super().__init__()
        self.source = torch.nn.Linear(16, 16)
        with torch.no_grad():
            self.source.weight.mul_(torch.linspace(0.1, 3.0, 16).unsqueeze(1))
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.source(x)[..., :8].unflatten(2, (2, 4)))


def test_executorch_int8_peer_load_failure_is_one_export_error_line(tmp_path) -> None:
    pytest.importorskip("executorch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calibration = (rng.standard_normal((8, 4, 16)) * 3).astype(np.float32)
    peer = get_descriptor("executorch").peers[1]
    with pytest.raises(ExportError) as info:
        peer.build(RequantizingReshape().eval(), calibration[:1], calibration, tmp_path)
    message = _first_line_error(info)
    assert message.startswith("executorch peer int8: the lowered program: ExecuTorch load_method")
    assert "xnn_status_invalid_parameter" in message


@pytest.mark.slow
def test_executorch_int8_peer_runs_close_to_the_reference(reference, photos, tmp_path) -> None:
    """Plain PT2E + XNNPACKQuantizer defaults on the tiny model: it loads and runs, a working
    int8 model of random weights (its load can fail on larger graphs: one ExportError line)."""
    pytest.importorskip("executorch")
    peer = get_descriptor("executorch").peers[1]
    run = peer.build(reference, photos[:1], photos[4:], tmp_path)
    expected = oracle_logits(reference, photos[:4])
    got = np.concatenate([run(photos[i : i + 1]) for i in range(4)])
    assert compare(expected, got)["cosine_mean"] >= 0.95
    assert (tmp_path / "peer-int8.pte").is_file()


@pytest.mark.slow
def test_litert_fp32_peer_matches_the_reference(reference, photos, tmp_path) -> None:
    pytest.importorskip("litert_torch")
    run = get_descriptor("litert").peers[0].build(reference, photos[:1], None, tmp_path)
    expected = oracle_logits(reference, photos[:4])
    got = np.concatenate([run(photos[i : i + 1]) for i in range(4)])
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert compare(expected, got)["max_abs_diff"] <= 1e-4
    assert (tmp_path / "peer-fp32.tflite").is_file()


def test_coreml_profile_refuses_in_one_line(tiny_artifact, photos) -> None:
    folder, _ = tiny_artifact("coreml", "fp16")
    _, runner = open_artifact(folder)
    with pytest.raises(ProfileError) as info:
        runner.profile(photos[:1], RUNS)
    assert "macOS" in _first_line_error(info)


@pytest.mark.skipif(shutil.which("perf") is None, reason="Linux perf is not installed")
def test_litert_profile_samples_the_xnnpack_kernels(tiny_artifact, photos) -> None:
    """perf attributes the profiled calls to XNNPACK (its microkernels, the GEMMs among them,
    and its thread pool: the tiny model's calls are ~0.2 ms, much of it dispatch), within the
    wall time those calls took."""
    pytest.importorskip("ai_edge_litert")
    folder, _ = tiny_artifact("litert", "fp32")
    _, runner = open_artifact(folder)
    x, runs = photos[:1], 200
    before = runner(x)
    fastest = min(_timed(runner, x) for _ in range(3))
    start = time.perf_counter()
    result = runner.profile(x, runs)
    wall_ms = (time.perf_counter() - start) * 1000
    assert result.runs == runs and result.unit == "kernel" and "Linux perf" in result.profiler
    total = sum(op.ms for op in result.ops)
    pool = "thread pool (dispatch, waiting)"
    xnnpack = sum(op.ms for op in result.ops if op.delegated or op.op_type == pool)
    assert any(op.op_type == "XNNPACK f32_gemm_minmax" for op in result.ops), result
    assert xnnpack >= 0.5 * total, result
    assert 0.1 * fastest * 1000 <= total and total * runs <= wall_ms, (total, fastest, wall_ms)
    np.testing.assert_array_equal(runner(x), before)
    with pytest.raises(ProfileError):
        runner.profile(x, 0)


def test_litert_profile_without_perf_is_one_line(tiny_artifact, photos, monkeypatch) -> None:
    import restv2_edge.kernel_samples as kernel_samples

    pytest.importorskip("ai_edge_litert")
    folder, _ = tiny_artifact("litert", "fp32")
    _, runner = open_artifact(folder)
    monkeypatch.setattr(kernel_samples.shutil, "which", lambda name: None)
    with pytest.raises(ProfileError) as info:
        runner.profile(photos[:1], RUNS)
    message = _first_line_error(info)
    assert "apt install linux-perf" in message and "benchmark_model" in message
