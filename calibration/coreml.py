"""Core ML INT8: W8A8 (PT2E graph -> ct.convert with quantize/dequantize ops) or weight-only.

The conversion itself lives in converters/coreml.py (``scheme`` "w8a8" or "weights"); this
recipe picks the scheme (``--weights-only`` -> weights), hands it the checked calibration
inputs and records the calibration set in the manifest. Parity goes through the Core ML
runner (Core ML on macOS, the MIL reference interpreter elsewhere).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.calibration.dataset import calibration_batches, quantization_record


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """Core ML int8 through the converter; W8A8 unless ``quantization["weights_only"]``."""
    from restv2_edge.converters.coreml import CONVERTER

    weights_only = bool(request.quantization.get("weights_only"))
    scheme = "weights" if weights_only else "w8a8"
    inner = copy.copy(request)
    inner.quantization = {**request.quantization, "scheme": scheme}
    if scheme == "w8a8":
        inner.calibration = np.concatenate(calibration_batches(model, request))
    result = CONVERTER.export(model, example, workdir, inner, progress)
    record = quantization_record(
        request if not weights_only else _without_calibration(request),
        "minmax" if scheme == "w8a8" else "weight-only",
    )
    tool = dict(result.quantization or {})
    record["tool"] = tool.pop("method", "")
    record.update(tool)
    result.quantization = record
    return result


def _without_calibration(request: Any) -> Any:
    plain = copy.copy(request)
    plain.calibration = None
    return plain
