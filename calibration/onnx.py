"""ONNX INT8: onnxruntime static quantization (QDQ), per-channel int8 weights.

Only MatMul, Conv and Gemm are quantized (``op_types_to_quantize``): Q/DQ pairs around every
Add/Mul/LayerNorm/Softmax cost more on CPU than int8 saves (docs/int8.md). The depthwise
convolutions that resample (EMSA's strided K/V reduction, the V-upsampling conv) stay float
(``float_convolutions``). The fp32 graph is exported by converters/onnx.py and pre-processed
(``quant_pre_process``: symbolic shapes + ORT graph optimizations) before quantizing.
Activations are uint8 (asymmetric), weights int8 (symmetric, per output channel): the U8S8
kernels of onnxruntime on x86 (VNNI).

Sensitivity: calibrate once (onnxruntime's calibration cache), then quantize each MatMul/
Conv/Gemm *alone* and measure how far its logits move from the fp32 graph's (1 - mean cosine
over calibration images). ``--max-drop``: the shared keep-float loop
(calibration/sensitivity.py) over that ranking, each trial a quantized graph in onnxruntime.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import regroup
from restv2_edge.calibration.recipes import Int8Recipe
from restv2_edge.calibration.sensitivity import (
    SENSITIVITY_IMAGES,
    cosine,
    final_request,
    held_back_data,
    keep_float_until_within,
    max_drop_record,
    top1_percent,
)

from restv2_edge.errors import ExportError

METHODS = ("minmax", "entropy", "percentile")
#: measured on the CIFAR-10 fixture (docs/int8.md): percentile keeps top-1, minmax drops ~2 pt
DEFAULT_METHOD = "percentile"
OP_TYPES = ["MatMul", "Conv", "Gemm"]


def quantize_onnx_file(
    fp32_path: Path,
    output: Path,
    batches: list[np.ndarray],
    input_name: str,
    method: str = DEFAULT_METHOD,
    exclude: list[str] | None = None,
    *,
    only: list[str] | None = None,
    cache: Path | None = None,
    preprocess: bool = True,
) -> None:
    """fp32 ONNX file -> pre-processed, statically quantized QDQ file at ``output``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise ExportError(f"unknown calibration method {method!r}; choose {', '.join(METHODS)}")

    class Reader(CalibrationDataReader):
        """The batches, served in the ranges onnxruntime's strided calibration asks for."""

        def __init__(self) -> None:
            self.set_range(0, len(batches))

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.items = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.items, None)
            return None if batch is None else {input_name: batch}

    calibrate = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    with tempfile.TemporaryDirectory(prefix="restv2-ort-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            if not preprocess:
                raise ValueError("already pre-processed")
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimization: fall back to the file
            prepared = fp32_path
        exclude = [*(exclude or []), *float_convolutions(prepared)]
        try:
            quantize_static(
                str(prepared),
                str(output),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=OP_TYPES,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=list(only) if only else None,
                nodes_to_exclude=exclude,
                calibrate_method=calibrate,
                extra_options={
                    "ActivationSymmetric": False,
                    "WeightSymmetric": True,
                    "CalibStridedMinMax": calibration_stride(len(batches)),
                    "CalibTensorRangeSymmetric": False,
                    "OpTypesToExcludeOutputQuantization": list(OP_TYPES),
                },
                calibration_cache_path=str(cache) if cache is not None else None,
            )
        except Exception as exc:
            raise ExportError(f"onnxruntime quantize_static failed: {exc}") from exc


def calibration_stride(count: int, largest: int = 8) -> int:
    """Batches per calibration pass: onnxruntime keeps every intermediate output of a pass in
    memory (histogram methods too), about 0.2 GB per T@224 image, so passes stay small.

    ``CalibStridedMinMax`` (any method, despite the name) needs a stride dividing ``count``;
    the histograms and ranges of the passes are merged.
    """
    return max(size for size in range(1, min(largest, count) + 1) if count % size == 0)


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """The converters/onnx.py fp32 export, then ORT static quantization into model.onnx."""
    import onnx
    from restv2_edge.converters.onnx import CONVERTER, INPUT_NAME, MODEL_FILE

    method = request.quantization.method or DEFAULT_METHOD
    batches = regroup(calibration_batches(model, request), request.batch_size)
    fp32_request = copy.copy(request)
    fp32_request.precision = "fp32"
    result = CONVERTER.export(model, example, workdir, fp32_request, progress)
    path = workdir / MODEL_FILE
    fp32_path = workdir / "model.fp32.onnx"
    path.rename(fp32_path)
    progress("calibrate")
    try:
        quantize_onnx_file(
            fp32_path, path, batches, INPUT_NAME, method, list(request.quantization.keep_float)
        )
    finally:
        fp32_path.unlink(missing_ok=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    result.info = {**result.info, "nodes": len(proto.graph.node)}
    result.quantization = quantization_record(
        request,
        method,
        tool="onnxruntime.quantization.quantize_static",
        format="QDQ",
        activations="uint8 asymmetric per-tensor",
        weights="int8 symmetric per-channel",
        op_types=OP_TYPES,
        quantize_linear_nodes=ops.get("QuantizeLinear", 0),
    )
    return result


def quantizable_nodes(path: Path) -> list[str]:
    """Names of the MatMul/Conv/Gemm nodes with a constant weight that the recipe quantizes
    (sensitivity candidates)."""
    import onnx

    proto = onnx.load(str(path))
    constants = {init.name for init in proto.graph.initializer}
    constants |= {
        out for node in proto.graph.node if node.op_type == "Constant" for out in node.output
    }
    kept = set(float_convolutions(path))
    return [
        node.name
        for node in proto.graph.node
        if node.op_type in OP_TYPES
        and node.name not in kept
        and any(name in constants for name in node.input[1:2])
    ]


def float_convolutions(path: Path) -> list[str]:
    """Depthwise Conv nodes that resample (stride > 1) or multiply channels: left in float.

    With their outputs in float (``OpTypesToExcludeOutputQuantization``) onnxruntime runs a
    quantized one as DequantizeLinear -> float Conv on non-constant weights, outside its NCHWc
    kernels: 3-4x the float conv's time for these K/V-reduction convs (T@224 profile,
    docs/int8.md). The plain 3x3 positional convs stay quantized: their int8 input is what
    makes the patch-embedding convs before them QLinearConv.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    weights = {init.name: list(init.dims) for init in proto.graph.initializer}
    names = []
    for node in proto.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        out_channels = weights.get(node.input[1], [0])[0]
        resamples = any(int(step) > 1 for step in attrs.get("strides", [1]))
        if group > 1 and (resamples or out_channels > group):
            names.append(node.name)
    return names


class OnnxQuantizer:
    """One fp32 ONNX graph, calibrated once, quantized with any set of layers kept float."""

    def __init__(self, fp32_path: Path, batches: list[np.ndarray], method: str, work: Path):
        from onnxruntime.quantization.shape_inference import quant_pre_process
        from restv2_edge.converters.onnx import INPUT_NAME

        self.work = work
        self.prepared = work / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(self.prepared), skip_symbolic_shape=True)
        except Exception:  # an optimization only
            self.prepared = fp32_path
        self.cache = work / "calibration-cache.json"
        self.batches = batches
        self.method = method
        self.input_name = INPUT_NAME
        self.nodes = quantizable_nodes(self.prepared)
        self.fp32_path = fp32_path
        self._count = 0

    def quantize(self, exclude: list[str] | None = None, only: list[str] | None = None) -> Path:
        """A quantized copy (ranges from the shared calibration cache)."""
        self._count += 1
        out = self.work / f"q{self._count}.onnx"
        quantize_onnx_file(
            self.prepared,
            out,
            self.batches,
            self.input_name,
            self.method,
            exclude,
            only=only,
            cache=self.cache,
            preprocess=False,
        )
        return out

    def session(self, path: Path) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def logits(self, session: Any, images: np.ndarray) -> np.ndarray:
        """Logits of ``images`` in chunks of the graph's batch (a static batch drops the last
        partial chunk; a symbolic one takes 64 at a time, the last chunk shorter)."""
        first = session.get_inputs()[0].shape[0]
        batch = first if isinstance(first, int) else 64
        stop = len(images) - batch + 1 if isinstance(first, int) else len(images)
        outs = []
        for start in range(0, stop, batch):
            chunk = np.ascontiguousarray(images[start : start + batch], np.float32)
            outs.append(session.run(None, {self.input_name: chunk})[0])
        return np.concatenate(outs)


def rank_layers(quantizer: OnnxQuantizer, images: np.ndarray) -> list[dict[str, Any]]:
    """Every quantizable layer with the logits error its quantization alone causes."""
    reference = quantizer.logits(quantizer.session(quantizer.fp32_path), images)
    if not quantizer.cache.is_file():  # calibrate every tensor once, before single layers
        quantizer.quantize().unlink(missing_ok=True)
    rows = []
    for node in quantizer.nodes:
        path = quantizer.quantize(only=[node])
        value = cosine(reference, quantizer.logits(quantizer.session(path), images))
        path.unlink(missing_ok=True)
        rows.append({"layer": node, "cosine": value, "error": 1.0 - value})
    rows.sort(key=lambda row: row["error"], reverse=True)
    return rows


def _fp32_onnx(graph: Any, example: Any, work: Path, dynamic_batch: bool = False) -> Path:
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.converters.onnx import CONVERTER, MODEL_FILE

    folder = work / "fp32"
    folder.mkdir()
    request = ExportRequest(dynamic_batch=dynamic_batch)
    CONVERTER.export(graph, example, folder, request, lambda step: None)
    return folder / MODEL_FILE


def rank_sensitivity(graph: Any, calib: Any, images: int) -> tuple[list[dict[str, Any]], str]:
    """``calibrate --sensitivity``: onnxruntime's quantizer, one layer at a time (min/max)."""
    import torch

    example = torch.from_numpy(calib.inputs[:1].copy())
    with tempfile.TemporaryDirectory(prefix="restv2-sensitivity-") as tmp:
        work = Path(tmp)
        fp32 = _fp32_onnx(graph, example, work)
        rows = rank_layers(OnnxQuantizer(fp32, calib.batches(), "minmax", work),
                           calib.inputs[:images])  # fmt: skip
    return rows, "1 - mean cosine(logits fp32, logits with only this layer int8)"


def export_int8_within_drop(
    model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """INT8 with the most sensitive layers kept float until the top-1 drop is <= max_drop."""
    from restv2_edge.parity import torch_logits

    limit = float(request.quantization.max_drop)
    method = request.quantization.method or DEFAULT_METHOD
    batches = regroup(calibration_batches(model, request), request.batch_size)
    images, labels = held_back_data(request)
    images = images[: len(images) - len(images) % request.batch_size]
    labels = labels[: len(images)]
    fp32_top1 = top1_percent(torch_logits(model, images), labels)
    progress("sensitivity")
    with tempfile.TemporaryDirectory(prefix="restv2-maxdrop-") as tmp:
        work = Path(tmp)
        fp32 = _fp32_onnx(model, example, work, request.dynamic_batch)
        quantizer = OnnxQuantizer(fp32, batches, method, work)
        trials = []

        def top1(exclude: list[str]) -> float:
            path = quantizer.quantize(exclude=exclude)
            logits = quantizer.logits(quantizer.session(path), images)
            path.unlink(missing_ok=True)
            value = top1_percent(logits, labels)
            trials.append({"kept_float": len(exclude), "top1": value})
            return value

        keep, accuracy = keep_float_until_within(
            top1,
            lambda: rank_layers(quantizer, np.concatenate(batches)[:SENSITIVITY_IMAGES]),
            fp32_top1,
            limit,
        )
    final = final_request(request, keep)
    result = export_int8(model, example, workdir, final, progress)
    result.quantization = {
        **quantization_record(final, method),
        **{k: v for k, v in result.quantization.items() if k != "layers_kept_float"},
        "max_drop": max_drop_record(request, limit, len(images), fp32_top1, accuracy, trials),
    }
    return result


RECIPE = Int8Recipe(
    target="onnx",
    export=export_int8,
    max_drop=export_int8_within_drop,
    sensitivity=rank_sensitivity,
    options=("calib_method",),
)
