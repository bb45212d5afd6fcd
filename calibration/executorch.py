"""ExecuTorch INT8: PT2E (XNNPACKQuantizer, symmetric, per-channel) lowered to XNNPACK.

The model arrives in the converter's "decomposed" graph form (LayerNorm as linears, 3-D bmm),
so the quantized linears/bmms and the rest land in XNNPACK delegates; the converter's own
lowering (``converters.executorch.lower``) and delegation check are reused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import quantize_pt2e, regroup


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """Quantize with PT2E, lower to XNNPACK, write model.pte."""
    from restv2_edge.converters.base import ExportResult
    from restv2_edge.converters.executorch import (
        BACKEND,
        INPUT_NAME,
        MODEL_FILE,
        OUTPUT_NAME,
        _version,
        check_delegation,
        lower,
    )

    batches = regroup(calibration_batches(model, request), request.batch_size)
    progress("calibrate")
    keep = list(request.quantization.get("keep_float", []))
    quantized = quantize_pt2e(model, example, batches, keep)
    progress("lower")
    program, summary = lower(quantized, example)
    check_delegation(summary)
    (workdir / MODEL_FILE).write_bytes(program.buffer)
    return ExportResult(
        model_file=MODEL_FILE,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        versions={"executorch": _version()},
        info={"backend": BACKEND, "delegation": summary},
        quantization=quantization_record(
            request,
            "minmax",
            tool="torchao pt2e + executorch XNNPACKQuantizer",
            activations="int8 per-tensor static",
            weights="int8 symmetric per-channel",
        ),
    )


# The recipe's declaration (calibration/recipes.py discovers it).
from functools import partial  # noqa: E402

from restv2_edge.calibration.pt2e_guard import export_within_drop, rank_simulated  # noqa: E402
from restv2_edge.calibration.recipes import Int8Recipe  # noqa: E402

RECIPE = Int8Recipe(
    target="executorch",
    export=export_int8,
    max_drop=partial(export_within_drop, export_int8),
    sensitivity=rank_simulated,
)
