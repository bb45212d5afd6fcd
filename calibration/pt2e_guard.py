"""Accuracy guard for the PT2E recipes (ExecuTorch, Core ML W8A8), and the simulated ranking
that OpenVINO's sensitivity reuses without output quantization.

Sensitivity is simulated in PyTorch with the XNNPACKQuantizer scheme: one calibration pass
records the input and output range of every Linear/Conv2d; each layer is then fake-quantized
*alone* (input and output int8 per-tensor affine from those ranges, weight int8 symmetric per
output channel) and scored by ``1 - mean cosine`` of the logits against the float model.
The ranges are min/max (the quantizer's activation observer is a histogram), so the ranking is
a proxy; the accuracy that ``--max-drop`` enforces is measured on the real PT2E graph.

``--max-drop P``: quantize everything with PT2E; while the top-1 drop on held-back labelled
images exceeds P points, keep the 1, 2, 4, ... most sensitive modules in float (a node
filter on the quantizer), then the blocks and positional modules whose own adds/matmuls/
multiplies are int8 too (``activation_scopes``). Each trial runs the converted PT2E graph
(quantize/dequantize ops) in PyTorch; the final artifact is built by the target's recipe with
the same modules kept float and checked by the usual parity gate in its own runtime. A recipe
declares the guard as ``functools.partial(export_within_drop, <its recipe function>)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import CALIBRATION_BATCH, quantize_pt2e, regroup

#: where --max-drop trials are measured (recorded in the manifest)
TRIAL_RUNTIME = "converted PT2E graph in PyTorch (quantize/dequantize ops)"


def activation_scopes(model: Any) -> list[str]:
    """Modules whose own ops (residual adds, attention matmuls, the positional gating multiply)
    the quantizer also makes int8: kept float after every Linear/Conv2d, as the last resort."""
    from restv2_edge.model import PA, Block

    return [name for name, module in model.named_modules() if isinstance(module, (Block, PA))]


def candidate_layers(model: Any) -> dict[str, Any]:
    """The Linear/Conv2d modules by name: what ``keep_float`` can leave in float."""
    from torch import nn

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }


def _fake_activation(x: Any, low: float, high: float) -> Any:
    """int8 per-tensor affine over [min(low, 0), max(high, 0)], as XNNPACK's activations."""
    import torch

    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255.0, 1e-12)
    zero_point = int(np.clip(-128 - round(low / scale), -128, 127))
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -128, 127)


def _fake_weight(weight: Any) -> Any:
    """int8 symmetric per output channel (axis 0), range [-127, 127]."""
    import torch

    amax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
    zeros = torch.zeros_like(amax, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, amax / 127.0, zeros, 0, -127, 127)


@contextmanager
def _quantized(module: Any, ranges: tuple[float, ...], outputs: bool = True) -> Iterator[None]:
    """``module`` fake-quantized (input, weight and, with ``outputs``, output) for the
    duration of the block."""
    weight = module.weight.data
    module.weight.data = _fake_weight(weight)
    hooks = [
        module.register_forward_pre_hook(
            lambda _, args: (_fake_activation(args[0], ranges[0], ranges[1]), *args[1:])
        )
    ]
    if outputs:
        hooks.append(
            module.register_forward_hook(
                lambda _, args, out: _fake_activation(out, ranges[2], ranges[3])
            )
        )
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        module.weight.data = weight


def _forward(model: Any, images: np.ndarray) -> np.ndarray:
    import torch

    outs = []
    with torch.no_grad():
        for start in range(0, len(images), CALIBRATION_BATCH):
            chunk = torch.from_numpy(
                np.ascontiguousarray(images[start : start + CALIBRATION_BATCH])
            )
            outs.append(model(chunk).float().numpy())
    return np.concatenate(outs)


def layer_ranges(model: Any, calibration: np.ndarray) -> dict[str, tuple[float, ...]]:
    """(input min, input max, output min, output max) of every candidate layer."""
    ranges: dict[str, list[float]] = {}

    def record(name: str) -> Any:
        def hook(_: Any, args: Any, out: Any) -> None:
            seen = [float(args[0].min()), float(args[0].max()), float(out.min()), float(out.max())]
            old = ranges.get(name, seen)
            ranges[name] = [min(old[0], seen[0]), max(old[1], seen[1]),
                            min(old[2], seen[2]), max(old[3], seen[3])]  # fmt: skip

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in candidate_layers(model).items()
    ]
    try:
        _forward(model, calibration)
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(values) for name, values in ranges.items()}


def rank_modules(
    model: Any, calibration: np.ndarray, images: np.ndarray, outputs: bool = True
) -> list[dict[str, Any]]:
    """Every Linear/Conv2d with the logits error its (simulated) quantization alone causes.

    ``outputs``: quantize each module's output too (XNNPACKQuantizer does; NNCF, which puts
    its FakeQuantize on the inputs of weight ops, does not)."""
    from restv2_edge.calibration.sensitivity import cosine

    model = model.eval()
    ranges = layer_ranges(model, calibration)
    reference = _forward(model, images)
    rows = []
    for name, module in candidate_layers(model).items():
        if name not in ranges:  # not on the forward path
            continue
        with _quantized(module, ranges[name], outputs):
            value = cosine(reference, _forward(model, images))
        rows.append({"layer": name, "cosine": value, "error": 1.0 - value})
    rows.sort(key=lambda row: row["error"], reverse=True)
    return rows


def rank_simulated(
    graph: Any, calib: Any, images: int, outputs: bool = True
) -> tuple[list[dict[str, Any]], str]:
    """``calibrate --sensitivity`` by simulation: ``rank_modules`` on the calibration set, and
    the metric it measured."""
    rows = rank_modules(graph, calib.inputs, calib.inputs[:images], outputs)
    metric = (
        "1 - mean cosine(logits fp32, logits with only this module fake-quantized in "
        "PyTorch: int8 per-channel weights, per-tensor min/max activations "
        f"({'input and output' if outputs else 'input'}))"
    )
    return rows, metric


def export_within_drop(
    recipe: Any, model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """PT2E int8 with the most sensitive modules kept float until the drop is <= max_drop;
    ``recipe`` (the target's recipe function) builds the final artifact."""
    from restv2_edge.calibration.sensitivity import (
        SENSITIVITY_IMAGES,
        final_request,
        held_back_data,
        keep_float_until_within,
        max_drop_record,
        top1_percent,
    )

    limit = float(request.quantization.max_drop)
    batches = regroup(calibration_batches(model, request), request.batch_size)
    images, labels = held_back_data(request)
    model = model.eval()
    fp32_top1 = top1_percent(_forward(model, images), labels)
    trials: list[dict[str, Any]] = []

    def top1(keep: list[str]) -> float:
        progress(f"quantize, {len(keep)} kept float")
        quantized = quantize_pt2e(model, example, batches, keep)
        value = top1_percent(_forward(quantized, images), labels)
        trials.append({"kept_float": len(keep), "top1": value})
        return value

    def rank() -> list[dict[str, Any]]:
        progress("sensitivity")
        calibration = np.concatenate(batches)
        ranked = rank_modules(model, calibration, calibration[:SENSITIVITY_IMAGES])
        scopes = [
            {"layer": name, "cosine": None, "error": None} for name in activation_scopes(model)
        ]
        return ranked + scopes

    keep, accuracy = keep_float_until_within(top1, rank, fp32_top1, limit)
    final = final_request(request, keep)
    result = recipe(model, example, workdir, final, progress)
    record = max_drop_record(request, limit, len(images), fp32_top1, accuracy, trials)
    record["measured_on"] = TRIAL_RUNTIME
    result.quantization = {
        **(result.quantization or quantization_record(final, "minmax")),
        "layers_kept_float": keep,
        "max_drop": record,
    }
    return result
