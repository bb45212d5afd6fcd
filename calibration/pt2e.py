"""PT2E post-training quantization with ExecuTorch's XNNPACKQuantizer (torchao pt2e flow).

Shared by the ExecuTorch recipe (lowered to XNNPACK) and the Core ML W8A8 recipe (converted
by coremltools): symmetric int8, per-channel weights, per-tensor static activations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from restv2_edge.errors import ExportError


def quantize_pt2e(
    model: Any, example: Any, batches: list[np.ndarray], keep_float: list[str] | None = None
) -> Any:
    """torch.export -> prepare_pt2e -> calibrate on ``batches`` -> convert_pt2e (a GraphModule).

    ``keep_float``: module names (``model.named_modules``) left in float. LayerNorms always
    stay float: in the decomposed form their statistics are linears by a 1/C row, and int8
    per-tensor ranges on ``(x - mean)^2`` wreck the variance (T@224, random weights: logits
    cosine vs fp32 0.960 with them quantized; docs/int8.md).
    """
    import torch

    from restv2_edge.model import LayerNorm

    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer import get_module_name_filter
    except ImportError as exc:
        raise ExportError(
            f"INT8 needs ExecuTorch's XNNPACKQuantizer and torchao pt2e: {exc}"
        ) from None

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_module_type(LayerNorm, None)
    if keep_float:  # set_module_name(name, None) is "not supported yet": filter the nodes
        kept = [get_module_name_filter(name) for name in keep_float]
        quantizer.set_filter_function(lambda node: not any(inside(node) for inside in kept))
    try:
        with torch.no_grad():
            prepared = prepare_pt2e(export_any_batch(model, example), quantizer)
            for start in range(0, len(batches), CALIBRATION_BATCH):
                chunk = np.concatenate(batches[start : start + CALIBRATION_BATCH])
                prepared(torch.from_numpy(chunk))
            converted = convert_pt2e(prepared)
        share_qparams_through_repeat(converted)
        return converted
    except Exception as exc:
        raise ExportError(f"PT2E quantization failed: {_first_line(exc)}") from exc


#: ops that move values without changing them (a repeat's input may reach it through these)
_VALUE_PRESERVING = ("view", "unflatten", "flatten", "reshape", "squeeze", "unsqueeze", "clone")


def share_qparams_through_repeat(graph_module: Any) -> int:
    """Give each ``repeat``'s output quantization the parameters of its input's.

    The decomposed form repeats the reduced V map before the upsampling conv. Its input range
    comes from the v linear's output observer, its output range from the conv's input observer:
    the same values, but the histogram observer's parameter search can land on a different
    scale. XNNPACK lowers the repeat to reshapes (``converters.executorch.repeat_as_broadcast``),
    and a reshape with different input and output quantization is refused when the program
    loads ("Failed to create squeeze node ... xnn_status_invalid_parameter": seen on T@224
    with some random inits and 256 calibration photos). A repeat changes no value, so sharing
    the parameters is exact. Returns how many quantize nodes were changed.
    """
    changed = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or "repeat" not in str(node.target):
            continue
        source = node.args[0]
        while source.op == "call_function" and any(
            name in str(source.target) for name in _VALUE_PRESERVING
        ):
            source = source.args[0]
        if "dequantize_per_tensor" not in str(source.target):
            continue
        params = tuple(source.args[1:3])
        for user in list(node.users):
            target = str(user.target)
            if "dequantize" in target or "quantize_per_tensor" not in target:
                continue
            if tuple(user.args[1:3]) == params:
                continue
            user.args = (user.args[0], *params, *user.args[3:])
            for consumer in list(user.users):
                if "dequantize_per_tensor" in str(consumer.target):
                    consumer.args = (consumer.args[0], *params, *consumer.args[3:])
            changed += 1
    graph_module.recompile()
    return changed


#: images per calibration forward, about 3x faster on T@224 than one at a time. Weights use
#: min/max observers (unaffected); activations a histogram observer, which sees the same values
#: in fewer updates (its bin edges, and so the chosen ranges, can differ slightly).
CALIBRATION_BATCH = 16


def export_any_batch(model: Any, example: Any) -> Any:
    """``model`` captured by torch.export with a dynamic batch dimension (calibration only:
    the quantized module is exported again, at the artifact's static shape, to lower it)."""
    import torch

    pair = torch.cat([example, example]) if example.shape[0] == 1 else example
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(model, (pair,), dynamic_shapes=({0: batch},), strict=False).module()


def regroup(batches: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Single-image arrays regrouped to a static batch (remainder dropped)."""
    if batch_size == 1:
        return batches
    groups = [
        np.concatenate(batches[i : i + batch_size])
        for i in range(0, len(batches) - batch_size + 1, batch_size)
    ]
    if not groups:
        raise ExportError(f"calibration set has fewer images than the batch size {batch_size}")
    return groups


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
