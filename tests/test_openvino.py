"""OpenVINO target: IR export, manifest, parity in the OpenVINO runtime, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, oracle_logits, oracle_model, run_cli
from conftest import sha256_path as sha256
from restv2_edge.converters.base import ExportRequest

from restv2_edge.artifact import open_artifact
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.parity import compare, load_inputs

# The contract every target shares (manifest fields and hashes, parity on photos, the match
# with the reference model, reproducible files across processes, refused precisions, the
# missing extra) is tests/test_target_contract.py; this file keeps what is OpenVINO's own.


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
def tiny_ir(tiny_artifact) -> Path:
    """The tiny fp32 IR (exported once per session, shared with the contract tests)."""
    return tiny_artifact("openvino", "fp32")[0]


def test_manifest_describes_the_ir(tiny_ir: Path) -> None:
    manifest = json.loads((tiny_ir / "manifest.json").read_text())
    assert manifest["model_file"] == "model.xml"
    assert manifest["graph_form"] == "native-convtranspose"
    assert manifest["export"]["inference_precision"] == "f32"
    assert manifest["export"]["weights"] == "float32"
    assert "openvino" in manifest["versions"]
    assert {entry["path"] for entry in manifest["files"]} == {"model.xml", "model.bin"}
    assert "INFERENCE_PRECISION_HINT=f32" in manifest["parity"]["runner"]


def upsampling_ops(xml: Path) -> dict[str, list[tuple[int, ...]]]:
    """What the IR's V upsampling is made of, read through OpenVINO: the weight shape of every
    GroupConvolution and GroupConvolutionBackpropData (G x O x I x kh x kw), and the input
    shape of every 6-D Transpose (OpenVINO's frontend writes a pixel shuffle as one)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    found: dict[str, list[tuple[int, ...]]] = {}
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        port = 0 if kind == "Transpose" else 1
        if kind not in ("GroupConvolution", "GroupConvolutionBackpropData", "Transpose"):
            continue
        shape = tuple(int(d.get_length()) for d in op.input(port).get_partial_shape())
        if kind != "Transpose" or len(shape) == 6:
            found.setdefault("PixelShuffle" if kind == "Transpose" else kind, []).append(shape)
    return found


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_each_precision_upsamples_in_its_measured_form(tiny_artifact, precision: str) -> None:
    """fp32 exports the native-convtranspose form: each V upsampling is one depthwise
    deconvolution with a 3r x 3r kernel and no pixel shuffle is left; fp16/bf16 export
    native-depthwise: every grouped conv has one output per group, then a pixel shuffle."""
    folder, manifest = tiny_artifact("openvino", precision)
    ops = upsampling_ops(folder / "model.xml")
    ratios = [
        ratio
        for depth, ratio in zip(TINY_CONFIG["depths"], TINY_CONFIG["sr_ratios"])
        for _ in range(depth)
        if ratio > 1
    ]
    assert ratios == [8, 4, 2, 2]
    if precision == "fp16":
        assert manifest.graph_form == "native-depthwise"
        assert {shape[1] for shape in ops["GroupConvolution"]} == {1}
        assert len(ops["PixelShuffle"]) == len(ratios)
        assert "GroupConvolutionBackpropData" not in ops
    else:
        assert manifest.graph_form == "native-convtranspose"
        kernels = [shape[-2:] for shape in ops["GroupConvolutionBackpropData"]]
        assert kernels == [(3 * r, 3 * r) for r in ratios]
        assert "PixelShuffle" not in ops
        assert {shape[1] for shape in ops["GroupConvolution"]} == {1}


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


def test_runner_honours_threads_and_f32_hint(tiny_ir: Path) -> None:
    import openvino as ov

    _, runner = open_artifact(tiny_ir, threads=1)
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert ov.__version__.split("-")[0] in runner.description


def test_second_export_in_the_same_process_is_identical(
    tiny_ir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # OpenVINO's node-name counters are process-wide and have moved on since the first export
    # (canonical_names renames them); a fresh process through the CLI is the contract's test.
    again = tmp_path / "again"
    export_artifact(create_model(weights=tiny_checkpoint), "openvino", again, ExportRequest())
    for name in ("model.xml", "model.bin"):
        assert sha256(again / name) == sha256(tiny_ir / name)


def test_fp16_compresses_weights(tiny_ir: Path, tiny_artifact) -> None:
    out, manifest = tiny_artifact("openvino", "fp16")
    assert manifest.export["weights"] == "float16"
    assert "f16" in constant_types(out / "model.xml")
    fp32_bytes = (tiny_ir / "model.bin").stat().st_size
    assert (out / "model.bin").stat().st_size < 0.6 * fp32_bytes


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
    expected = oracle_logits(oracle_model(t_checkpoint, "T"), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
