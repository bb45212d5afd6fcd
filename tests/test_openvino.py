"""OpenVINO target: IR export, manifest, parity in the OpenVINO runtime, reproducibility."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, assert_one_line_error, run_cli
from reference_restv2 import reference_model
from restv2_edge.converters.base import ExportRequest, get_converter

from restv2_edge.artifact import open_artifact
from restv2_edge.checkpoint import read_checkpoint
from restv2_edge.errors import BackendMissingError, ExportError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.parity import compare, load_inputs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def oracle(checkpoint: Path, variant: str = "custom", **config) -> torch.nn.Module:
    """The official-structure reference model carrying the checkpoint's weights."""
    model = reference_model(variant, **config)
    model.load_state_dict(read_checkpoint(checkpoint).state_dict)
    return model.eval()


def oracle_logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def constant_types(xml: Path) -> set[str]:
    """Element types of the IR's floating-point constants, read back by OpenVINO itself."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    return {
        op.get_output_element_type(0).to_string()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real()
    }


@pytest.fixture(scope="module")
def tiny_ir(tiny_checkpoint: Path, photo_dir: Path, tmp_path_factory) -> Path:
    model = create_model(weights=tiny_checkpoint)
    out = tmp_path_factory.mktemp("ov") / "tiny-openvino-fp32"
    export_artifact(model, "openvino", out, ExportRequest())
    return out


def test_manifest_describes_the_ir(tiny_ir: Path) -> None:
    manifest = json.loads((tiny_ir / "manifest.json").read_text())
    assert manifest["target"] == "openvino"
    assert manifest["precision"] == "fp32"
    assert manifest["model_file"] == "model.xml"
    assert manifest["graph_form"] == "native"
    assert manifest["input"]["shape"] == [1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
    assert manifest["export"]["inference_precision"] == "f32"
    assert manifest["export"]["weights"] == "float32"
    assert "openvino" in manifest["versions"]
    files = {entry["path"]: entry for entry in manifest["files"]}
    assert set(files) == {"model.xml", "model.bin"}
    for name, entry in files.items():
        assert entry["sha256"] == sha256(tiny_ir / name)
        assert entry["bytes"] == (tiny_ir / name).stat().st_size
    parity = manifest["parity"]
    assert parity["status"] == "passed", parity
    assert "INFERENCE_PRECISION_HINT=f32" in parity["runner"]
    assert parity["metrics"]["max_abs_diff"] <= 1e-3


def test_ir_is_static_float32_with_named_io(tiny_ir: Path) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(tiny_ir / "model.xml"))
    assert [tuple(i.get_partial_shape().to_shape()) for i in model.inputs] == [
        (1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    ]
    assert model.inputs[0].get_any_name() == "input"
    assert model.outputs[0].get_any_name() == "logits"
    assert tuple(model.outputs[0].get_partial_shape().to_shape()) == (1, TINY_CONFIG["num_classes"])
    assert constant_types(tiny_ir / "model.xml") == {"f32"}


def test_runner_matches_reference_model_on_photos(
    tiny_ir: Path, tiny_checkpoint: Path, photo_dir: Path
) -> None:
    manifest, runner = open_artifact(tiny_ir)
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 24)
    assert inputs.images.shape[0] == 24
    expected = oracle_logits(oracle(tiny_checkpoint, **TINY_CONFIG), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics


def test_runner_honours_threads_and_f32_hint(tiny_ir: Path) -> None:
    import openvino as ov

    _, runner = open_artifact(tiny_ir, threads=1)
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert ov.__version__.split("-")[0] in runner.description


def test_same_checkpoint_gives_identical_files(
    tiny_ir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # Second export in the same process (OpenVINO's node-name counters have moved on) and a
    # third through the CLI in a fresh process: byte-identical IR.
    again = tmp_path / "again"
    export_artifact(create_model(weights=tiny_checkpoint), "openvino", again, ExportRequest())
    cli = tmp_path / "cli"
    result = run_cli(
        "export", "--target", "openvino", "--weights", tiny_checkpoint, "--output", cli
    )
    assert result.returncode == 0, result.stderr
    assert "parity passed" in result.stderr
    for name in ("model.xml", "model.bin"):
        assert sha256(again / name) == sha256(tiny_ir / name)
        assert sha256(cli / name) == sha256(tiny_ir / name)


def test_fp16_compresses_weights_and_passes_its_gate(
    tiny_ir: Path, tiny_checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fp16"
    _, manifest = export_artifact(
        create_model(weights=tiny_checkpoint), "openvino", out, ExportRequest(precision="fp16")
    )
    assert manifest.precision == "fp16"
    assert manifest.parity["status"] == "passed", manifest.parity
    assert manifest.export["weights"] == "float16"
    assert "f16" in constant_types(out / "model.xml")
    fp32_bytes = (tiny_ir / "model.bin").stat().st_size
    assert (out / "model.bin").stat().st_size < 0.6 * fp32_bytes
    manifest, runner = open_artifact(out)
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 24)
    expected = oracle_logits(oracle(tiny_checkpoint, **TINY_CONFIG), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["cosine_min"] >= 0.9995, metrics
    assert metrics["top1_agreement"] >= 0.99, metrics


def test_precision_it_cannot_do_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    model = create_model(weights=tiny_checkpoint)
    with pytest.raises(ExportError, match="openvino cannot export precision bf16"):
        export_artifact(model, "openvino", tmp_path / "x", ExportRequest(precision="bf16"))
    assert not (tmp_path / "x").exists()
    result = run_cli(
        "export", "--target", "openvino", "--precision", "int8", "--output", tmp_path / "y"
    )
    assert_one_line_error(result, "int8")  # int8 is --int8 with a calibration set
    assert not (tmp_path / "y").exists()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(BackendMissingError, match=r"nncf.*restv2-edge\[openvino\]"):
        get_converter("openvino").check_installed()


def test_t_export_matches_reference_model(
    t_checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "t-openvino"
    result = run_cli("export", "--target", "openvino", "--weights", t_checkpoint, "--output", out)
    assert result.returncode == 0, result.stderr
    manifest, runner = open_artifact(out)
    assert manifest.variant == "T" and manifest.image_size == 224
    assert manifest.parity["status"] == "passed"
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 16)
    expected = oracle_logits(oracle(t_checkpoint, "T"), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
