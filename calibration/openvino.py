"""OpenVINO INT8: NNCF post-training quantization of the OpenVINO model (TRANSFORMER preset).

The fp32 IR comes from converters/openvino.py (same names, same canonical node names); NNCF
``quantize`` with ``model_type=TRANSFORMER`` (SmoothQuant, mixed preset, transformer-aware
ignored patterns) inserts FakeQuantize nodes, and the CPU plugin runs the int8 kernels.
Non-quantized ops run at the inference precision recorded in the manifest.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import regroup

from restv2_edge.errors import ExportError

#: CPU plugin precision for the ops NNCF leaves in float (f32: the parity gate; docs/int8.md)
INFERENCE_PRECISION = "f32"


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """converters/openvino.py fp32 IR -> nncf.quantize -> model.xml/.bin (float32 storage)."""
    import nncf
    import openvino as ov
    from restv2_edge.converters.openvino import CONVERTER, MODEL_FILE, canonical_names

    batches = regroup(calibration_batches(model, request), request.batch_size)
    fp32_request = copy.copy(request)
    fp32_request.precision = "fp32"
    staging = workdir / "fp32"
    staging.mkdir()
    try:
        result = CONVERTER.export(model, example, staging, fp32_request, progress)
        progress("calibrate")
        fp32 = ov.Core().read_model(str(staging / MODEL_FILE))
        keep = list(request.quantization.get("keep_float", []))
        try:
            quantized = nncf.quantize(
                fp32,
                nncf.Dataset(batches),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(batches),
                ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
            )
        except Exception as exc:
            raise ExportError(f"nncf.quantize failed: {exc}") from exc
        canonical_names(quantized)
        ov.save_model(quantized, str(workdir / MODEL_FILE), compress_to_fp16=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fake_quantize = sum(
        1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
    )
    result.versions = {**result.versions, "nncf": nncf.__version__}
    result.info = {
        **result.info,
        "weights": "int8",
        "inference_precision": INFERENCE_PRECISION,
        "nodes": len(quantized.get_ordered_ops()),
    }
    result.quantization = quantization_record(
        request,
        "minmax",
        tool="nncf.quantize (model_type=TRANSFORMER)",
        activations="int8/uint8 per-tensor static (NNCF mixed preset)",
        weights="int8 symmetric per-channel",
        fake_quantize_nodes=fake_quantize,
    )
    return result
