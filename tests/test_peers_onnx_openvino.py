"""Peer pipelines and per-op profiles of the onnx and openvino targets.

Peers are built from the independent official-structure model and checked against it; profiles
are checked against the artifact's own runner (every node's time is positive, the sum is a
plausible share of a profiled inference, the runner's normal path is untouched).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from conftest import TINY_CONFIG, oracle_logits, oracle_model
from restv2_edge.converters.base import get_descriptor

from restv2_edge.artifact import open_artifact
from restv2_edge.errors import ProfileError
from restv2_edge.parity import compare, load_inputs
from restv2_edge.preprocess import Preprocessing

#: what each peer must reach against the reference model on photos (fp32: the runtime computes
#: the same function; half: bf16/f16 noise; int8: a working quantized model of random weights)
PEER_GATES = {"fp32": ("max_abs_diff", 1e-4), "half": ("cosine_min", 0.999),
              "int8": ("cosine_mean", 0.95)}  # fmt: skip
#: the peers cheap enough for the default run (the rest are slow-marked)
DEFAULT_RUN = {("onnx", "fp32"), ("openvino", "half")}


@pytest.fixture(scope="module")
def photos(photo_dir: Path) -> np.ndarray:
    return load_inputs(Preprocessing(64, crop_pct=1.0), photo_dir, 12).images


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path):
    return oracle_model(tiny_checkpoint, **TINY_CONFIG)


def _peer_cases():
    for target in ("onnx", "openvino"):
        for peer in get_descriptor(target).peers:
            marks = [] if (target, peer.precision) in DEFAULT_RUN else [pytest.mark.slow]
            yield pytest.param(target, peer, id=f"{target}-{peer.precision}", marks=marks)


def test_each_target_declares_the_issue_peers() -> None:
    assert [p.precision for p in get_descriptor("onnx").peers] == ["fp32", "int8"]
    assert [p.precision for p in get_descriptor("openvino").peers] == ["fp32", "half", "int8"]
    nncf = get_descriptor("openvino").peers[2]
    assert (
        "TRANSFORMER" in nncf.label and "quantize_static" in get_descriptor("onnx").peers[1].label
    )


@pytest.mark.parametrize(("target", "peer"), list(_peer_cases()))
def test_peer_matches_the_reference_model(target, peer, reference, photos, tmp_path) -> None:
    run = peer.build(reference, photos[:1], photos[4:], tmp_path)
    expected = oracle_logits(reference, photos[:4])
    got = np.concatenate([run(photos[i : i + 1]) for i in range(4)])
    assert got.dtype == np.float32 and got.shape == expected.shape
    key, limit = PEER_GATES[peer.precision]
    value = compare(expected, got)[key]
    assert (value <= limit) if key.endswith("diff") else (value >= limit), (peer.label, value)


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_profile_times_every_node_of_one_batch(target, tiny_artifact, photos) -> None:
    folder, _ = tiny_artifact(target, "fp32")
    _, runner = open_artifact(folder)
    x = photos[:1]
    before = runner(x)
    fastest = min(_timed(runner, x) for _ in range(5))
    start = time.perf_counter()
    result = runner.profile(x, 5)
    profiled = (time.perf_counter() - start) / 6  # warm-up + 5 runs, plus setup: an upper bound
    assert result.runs == 5 and len(result.ops) > 20, result
    assert all(op.ms > 0 and op.op_type and op.name for op in result.ops)
    assert all(op.delegated is None for op in result.ops)  # CPU only: no delegates
    assert len({op.name for op in result.ops}) == len(result.ops)
    total = sum(op.ms for op in result.ops)
    # within one profiled inference, and not a sliver of a plain one (the cores are shared)
    assert 0.1 * fastest * 1000 <= total <= profiled * 1000, (total, fastest, profiled)
    assert result.notes and target in result.profiler.lower()
    np.testing.assert_array_equal(runner(x), before)  # the runner's own path is unchanged


def _timed(runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    runner(x)
    return time.perf_counter() - start


def test_profile_refuses_zero_runs(tiny_artifact, photos) -> None:
    _, runner = open_artifact(tiny_artifact("onnx", "fp32")[0])
    with pytest.raises(ProfileError):
        runner.profile(photos[:1], 0)
