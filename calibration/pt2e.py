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
            return convert_pt2e(prepared)
    except Exception as exc:
        raise ExportError(f"PT2E quantization failed: {_first_line(exc)}") from exc


#: images per calibration forward. The observers are min/max (per tensor, per channel for
#: weights), so batching gives the ranges of single-image passes, about 3x faster on T@224.
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
