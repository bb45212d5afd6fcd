"""LiteRT INT8: ai-edge-quantizer static int8 on the float .tflite, float32 at the boundary.

The float model is converted by converters/litert.py (``convert_float``); ai-edge-quantizer
runs it on the calibration set in LiteRT's interpreter (min/max of every tensor) and quantizes
only the ops that carry weights: FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D get int8
inputs and outputs (asymmetric, per tensor) and int8 weights (symmetric, per output channel),
with a QUANTIZE op before and a DEQUANTIZE op after each int8 run. Everything else stays
float32: the graph input and output, GELU, SOFTMAX, the LayerNorm arithmetic, the attention
BATCH_MATMULs, the residual adds. Quantizing those as well (ai-edge-quantizer's
``static_wi8_ai8``) makes the model's input and output int8 and leaves the int8 ADD, SUB,
SQUARED_DIFFERENCE, RSQRT, SOFTMAX, GELU and BATCH_MATMUL outside the XNNPACK delegate
(104 partitions on the CIFAR-10 fixture); with weight ops only, XNNPACK takes the same ops as
in the float model (docs/litert.md).

The classifier head stays float as well: its output is the model's logits, and int8 per-tensor
logits cost the fixture more cosine than any other single layer (docs/litert.md). So do the
V-upsampling convs (``DEPTHWISE_CONV_2D`` with a depth multiplier above 1): XNNPACK runs an
int8 one as a GEMM per channel group, which on AMX cores took more time than every int8 fully
connected layer together (docs/litert.md, "The upsampling convs float").

Layers are named by op type and operator index in the float .tflite (``FULLY_CONNECTED#812``),
with the converter's location name beside them: litert-torch's tensor names drop the stage a
block belongs to, so they cannot name PyTorch modules. ``--max-drop`` and ``calibrate
--sensitivity`` measure in the runtime itself: one float conversion and one calibration, then
each candidate quantized alone (ranking) or each trial's set kept float (guard) and run by
ai-edge-litert's Interpreter with its XNNPACK delegate.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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

from restv2_edge.errors import ExportError, first_line

#: the ops quantized: those with weights (everything else stays float32)
QUANTIZED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
#: ai-edge-quantizer's static int8 op config (its ``static_wi8_ai8`` settings)
OP_CONFIG = {
    "activation_tensor_config": {
        "num_bits": 8,
        "symmetric": False,
        "granularity": "TENSORWISE",
        "dtype": "INT",
    },
    "weight_tensor_config": {
        "num_bits": 8,
        "symmetric": True,
        "granularity": "CHANNELWISE",
        "dtype": "INT",
    },
    "compute_precision": "INTEGER",
    "explicit_dequantize": False,
}
ALGORITHM = "min_max_uniform_quantize"
TOOL = "ai-edge-quantizer (static, min_max_uniform_quantize)"
#: where --max-drop trials are measured (recorded in the manifest)
TRIAL_RUNTIME = "quantized .tflite in ai-edge-litert's Interpreter (XNNPACK)"


@dataclass
class Layer:
    """A quantizable op of the float .tflite."""

    name: str  # "<OP_TYPE>#<operator index>"
    scope: str  # ai-edge-quantizer's op scope (its output tensor names): unique per op
    location: str  # the scope without the wrapper modules' prefix, for people
    is_head: bool  # its output is the graph's output


class LiteRTQuantizer:
    """One float .tflite, calibrated once, quantized with any set of layers kept float."""

    def __init__(self, data: bytes, batches: list[np.ndarray], upsampling: bool = False) -> None:
        """``upsampling`` makes the V-upsampling convs quantizable too (the recipe keeps them
        float; scripts/runtime_ideas.py ``litert-int8-float`` times both)."""
        self.data = data
        self.layers = quantizable_layers(data, upsampling)
        self.by_name = {layer.name: layer for layer in self.layers}
        self.ranges = _calibrate(data, [layer.scope for layer in self.layers], batches)

    @property
    def head(self) -> list[str]:
        """The layers whose output is the model's output (kept float by default)."""
        return [layer.name for layer in self.layers if layer.is_head]

    def quantize(self, keep_float: list[str], only: list[str] | None = None) -> bytes:
        """The int8 .tflite: every quantizable op (or those in ``only``) except ``keep_float``."""
        unknown = sorted(set(keep_float) - set(self.by_name))
        if unknown:
            raise ExportError(f"litert int8: no quantizable layer named {unknown[0]!r}")
        chosen = self.layers if only is None else [self.by_name[name] for name in only]
        kept = set(keep_float)
        scopes = [layer.scope for layer in chosen if layer.name not in kept]
        return _quantize(self.data, scopes, self.ranges)


def is_upsampling_conv(op: Any) -> bool:
    """A V-upsampling conv: a depthwise conv with r*r outputs per channel (depth multiplier
    above 1); every other depthwise conv of the model has multiplier 1."""
    return getattr(op.builtinOptions, "depthMultiplier", 1) > 1


def quantizable_layers(data: bytes, upsampling: bool = False) -> list[Layer]:
    """The ops of ``QUANTIZED_OPS`` in the float model, in graph order; the V-upsampling
    convs only with ``upsampling``."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = tfl.read_model(bytearray(data))
    graph = model.subgraphs[0]
    outputs = {int(index) for index in graph.outputs}
    layers = []
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        name = getattr(tfl.TFL_OP_CODE_TO_NAME.get(code), "value", None)
        if name not in QUANTIZED_OPS:
            continue
        if name == "DEPTHWISE_CONV_2D" and is_upsampling_conv(op) and not upsampling:
            continue
        scope = tfl.get_op_scope(op, graph.tensors)
        layers.append(
            Layer(
                name=f"{name}#{index}",
                scope=scope,
                location=_location(scope),
                is_head=bool(outputs & {int(t) for t in op.outputs}),
            )
        )
    if len({layer.scope for layer in layers}) != len(layers):  # tensor names are unique
        raise ExportError("litert int8: two quantizable ops share their output tensor names")
    return layers


def _location(scope: str) -> str:
    """``a.b.Class_attr/c.d.Other_x;3;`` -> ``Class_attr/Other_x;3``, past the model's root."""
    first = scope.split(";")[0]
    parts = [part.rsplit(".", 1)[-1] for part in first.split("/")]
    tail = scope[len(first) :].split(";")[1:2]
    return "/".join(parts[2:] or parts) + (f";{tail[0]}" if tail and tail[0] else "")


def _recipe(scopes: list[str]) -> list[dict[str, Any]]:
    """An ai-edge-quantizer recipe that quantizes exactly the ops with these scopes."""
    pattern = "^(" + "|".join(re.escape(scope) for scope in scopes) + ")$" if scopes else "^$"
    return [
        {"regex": pattern, "operation": op, "algorithm_key": ALGORITHM, "op_config": OP_CONFIG}
        for op in QUANTIZED_OPS
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ai-edge-quantizer draws progress bars on stderr and warns about its debug interpreter."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _calibrate(data: bytes, scopes: list[str], batches: list[np.ndarray]) -> dict[str, Any]:
    """Min/max of the tensors the ops ``scopes`` read and write, over ``batches``, run in
    LiteRT's interpreter (the ranges of every later quantization: a subset of these ops)."""
    from ai_edge_quantizer import quantizer
    from restv2_edge.converters.litert import INPUT_NAME, SIGNATURE

    try:
        with _quiet():
            edit = quantizer.Quantizer(bytearray(data))
            edit.load_quantization_recipe(_recipe(scopes))
            samples = [{INPUT_NAME: batch} for batch in batches]
            return edit.calibrate({SIGNATURE: samples}, num_threads=_cores())
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer calibration failed: {first_line(exc)}") from exc


def _cores() -> int:
    """The CPUs this process may use (ai-edge-quantizer's default is 16 calibration threads)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _quantize(data: bytes, scopes: list[str], ranges: dict[str, Any]) -> bytes:
    from ai_edge_quantizer import quantizer

    if not scopes:  # every layer kept float: the float model as it is
        return data
    try:
        with _quiet():
            edit = quantizer.Quantizer(bytearray(data))
            edit.load_quantization_recipe(_recipe(scopes))
            result = edit.quantize(ranges, enable_progress_bar=False, enable_progress_report=False)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer int8 failed: {first_line(exc)}") from exc
    return bytes(result.quantized_model)


def _logits(data: bytes, images: np.ndarray, batch_size: int, work: Path) -> np.ndarray:
    """``images`` through the model in ai-edge-litert's Interpreter (the artifact's runner)."""
    from restv2_edge.converters.litert import LiteRTRunner

    path = work / "trial.tflite"
    path.write_bytes(data)
    return LiteRTRunner(path, batch_size)(images)


def _prepare(model: Any, example: Any, request: Any, progress: Any) -> LiteRTQuantizer:
    from restv2_edge.converters import litert

    batches = regroup(calibration_batches(model, request), request.batch_size)
    progress("convert")
    data = litert.convert_float(model, example, request.output_names)
    progress("calibrate")
    return LiteRTQuantizer(data, batches)


def default_keep_float(quantizer: LiteRTQuantizer, request: Any) -> list[str]:
    """The request's layers kept float, and the head (always)."""
    return list(dict.fromkeys([*quantizer.head, *request.quantization.keep_float]))


def _finish(
    data: bytes, workdir: Path, example: Any, request: Any, quantizer: LiteRTQuantizer
) -> Any:
    """Write and describe the int8 model (converters/litert.py) and record the quantization."""
    from restv2_edge.converters.litert import write_model

    result = write_model(data, workdir, list(example.shape), "int8", request.output_names)
    keep = default_keep_float(quantizer, request)
    result.quantization = quantization_record(
        request,
        "minmax",
        tool=TOOL,
        activations="int8 asymmetric per-tensor static (inputs and outputs of the int8 ops)",
        weights="int8 symmetric per-channel",
        quantized_ops=list(QUANTIZED_OPS),
        float_ops="everything else: QUANTIZE/DEQUANTIZE around each int8 run, float32 model "
        "input and output, GELU, SOFTMAX, LayerNorm, BATCH_MATMUL, ADD, MUL, and the "
        "V-upsampling DEPTHWISE_CONV_2Ds (depth multiplier > 1)",
        head_float=quantizer.head,
        locations={name: quantizer.by_name[name].location for name in keep},
        quantized_layers=len(quantizer.layers) - len(keep),
        quantizable_layers=len(quantizer.layers),
    )
    return result


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """Convert, calibrate, quantize the weight ops (head and ``keep_float`` float), write."""
    quantizer = _prepare(model, example, request, progress)
    progress("quantize")
    data = quantizer.quantize(default_keep_float(quantizer, request))
    progress("check")
    return _finish(data, workdir, example, request, quantizer)


def rank_layers(
    quantizer: LiteRTQuantizer, images: np.ndarray, batch_size: int, work: Path
) -> list[dict[str, Any]]:
    """Every quantizable layer with the logits error its quantization alone causes, in the
    runtime (1 - mean cosine against the float .tflite)."""
    reference = _logits(quantizer.data, images, batch_size, work)
    rows = []
    for layer in quantizer.layers:
        logits = _logits(quantizer.quantize([], only=[layer.name]), images, batch_size, work)
        value = cosine(reference, logits)
        rows.append(
            {"layer": layer.name, "location": layer.location, "cosine": value, "error": 1 - value}
        )
    rows.sort(key=lambda row: row["error"], reverse=True)
    return rows


def rank_sensitivity(graph: Any, calib: Any, images: int) -> tuple[list[dict[str, Any]], str]:
    """``calibrate --sensitivity``: each weight op quantized alone, run in LiteRT."""
    import torch
    from restv2_edge.converters import litert

    example = torch.from_numpy(calib.inputs[:1].copy())
    quantizer = LiteRTQuantizer(litert.convert_float(graph, example), calib.batches())
    with tempfile.TemporaryDirectory(prefix="restv2-sensitivity-") as tmp:
        rows = rank_layers(quantizer, calib.inputs[:images], 1, Path(tmp))
    metric = (
        "1 - mean cosine(logits of the float .tflite, logits with only this op int8), "
        "ai-edge-litert Interpreter"
    )
    return rows, metric


def export_int8_within_drop(
    model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """INT8 with the most sensitive layers kept float until the top-1 drop is <= max_drop,
    every trial measured on the quantized .tflite in the runtime."""
    from restv2_edge.parity import torch_logits

    limit = float(request.quantization.max_drop)
    batch = request.batch_size
    images, labels = held_back_data(request)
    images = images[: len(images) - len(images) % batch]
    labels = labels[: len(images)]
    fp32_top1 = top1_percent(torch_logits(model, images), labels)
    quantizer = _prepare(model, example, request, progress)
    calibration = np.concatenate(calibration_batches(model, request))[:SENSITIVITY_IMAGES]
    base = default_keep_float(quantizer, request)
    trials: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="restv2-maxdrop-") as tmp:
        work = Path(tmp)

        def top1(keep: list[str]) -> float:
            progress(f"quantize, {len(keep)} kept float")
            logits = _logits(quantizer.quantize([*base, *keep]), images, batch, work)
            value = top1_percent(logits, labels)
            trials.append({"kept_float": len(keep), "top1": value})
            return value

        def rank() -> list[dict[str, Any]]:
            progress("sensitivity")
            rows = rank_layers(quantizer, calibration[: len(calibration) // batch * batch],
                               batch, work)  # fmt: skip
            return [row for row in rows if row["layer"] not in base]

        keep, accuracy = keep_float_until_within(top1, rank, fp32_top1, limit)
    final = final_request(request, [*request.quantization.keep_float, *keep])
    progress("check")
    result = _finish(quantizer.quantize([*base, *keep]), workdir, example, final, quantizer)
    record = max_drop_record(request, limit, len(images), fp32_top1, accuracy, trials)
    record["measured_on"] = TRIAL_RUNTIME
    result.quantization["max_drop"] = record
    return result


# The recipe's declaration (calibration/recipes.py discovers it).
RECIPE = Int8Recipe(
    target="litert",
    export=export_int8,
    max_drop=export_int8_within_drop,
    sensitivity=rank_sensitivity,
)
