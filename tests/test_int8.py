"""INT8 exports per target on the tiny config: the runtime's own int8 graph, gated vs PyTorch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, assert_one_line_error, run_cli
from restv2_edge.calibration.dataset import build_calibration_set
from restv2_edge.converters.base import ExportRequest, get_converter

from restv2_edge.errors import ExportError
from restv2_edge.export import artifact_model, export_artifact
from restv2_edge.factory import create_model
from restv2_edge.parity import compare, load_inputs, torch_logits

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path):
    return create_model(None, None, None, tiny_checkpoint)


@pytest.fixture(scope="module")
def calib(tiny_model, photo_dir: Path):
    return build_calibration_set(photo_dir, 32, tiny_model.preprocessing, seed=0)


def _skip_unless_installed(target: str) -> None:
    try:
        get_converter(target).check_installed()
    except Exception as exc:
        pytest.skip(str(exc))


def _export(model, target, calib, tmp_path, **quantization):
    request = ExportRequest(precision="int8", calibration=calib, quantization=quantization)
    return export_artifact(model, target, tmp_path / target, request, parity_limit=8)


def _check_manifest(manifest, calib) -> None:
    assert manifest.precision == "int8"
    assert manifest.quantization["calibration"]["hash"] == calib.content_hash
    assert manifest.quantization["calibration"]["size"] == calib.size
    assert manifest.parity["status"] == "passed", manifest.parity


def _independent_cosine(model, runner, photo_dir: Path) -> float:
    """The artifact's logits vs the PyTorch fp32 model on photos other than parity's."""
    inputs = load_inputs(model.preprocessing, photo_dir, 24)
    reference = torch_logits(artifact_model(model, "native", False), inputs.images[8:])
    return compare(reference, runner(inputs.images[8:]))["cosine_mean"]


def test_onnx_int8_is_qdq_on_matmul_conv_only(tiny_model, calib, tmp_path, photo_dir) -> None:
    """Q/DQ pairs sit only on the inputs of MatMul/Conv/Gemm (a tensor that also feeds a float
    op, e.g. the residual Add, shares its DQ output: onnxruntime's QDQ layout)."""
    _skip_unless_installed("onnx")
    import onnx
    from restv2_edge.converters.onnx import CONVERTER

    path, manifest = _export(tiny_model, "onnx", calib, tmp_path)
    _check_manifest(manifest, calib)
    graph = onnx.load(str(path / manifest.model_file)).graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    weight_ops = {"MatMul", "Conv", "Gemm"}
    dequantized = [n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"]
    assert dequantized, "no DequantizeLinear in the int8 graph"
    for name in dequantized:
        assert consumers.get(name, set()) & weight_ops, (name, consumers.get(name))
    quantized_ops = {op for name in dequantized for op in consumers[name]}
    assert {"MatMul", "Conv"} <= quantized_ops
    # the depthwise K/V-reduction (strided) and V-upsampling convs keep float weights
    produced_by = {out: node for node in graph.node for out in node.output}
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    resampling = [
        node
        for node in graph.node
        if node.op_type == "Conv"
        and any(a.name == "group" and a.i > 1 for a in node.attribute)
        and any(a.name == "strides" and max(a.ints) > 1 for a in node.attribute)
    ]
    assert resampling and all(node.input[1] in floats for node in resampling)
    assert all(node.input[0] not in produced_by or produced_by[node.input[0]].op_type
               != "DequantizeLinear" for node in resampling)  # fmt: skip
    weights_int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights_int8, "no int8 weights"
    runner = CONVERTER.load(path, manifest)
    assert _independent_cosine(tiny_model, runner, photo_dir) > 0.99


def test_executorch_int8_runs_in_xnnpack(tiny_model, calib, tmp_path, photo_dir) -> None:
    _skip_unless_installed("executorch")
    from restv2_edge.converters.executorch import CONVERTER

    path, manifest = _export(tiny_model, "executorch", calib, tmp_path)
    _check_manifest(manifest, calib)
    delegation = manifest.export["delegation"]
    assert delegation["delegate_segments"] >= 1
    runner = CONVERTER.load(path, manifest)
    assert _independent_cosine(tiny_model, runner, photo_dir) > 0.99


def test_openvino_int8_is_nncf_fake_quantized(tiny_model, calib, tmp_path, photo_dir) -> None:
    """NNCF's statistics compile no longer crashes (snippets off while it runs, docs/int8.md)."""
    _skip_unless_installed("openvino")
    from restv2_edge.converters.openvino import CONVERTER

    path, manifest = _export(tiny_model, "openvino", calib, tmp_path)
    _check_manifest(manifest, calib)
    assert manifest.quantization["fake_quantize_nodes"] > 0
    assert "SmoothQuant off" in manifest.quantization["tool"]
    assert _activation_zero_points_are_zero(path / "model.xml") > 0
    runner = CONVERTER.load(path, manifest)
    assert _independent_cosine(tiny_model, runner, photo_dir) > 0.99


def _activation_zero_points_are_zero(xml: Path) -> int:
    """The performance preset read from the IR itself: every FakeQuantize on an activation
    (not on a constant) is symmetric int8 (low = -high * 128/127) or unsigned from 0, i.e.
    its zero point is 0; returns how many there are."""
    import openvino as ov

    count = 0
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        if op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        low, high = (op.input_value(i).get_node().get_data().ravel() for i in (1, 2))
        symmetric = np.allclose(low, -high * 128 / 127, rtol=1e-4, atol=1e-7)
        assert symmetric or np.all(low == 0), (op.get_friendly_name(), low[:3], high[:3])
        count += 1
    return count


@pytest.mark.parametrize("weights_only", [False, True], ids=["w8a8", "weights-only"])
def test_coreml_int8(tiny_model, calib, tmp_path, weights_only: bool) -> None:
    _skip_unless_installed("coreml")
    extra = {"weights_only": True} if weights_only else {}
    _, manifest = _export(tiny_model, "coreml", calib, tmp_path, **extra)
    assert manifest.precision == "int8"
    assert manifest.quantization["scheme"] == ("weights" if weights_only else "w8a8")
    if not weights_only:
        assert manifest.quantization["calibration"]["hash"] == calib.content_hash
    assert manifest.parity["status"] == "passed", manifest.parity  # Core ML or the interpreter


def test_int8_refusals(tiny_model, calib, tmp_path) -> None:
    _skip_unless_installed("onnx")
    with pytest.raises(ExportError, match="calibration set"):
        _export(tiny_model, "onnx", None, tmp_path)
    with pytest.raises(ExportError, match="--weights-only"):
        _export(tiny_model, "onnx", calib, tmp_path, weights_only=True)
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("target", ["openvino", "executorch"])
def test_max_drop_refuses_raw_input(tiny_model, calib, tmp_path, target) -> None:
    _skip_unless_installed(target)
    request = ExportRequest(
        precision="int8", calibration=calib, raw_input=True, quantization={"max_drop": 0.5}
    )
    with pytest.raises(ExportError, match="normalized-input"):
        export_artifact(tiny_model, target, tmp_path / target, request, parity_limit=8)
    assert not (tmp_path / target).exists()


def test_cli_export_int8_calib_data(tiny_checkpoint, photo_dir, tmp_path) -> None:
    _skip_unless_installed("onnx")
    out = tmp_path / "art"
    result = run_cli(
        "export", "--target", "onnx", "--weights", tiny_checkpoint, "--int8",
        "--calib-data", photo_dir, "--calib-size", "8", "--calib-method", "percentile",
        "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fewer than 32" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    assert manifest["quantization"]["method"] == "percentile"
    assert manifest["quantization"]["calibration"]["size"] == 8
    both = run_cli("export", "--target", "onnx", "--int8", "--precision", "fp16")
    assert_one_line_error(both, "--int8")


def test_sensitivity_ranks_every_quantizable_layer(tiny_checkpoint, calib) -> None:
    _skip_unless_installed("onnx")
    from restv2_edge.calibration.sensitivity import run_sensitivity

    report = run_sensitivity("onnx", None, str(tiny_checkpoint), calib, images=8)
    errors = [row["error"] for row in report["layers"]]
    assert len(errors) >= sum(TINY_CONFIG["depths"]) * 4  # q/kv/proj/fc per block at least
    assert errors == sorted(errors, reverse=True)
    assert all(np.isfinite(errors)) and errors[0] > 0
    assert calib.image_size == TINY_IMAGE_SIZE


def _dequantized_weights(graph) -> int:
    """Per-channel dequantize nodes of a converted PT2E graph: one per int8 weight."""
    return sum("dequantize_per_channel" in str(node.target) for node in graph.graph.nodes)


def _assert_repeat_shares_qparams(graph) -> None:
    """XNNPACK refuses reshapes whose input and output quantization differ (a repeat lowers to
    reshapes): every repeat's output quantization equals its input's."""
    repeats = [n for n in graph.graph.nodes if "repeat" in str(n.target)]
    assert repeats, "the decomposed form repeats the V map"
    for node in repeats:
        source = node.args[0]
        while "dequantize" not in str(source.target):
            source = source.args[0]
        for user in node.users:
            assert tuple(user.args[1:3]) == tuple(source.args[1:3]), (node, user)


def test_pt2e_keep_float_leaves_those_modules_float(tiny_model, calib) -> None:
    _skip_unless_installed("executorch")
    import torch
    from restv2_edge.calibration.pt2e import quantize_pt2e, share_qparams_through_repeat
    from restv2_edge.calibration.pt2e_guard import candidate_layers

    from restv2_edge.export import export_graph

    graph = export_graph(tiny_model, "decomposed", False)
    example = torch.from_numpy(calib.inputs[:1].copy())
    batches = [calib.inputs[i : i + 1] for i in range(8)]
    quantized = quantize_pt2e(graph, example, batches)
    everything = _dequantized_weights(quantized)
    _assert_repeat_shares_qparams(quantized)
    # a histogram observer can give the repeated tensor its own scale: shared again
    repeat = next(n for n in quantized.graph.nodes if "repeat" in str(n.target))
    requant = next(iter(repeat.users))
    requant.args = (requant.args[0], requant.args[1] * 1.01, *requant.args[2:])
    assert share_qparams_through_repeat(quantized) == 1
    _assert_repeat_shares_qparams(quantized)
    assert all(tuple(d.args[1:3]) == tuple(requant.args[1:3]) for d in requant.users)
    keep = ["head", "stage1.0.attn.q"]
    assert set(keep) <= set(candidate_layers(graph))
    fewer = _dequantized_weights(quantize_pt2e(graph, example, batches, keep))
    assert everything >= len(candidate_layers(graph)) and fewer == everything - len(keep)


@pytest.mark.parametrize("target", ["executorch", "coreml", "openvino"])
def test_pt2e_sensitivity_ranks_every_linear_and_conv(tiny_checkpoint, calib, target) -> None:
    _skip_unless_installed(target)
    from restv2_edge.calibration.sensitivity import run_sensitivity

    report = run_sensitivity(target, None, str(tiny_checkpoint), calib, images=8)
    layers = [row["layer"] for row in report["layers"]]
    errors = [row["error"] for row in report["layers"]]
    assert len(layers) == len(set(layers)) >= sum(TINY_CONFIG["depths"]) * 6
    assert {"head", "stage1.0.attn.q", "stage1.0.mlp.fc1"} <= set(layers)
    assert errors == sorted(errors, reverse=True)
    assert all(np.isfinite(errors)) and errors[0] > 0
    assert "fake-quantized" in report["metric"]
    assert ("output" in report["metric"]) == (target != "openvino")


def test_simulated_weight_quantization_is_int8_per_channel() -> None:
    import torch
    from restv2_edge.calibration.pt2e_guard import _fake_activation, _fake_weight

    weight = torch.randn(6, 5) * torch.arange(1, 7).unsqueeze(1)
    fake = _fake_weight(weight)
    steps = fake / (weight.abs().amax(1, keepdim=True) / 127)
    assert torch.allclose(steps, steps.round(), atol=1e-4)  # integer multiples per row
    assert (fake - weight).abs().max() <= weight.abs().amax() / 127 / 2 + 1e-6
    x = torch.linspace(-1.0, 3.0, 101)
    levels = torch.unique(_fake_activation(x, -1.0, 3.0))
    assert len(levels) <= 256 and (levels[1:] - levels[:-1]).min() > 0.9 * 4 / 255
