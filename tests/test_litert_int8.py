"""LiteRT INT8 (calibration/litert.py): int8 weight ops inside a float32 graph, run by XNNPACK.

The model file is read with LiteRT's own flatbuffer schema and run in ai-edge-litert's
Interpreter; logits are compared with the official-structure reference model (oracle).
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, _missing, oracle_logits, oracle_model, run_cli
from restv2_edge.calibration.dataset import build_calibration_set
from restv2_edge.calibration.litert import QUANTIZED_OPS, LiteRTQuantizer, rank_layers
from restv2_edge.calibration.sensitivity import cosine
from restv2_edge.converters.base import ExportRequest
from restv2_edge.converters.litert import LiteRTRunner, delegation, inspect_model

from restv2_edge.errors import ExportError
from restv2_edge.evaluate import evaluate
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.manifest import Manifest
from restv2_edge.parity import load_inputs

#: ops that must stay float32 (XNNPACK's LiteRT delegate takes none of them in int8)
FLOAT_OPS = {"GELU", "SOFTMAX", "BATCH_MATMUL", "MEAN", "RSQRT", "SQUARED_DIFFERENCE", "ADD"}


@pytest.fixture(scope="module", autouse=True)
def litert_installed() -> None:
    needed = ("ai_edge_litert", "litert_torch", "ai_edge_quantizer")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        _missing(f"{', '.join(missing)} not installed: pip install 'restv2-edge[litert]'")


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path):
    return create_model(weights=tiny_checkpoint)


@pytest.fixture(scope="module")
def calib(tiny_model, photo_dir: Path):
    return build_calibration_set(photo_dir, 32, tiny_model.preprocessing, seed=0)


@pytest.fixture(scope="module")
def tiny_fp32_tflite(tiny_artifact) -> bytes:
    """The float .tflite of the tiny checkpoint: the session's fp32 export (shared with the
    other LiteRT tests), byte-identical to a new conversion (tests/test_target_contract.py)."""
    folder, _ = tiny_artifact("litert", "fp32")
    return (folder / "model.tflite").read_bytes()


@pytest.fixture(scope="module")
def tiny_int8(tiny_model, calib, tiny_fp32_tflite, photo_dir: Path, tmp_path_factory):
    """The tiny checkpoint exported to LiteRT int8 once (parity on 8 photos): the whole
    pipeline, with litert-torch's conversion (the slow step, ~20 s) taken from the fp32 export
    (the fixture test below converts for real)."""
    from restv2_edge.converters import litert

    def converted(model, example, output_names=None) -> bytes:
        assert list(example.shape) == inspect_model(tiny_fp32_tflite)["inputs"][0]["shape"]
        return tiny_fp32_tflite

    request = ExportRequest(precision="int8", calibration=calib)
    out = tmp_path_factory.mktemp("litert-int8") / "tiny"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(litert, "convert_float", converted)
        return export_artifact(tiny_model, "litert", out, request, parity_data=photo_dir,
                               parity_limit=8)  # fmt: skip


def op_input_types(data: bytes) -> list[tuple[str, list[str]]]:
    """(op name, types of its non-constant inputs) for every operator, from LiteRT's schema."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        types = []
        for index in op.InputsAsNumpy():
            if index < 0:
                continue
            tensor = graph.Tensors(int(index))
            buffer = model.Buffers(tensor.Buffer())
            if buffer.DataLength() == 0 and buffer.Offset() == 0:  # an activation
                types.append(type_names[tensor.Type()])
        ops.append((name, types))
    return ops


def test_manifest_records_the_quantization(tiny_int8, calib) -> None:
    folder, manifest = tiny_int8
    assert manifest.precision == "int8" and manifest.parity["status"] == "passed"
    assert manifest.parity["thresholds"] == {"cosine_mean": 0.99, "top1_agreement_clear": 0.9}
    record = manifest.quantization
    assert record["calibration"]["hash"] == calib.content_hash
    assert record["calibration"]["size"] == calib.size
    assert record["quantized_ops"] == list(QUANTIZED_OPS)
    assert record["layers_kept_float"] == []
    [head] = record["head_float"]
    assert head.startswith("FULLY_CONNECTED#")
    assert record["quantized_layers"] == record["quantizable_layers"] - 1 > 20
    saved = json.loads((folder / "manifest.json").read_text())
    assert saved["export"]["weights"] == "int8"
    assert "ai_edge_quantizer" in saved["versions"]


def test_float_boundary_int8_weight_ops(tiny_int8) -> None:
    """float32 input and output; the weight ops int8 (but the head); GELU, softmax, the
    LayerNorm arithmetic and the attention matmuls float32."""
    folder, manifest = tiny_int8
    data = (folder / "model.tflite").read_bytes()
    census = inspect_model(data)
    assert [t["type"] for t in census["inputs"] + census["outputs"]] == ["FLOAT32", "FLOAT32"]
    ops = op_input_types(data)
    weight_ops = [types for name, types in ops if name in QUANTIZED_OPS]
    int8_ops = sum(set(types) == {"INT8"} for types in weight_ops)
    # float by the recipe: the head and each attention's V-upsampling conv (sr ratio > 1)
    stages = zip(TINY_CONFIG["depths"], TINY_CONFIG["sr_ratios"], strict=True)
    upsampling = sum(depth for depth, ratio in stages if ratio > 1)
    float_weight_ops = [
        name for name, types in ops if name in QUANTIZED_OPS and types == ["FLOAT32"]
    ]
    assert sorted(float_weight_ops) == ["DEPTHWISE_CONV_2D"] * upsampling + ["FULLY_CONNECTED"]
    assert int8_ops == manifest.quantization["quantized_layers"]
    assert int8_ops == len(weight_ops) - 1 - upsampling
    # every weight op has a constant weight: the one-head q @ k^T is a BATCH_MATMUL too
    assert all(len(types) == 1 for types in weight_ops)
    for name, types in ops:
        if name in FLOAT_OPS:
            assert set(types) == {"FLOAT32"}, (name, types)
    counts = Counter(name for name, _ in ops)
    assert counts["QUANTIZE"] > 0 and counts["DEQUANTIZE"] > 0
    assert ops[-1][0] == "FULLY_CONNECTED" and ops[-1][1] == ["FLOAT32"]  # the head


def test_xnnpack_takes_the_int8_graph(tiny_int8) -> None:
    """As in fp32: every op in one XNNPACK partition."""
    folder, manifest = tiny_int8
    measured = delegation(folder / "model.tflite")
    assert manifest.export["delegation"] == measured
    assert measured["partitions"] == 1 and measured["not_delegated"] == {}
    assert measured["delegated_ops"] == measured["total_ops"]


def test_int8_logits_follow_the_reference_model(tiny_int8, tiny_checkpoint, photo_dir) -> None:
    """On photos the parity gate did not use: cosine to the official-structure model."""
    folder, manifest = tiny_int8
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 24)
    images = inputs.images[8:]
    reference = oracle_logits(oracle_model(tiny_checkpoint, **TINY_CONFIG), images)
    logits = LiteRTRunner(folder / "model.tflite", manifest.batch_size)(images)
    assert cosine(reference, logits) >= 0.99


def test_keep_float_and_ranking_on_the_float_model(tiny_fp32_tflite, calib, tmp_path) -> None:
    """One calibration of the float .tflite: a named layer kept float stays float, an unknown
    name is refused, and the ranking scores a layer by quantizing it alone."""
    quantizer = LiteRTQuantizer(tiny_fp32_tflite, calib.batches()[:8])
    first = quantizer.layers[0].name
    kept = op_input_types(quantizer.quantize([first]))
    weight_ops = [types for name, types in kept if name in QUANTIZED_OPS]
    assert weight_ops[0] == ["FLOAT32"] and ["INT8"] in weight_ops[1:]
    with pytest.raises(ExportError, match="no quantizable layer named 'CONV_2D#-1'"):
        quantizer.quantize(["CONV_2D#-1"])
    quantizer.layers = quantizer.layers[:3]  # three of them: the ranking's cost is per layer
    images = calib.inputs[:4]
    rows = rank_layers(quantizer, images, 1, tmp_path)
    assert sorted(row["layer"] for row in rows) == sorted(layer.name for layer in quantizer.layers)
    assert all(0 <= row["error"] < 0.1 for row in rows)
    assert [row["error"] for row in rows] == sorted((row["error"] for row in rows), reverse=True)


def test_upsampling_convs_quantizable_on_request(tiny_fp32_tflite, calib) -> None:
    """The V-upsampling convs (depth multiplier r*r) are left out of the recipe's layers and
    come back with ``upsampling=True``; int8 then, they are int8 in the file."""
    batches = calib.batches()[:4]
    recipe = {layer.name for layer in LiteRTQuantizer(tiny_fp32_tflite, batches).layers}
    every = LiteRTQuantizer(tiny_fp32_tflite, batches, upsampling=True)
    extra = [layer.name for layer in every.layers if layer.name not in recipe]
    stages = zip(TINY_CONFIG["depths"], TINY_CONFIG["sr_ratios"], strict=True)
    assert len(extra) == sum(depth for depth, ratio in stages if ratio > 1)
    assert all(name.startswith("DEPTHWISE_CONV_2D#") for name in extra)
    ops = op_input_types(every.quantize(every.head))
    depthwise = [types for name, types in ops if name == "DEPTHWISE_CONV_2D"]
    assert all(types == ["INT8"] for types in depthwise)


@pytest.mark.slow
def test_fixture_int8_accuracy_and_max_drop(
    tmp_path, fixture_checkpoint, cifar_train_tar, cifar_test_tar
) -> None:
    """The CIFAR-10 fixture: int8 top-1 within 0.5 pt of fp32 on 300 test images, and the
    --max-drop guard's record (trials measured in the runtime)."""
    out = tmp_path / "fixture"
    result = run_cli("export", "--target", "litert", "--weights", fixture_checkpoint, "--int8",
                     "--calib-data", cifar_train_tar, "--calib-size", "64", "--max-drop", "0.1",
                     "--parity-data", cifar_test_tar, "--parity-limit", "16",
                     "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = Manifest.read(out)
    assert manifest.parity["status"] == "passed"
    record = manifest.quantization["max_drop"]
    assert record["measured_on"].startswith("quantized .tflite")
    assert record["within_limit"] and record["drop_points"] <= 0.1, record
    assert record["trials"][0]["kept_float"] == 0
    artifact = evaluate(out, cifar_test_tar, limit=300)
    reference = evaluate(fixture_checkpoint, cifar_test_tar, limit=300)
    assert artifact["images"] == reference["images"] == 300
    assert reference["top1"] - artifact["top1"] <= 0.005, (artifact, reference)
