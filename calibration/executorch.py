"""ExecuTorch INT8: PT2E (XNNPACKQuantizer, symmetric, per-channel) lowered to XNNPACK.

The model arrives in the converter's "decomposed" graph form (LayerNorm as linears, 3-D bmm),
so the quantized linears/bmms and the rest land in XNNPACK delegates; the converter's own
lowering (``converters.executorch.lower``) and delegation check are reused.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import quantize_pt2e, regroup, require_shared_shape_qparams
from restv2_edge.calibration.pt2e_guard import export_within_drop, rank_simulated
from restv2_edge.calibration.recipes import Int8Recipe

from restv2_edge.errors import ExportError


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """Quantize with PT2E, lower to XNNPACK, write model.pte."""
    from restv2_edge.converters.base import ExportResult
    from restv2_edge.converters.executorch import (
        BACKEND,
        INPUT_NAME,
        LOAD_CHECK,
        MODEL_FILE,
        OUTPUT_NAME,
        check_delegation,
        executorch_version,
        load_forward,
        lower,
    )

    batches = regroup(calibration_batches(model, request), request.batch_size)
    progress("calibrate")
    keep = list(request.quantization.keep_float)
    quantized = quantize_pt2e(model, example, batches, keep)
    require_shared_shape_qparams([quantized.graph], "executorch int8: the quantized graph")
    progress("lower")
    program, summary = lower(quantized, example)
    check_delegation(summary)
    require_shared_shape_qparams(
        delegate_graphs(program.exported_program()), "executorch int8: the XNNPACK delegate"
    )
    load_forward(program.buffer, ExportError, LOAD_CHECK)
    (workdir / MODEL_FILE).write_bytes(program.buffer)
    return ExportResult(
        model_file=MODEL_FILE,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        versions={"executorch": executorch_version()},
        info={"backend": BACKEND, "delegation": summary},
        quantization=quantization_record(
            request,
            "minmax",
            tool="torchao pt2e + executorch XNNPACKQuantizer",
            activations="int8 per-tensor static",
            weights="int8 symmetric per-channel",
        ),
    )


def delegate_graphs(program: Any) -> list[Any]:
    """The graph of every XNNPACK delegate of a lowered ExportedProgram: what XNNPACK builds
    its int8 operators from (quantize/dequantize nodes around each op)."""
    module = program.graph_module
    return [
        getattr(module, node.args[0].target).original_module.graph_module.graph
        for node in module.graph.nodes
        if node.op == "call_function" and "executorch_call_delegate" in str(node.target)
    ]


# The recipe's declaration (calibration/recipes.py discovers it).
RECIPE = Int8Recipe(
    target="executorch",
    export=export_int8,
    max_drop=partial(export_within_drop, export_int8),
    sensitivity=rank_simulated,
)
