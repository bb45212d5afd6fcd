"""Device selection: ``--device`` on parity, predict, eval and bench.

What is available comes from the runtimes themselves (``onnxruntime.get_available_providers()``,
``ov.Core().available_devices``); a device that is not here is one error line listing them,
with nothing written; an available one runs and computes what the reference model computes.
Only the CPU exists on this machine: GPU/NPU devices and other execution providers are not
exercised here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_CONFIG, oracle_logits, oracle_model
from restv2_edge.converters.base import get_converter
from test_batch import cli_run, one_error_line

from restv2_edge.artifact import open_artifact
from restv2_edge.bench.artifacts import bench_artifacts
from restv2_edge.errors import RunnerUnavailableError
from restv2_edge.parity import load_inputs

FP32_TOLERANCE = 1e-4


def runtime_devices(target: str) -> list[str]:
    """The devices the runtime reports, asked directly (not through the converter)."""
    if target == "onnx":
        import onnxruntime as ort

        return [p for p in ort.get_available_providers() if p != "AzureExecutionProvider"]
    import openvino as ov

    return list(ov.Core().available_devices)


def missing_device(target: str) -> str:
    candidates = {
        "onnx": ["CUDAExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider"],
        "openvino": ["NPU", "GPU"],
    }[target]
    absent = [name for name in candidates if name not in runtime_devices(target)]
    if not absent:
        pytest.skip(f"every candidate device is present for {target}")
    return absent[0]


@pytest.fixture(scope="module")
def photos(tiny_checkpoint: Path, photo_dir: Path) -> np.ndarray:
    from restv2_edge.factory import create_model

    return load_inputs(create_model(weights=tiny_checkpoint).preprocessing, photo_dir, 2).images


@pytest.mark.parametrize("target", ["onnx", "openvino"])
def test_unavailable_device_is_one_line_listing_what_is_there(
    target, tiny_artifact, tiny_checkpoint, photo_dir, tmp_path
) -> None:
    folder, _ = tiny_artifact(target, "fp32")
    device = missing_device(target)
    with pytest.raises(RunnerUnavailableError) as caught:
        open_artifact(folder, device=device)
    message = str(caught.value)
    assert "\n" not in message and f"device {device} is not available for {target}" in message
    assert all(name in message.split("available:")[1] for name in runtime_devices(target))

    photo = sorted(photo_dir.iterdir())[0]
    report = tmp_path / "report.json"
    commands = [
        ("predict", folder, photo, "--device", device),
        ("parity", folder, "--weights", tiny_checkpoint, "--device", device, "--json", report),
        ("bench", folder, "--device", device, "--runs", 1, "--no-memory", "--json", report),
        ("eval", folder, "--data", photo_dir, "--limit", 2, "--device", device, "--json", report),
    ]
    for command in commands:
        code, out, err = cli_run(*command)
        assert code == 1, (command, err)
        line = one_error_line(err)
        assert device in line and "available:" in line and runtime_devices(target)[0] in line
        assert out == ""
    assert not report.exists()


@pytest.mark.parametrize(
    ("target", "device", "canonical"),
    [
        ("onnx", "CPUExecutionProvider", "CPUExecutionProvider"),
        ("onnx", "cpu", "CPUExecutionProvider"),
        ("openvino", "CPU", "CPU"),
        ("openvino", "AUTO", "AUTO"),
        ("openvino", "MULTI:CPU", "MULTI:CPU"),
    ],
)
def test_available_device_runs_like_the_reference(
    target, device, canonical, tiny_artifact, tiny_checkpoint, photos
) -> None:
    folder, _ = tiny_artifact(target, "fp32")
    _, runner = open_artifact(folder, device=device)
    assert runner.device == canonical and canonical.split(":")[0] in runner.description
    oracle = oracle_model(tiny_checkpoint, **TINY_CONFIG)
    np.testing.assert_allclose(
        runner(photos), oracle_logits(oracle, photos), atol=FP32_TOLERANCE, rtol=0
    )


def test_parity_and_bench_records_name_the_device(tiny_artifact, tiny_checkpoint, tmp_path):
    folder, manifest = tiny_artifact("openvino", "fp32")
    assert manifest.parity["device"] == "CPU"  # the export's gate ran on the default
    report = tmp_path / "parity.json"
    code, _, err = cli_run(
        "parity", folder, "--weights", tiny_checkpoint, "--limit", 2, "--device", "AUTO",
        "--json", report,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(report.read_text())
    assert record["device"] == "AUTO" and record["status"] == "passed"
    bench = bench_artifacts([folder], threads=1, warmup=0, runs=1, memory=False, device="AUTO")
    (row,) = bench["rows"]
    assert row["device"] == "AUTO" and bench["settings"]["device"] == "AUTO"
    assert row["batch"] == 1 and row["per_image_ms"] == pytest.approx(row["median_ms"])


def test_openvino_virtual_devices_need_real_ones_here() -> None:
    converter = get_converter("openvino")
    real = runtime_devices("openvino")
    available = converter.available_devices()
    assert available[: len(real)] == sorted(real, key=lambda d: (d != "CPU", d))
    assert converter.check_device(None) == "CPU" and converter.check_device("cpu") == "CPU"
    assert converter.check_device("AUTO:CPU") == "AUTO:CPU"
    assert converter.check_device("HETERO:CPU") == "HETERO:CPU"
    for device in ("MULTI:", "AUTO:CPU,FPGA", "HETERO", "FPGA"):
        with pytest.raises(RunnerUnavailableError, match="available: CPU"):
            converter.check_device(device)


def test_executorch_devices_are_the_cpu_and_the_artifact_s_backend() -> None:
    converter = get_converter("executorch")
    try:
        converter.check_installed()
    except Exception as exc:
        pytest.skip(str(exc))
    from executorch.runtime import Runtime

    manifest = SimpleNamespace(export={"backend": "XnnpackBackend"})
    has_xnnpack = Runtime.get().backend_registry.is_available("XnnpackBackend")
    expected = ["CPU", "XnnpackBackend"] if has_xnnpack else ["CPU"]
    assert converter.available_devices(manifest) == expected
    assert converter.check_device("xnnpackbackend", manifest) == expected[-1]
    with pytest.raises(RunnerUnavailableError, match="available: " + ", ".join(expected)):
        converter.check_device("VulkanBackend", manifest)


def test_litert_runs_on_the_cpu_only() -> None:
    converter = get_converter("litert")
    assert converter.available_devices() == ["CPU"]
    with pytest.raises(RunnerUnavailableError, match="device GPU is not available for litert"):
        converter.check_device("GPU")


def test_a_checkpoint_evaluates_on_the_cpu_only(tiny_checkpoint, photo_dir) -> None:
    code, _, err = cli_run("eval", tiny_checkpoint, "--data", photo_dir, "--device", "GPU")
    assert code == 1 and "available: CPU" in one_error_line(err)


@pytest.mark.parametrize("value", ["", "C PU", "GPU;rm"])
def test_device_spelling_is_checked_at_parse_time(tiny_artifact, value) -> None:
    folder, _ = tiny_artifact("onnx", "fp32")
    code, _, err = cli_run("predict", folder, folder, "--device", value)
    assert code == 2 and "--device" in one_error_line(err)
