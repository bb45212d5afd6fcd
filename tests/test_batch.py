"""Batch size and dynamic batch: ``export --batch N`` and ``--dynamic-batch``.

A dynamic artifact runs at batch 1 and 3 in its runtime, read by the runtime itself (the
graph's input dimension, a session fed 3 images directly) and compared with the
official-structure reference model; a static ``--batch 2`` artifact records its batch in the
manifest and in its graph; targets without a symbolic batch refuse ``--dynamic-batch`` while
the command line is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, export_tiny, oracle_logits, oracle_model
from restv2_edge.converters.base import MAX_DYNAMIC_CHUNK, ExportRequest, Runner, get_converter

from restv2_edge import cli
from restv2_edge.artifact import open_artifact
from restv2_edge.bench.artifacts import bench_artifacts
from restv2_edge.errors import ArtifactError, ExportError
from restv2_edge.manifest import MANIFEST_NAME, verify_files
from restv2_edge.parity import load_inputs

#: fp32 runner vs the reference model, as in the target contract tests
FP32_TOLERANCE = 1e-4


def cli_run(*args: object) -> tuple[int, str, str]:
    """``restv2-edge ARGS`` through the console entry, in this process: (code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(sys, "argv", ["restv2-edge", *map(str, args)])
        try:
            cli.run()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def oracle(tiny_checkpoint: Path):
    return oracle_model(tiny_checkpoint, **TINY_CONFIG)


@pytest.fixture(scope="module")
def photos(tiny_checkpoint: Path, photo_dir: Path) -> np.ndarray:
    """Three preprocessed photos (as the artifact expects them)."""
    from restv2_edge.factory import create_model

    pre = create_model(weights=tiny_checkpoint).preprocessing
    return load_inputs(pre, photo_dir, 3).images


@pytest.fixture(scope="module")
def dynamic_artifact(tiny_checkpoint, photo_dir, tmp_path_factory):
    """``dynamic_artifact(target)``: the tiny checkpoint exported with a dynamic batch."""
    cache: dict[str, tuple[Path, object]] = {}
    root = tmp_path_factory.mktemp("dynamic")

    def get(target: str):
        if target not in cache:
            out = root / target
            cache[target] = export_tiny(
                tiny_checkpoint, target, "fp32", out, photo_dir, parity_limit=4, dynamic_batch=True
            )
        return cache[target]

    return get


def _runtime_batch_dim(target: str, folder: Path) -> object:
    """The input's batch dimension as the runtime reads the model file (not the manifest)."""
    if target == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        return session.get_inputs()[0].shape[0]
    import openvino as ov

    dim = ov.Core().read_model(str(folder / "model.xml")).inputs[0].get_partial_shape()[0]
    return "dynamic" if dim.is_dynamic else dim.get_length()


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_dynamic_artifact_runs_batch_1_and_3_like_the_reference(
    target, dynamic_artifact, oracle, photos
) -> None:
    folder, manifest = dynamic_artifact(target)
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["input"]["dynamic_batch"] is True
    assert data["input"]["shape"][0] == 1 and data["output"]["shape"] == [1, 10]
    assert manifest.parity["status"] == "passed" and manifest.parity["batch"]["dynamic"]
    assert _runtime_batch_dim(target, folder) in ("batch", "dynamic")
    _, runner = open_artifact(folder)
    assert runner.dynamic_batch
    sent = []
    run_batch = runner.run_batch
    runner.run_batch = lambda x: sent.append(len(x)) or run_batch(x)
    for count in (1, 3):
        logits = runner(photos[:count])
        assert logits.shape == (count, 10)
        np.testing.assert_allclose(
            logits, oracle_logits(oracle, photos[:count]), atol=FP32_TOLERANCE, rtol=0
        )
    assert sent == [1, 3]  # unpadded, one call each
    report = bench_artifacts([folder], threads=1, warmup=0, runs=1, batch=3, memory=False)
    (row,) = report["rows"]
    assert (row["batch"], row["artifact_batch"], row["dynamic_batch"]) == (3, 1, True)
    assert report["settings"]["batch"] == 3


def test_dynamic_onnx_session_takes_three_images_directly(dynamic_artifact, oracle, photos):
    """onnxruntime itself, without the product's runner, runs the file at batch 3."""
    import onnxruntime as ort

    folder, _ = dynamic_artifact("onnx")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": photos})
    np.testing.assert_allclose(logits, oracle_logits(oracle, photos), atol=FP32_TOLERANCE, rtol=0)


def test_static_batch_2_is_recorded_and_padded(
    tiny_checkpoint, photo_dir, tmp_path, oracle, photos
):
    folder, manifest = export_tiny(
        tiny_checkpoint, "onnx", "fp32", tmp_path / "b2", photo_dir, parity_limit=3, batch_size=2
    )
    data = json.loads((folder / MANIFEST_NAME).read_text())
    assert data["input"]["shape"] == [2, 3, 64, 64] and data["output"]["shape"] == [2, 10]
    assert data["input"]["dynamic_batch"] is False and manifest.batch_size == 2
    assert _runtime_batch_dim("onnx", folder) == 2
    assert manifest.parity["status"] == "passed" and manifest.parity["batch"]["size"] == 2
    _, runner = open_artifact(folder)
    logits = runner(photos)  # 3 images: one batch of 2, one padded to 2
    np.testing.assert_allclose(logits, oracle_logits(oracle, photos), atol=FP32_TOLERANCE, rtol=0)
    # bench times an artifact at its own batch unless told otherwise, and says so per row
    (row,) = bench_artifacts([folder], threads=1, warmup=0, runs=1, memory=False)["rows"]
    assert (row["batch"], row["artifact_batch"], row["dynamic_batch"]) == (2, 2, False)
    assert row["per_image_ms"] == pytest.approx(row["median_ms"] / 2)


def test_cli_refuses_dynamic_batch_where_the_target_has_none(tmp_path) -> None:
    out = tmp_path / "never"
    code, _, err = cli_run("export", "--target", "executorch", "--dynamic-batch", "--output", out)
    assert code == 2
    line = one_error_line(err)
    assert "--dynamic-batch" in line and "executorch" in line and "onnx" in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_cli_refuses_a_batch_that_is_not_positive(tmp_path, value) -> None:
    code, _, err = cli_run(
        "export", "--target", "onnx", "--batch", value, "--output", tmp_path / "x"
    )
    assert code == 2 and "--batch" in one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_library_refuses_dynamic_batch_where_the_target_has_none() -> None:
    with pytest.raises(ExportError, match="cannot export a dynamic batch"):
        get_converter("executorch").check_request(ExportRequest(dynamic_batch=True))
    with pytest.raises(ExportError, match="batch size"):
        get_converter("onnx").check_request(ExportRequest(batch_size=0))


class CountingRunner(Runner):
    """A runner whose runtime is a function of each row, recording what it was sent."""

    def __init__(self, batch_size: int, dynamic_batch: bool) -> None:
        super().__init__(batch_size, dynamic_batch)
        self.sent: list[int] = []

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if not self.dynamic_batch:
            assert len(x) == self.batch_size
        self.sent.append(len(x))
        return x.reshape(len(x), -1)[:, :2] * 2


@pytest.mark.parametrize(
    ("batch", "dynamic", "sent"),
    [(1, True, [MAX_DYNAMIC_CHUNK, MAX_DYNAMIC_CHUNK, 2]), (4, False, [4] * 33)],
)
def test_runner_chunks_dynamic_unpadded_and_static_padded(batch, dynamic, sent) -> None:
    x = np.arange(130 * 3, dtype=np.float32).reshape(130, 3, 1, 1)
    runner = CountingRunner(batch, dynamic)
    out = runner(x)
    assert runner.sent == sent
    np.testing.assert_array_equal(out, x.reshape(130, 3)[:, :2] * 2)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: m["input"].update(dynamic_batch="yes"), "input.dynamic_batch"),
        (lambda m: m["input"].update(batch_sizes=[1, 0]), "input.batch_sizes"),
        (lambda m: m["output"].update(shape=[3, 10]), "does not start with the input batch"),
    ],
)
def test_manifest_batch_fields_are_checked(dynamic_artifact, tmp_path, change, fragment) -> None:
    folder, _ = dynamic_artifact("onnx")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    path = copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=fragment):
        verify_files(copy)


def test_older_manifest_without_dynamic_batch_is_static(dynamic_artifact, tmp_path) -> None:
    folder, _ = dynamic_artifact("onnx")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    path = copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    del data["input"]["dynamic_batch"]
    path.write_text(json.dumps(data))
    assert verify_files(copy).dynamic_batch is False


# -- INT8 at a batch (slow: one calibrated export per case) -------------------------------------

#: (target, batch request, quantization): max_drop runs the recipes' accuracy checks, which
#: feed held-back images at their own batch (one at a time for OpenVINO)
INT8_BATCH_CASES = [
    ("onnx", {"batch_size": 2}, {}),
    ("onnx", {"dynamic_batch": True}, {"max_drop": 50.0}),
    ("openvino", {"batch_size": 2}, {"max_drop": 50.0}),
    ("openvino", {"dynamic_batch": True}, {}),
    ("executorch", {"batch_size": 2}, {}),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "batch", "quantization"),
    INT8_BATCH_CASES,
    ids=["onnx-batch2", "onnx-dynamic-max-drop", "openvino-batch2-max-drop", "openvino-dynamic",
         "executorch-batch2"],
)  # fmt: skip
def test_int8_exports_at_a_batch(
    target, batch, quantization, tiny_checkpoint, photo_dir, tmp_path, photos
):
    """Calibration at the artifact's batch (OpenVINO: quantized with a dynamic batch, then
    reshaped); the artifact's own runtime runs 3 images, gated against the reference."""
    from restv2_edge.calibration.dataset import build_calibration_set

    from restv2_edge.factory import create_model
    from restv2_edge.parity import compare

    model = create_model(weights=tiny_checkpoint)
    calib = build_calibration_set(photo_dir, 16, model.preprocessing, seed=0)
    folder, manifest = export_tiny(
        tiny_checkpoint,
        target,
        "int8",
        tmp_path / target,
        photo_dir,
        calibration=calib,
        quantization=quantization,
        **batch,
    )
    assert manifest.parity["status"] == "passed", manifest.parity
    assert manifest.batch_size == batch.get("batch_size", 1)
    assert manifest.dynamic_batch == batch.get("dynamic_batch", False)
    _, runner = open_artifact(folder)
    oracle = oracle_model(tiny_checkpoint, **TINY_CONFIG)
    assert compare(oracle_logits(oracle, photos), runner(photos))["cosine_mean"] > 0.99
