"""OpenVINO INT8: NNCF post-training quantization of the OpenVINO model (TRANSFORMER preset).

The fp32 IR comes from converters/openvino.py (same names, same canonical node names); NNCF
``quantize`` with ``model_type=TRANSFORMER`` (SmoothQuant, mixed preset, transformer-aware
ignored patterns) inserts FakeQuantize nodes, and the CPU plugin runs the int8 kernels.
Non-quantized ops run at the inference precision recorded in the manifest.

Statistics collection: NNCF compiles the model with every intermediate tensor added as an
output. With the CPU plugin's snippets on (its default), that compile segfaults when a
ScaledDotProductAttention feeds an Add that is also an output (the one-head stage-1 blocks;
OpenVINO 2026.4, docs/int8.md). NNCF takes no compile options, so ``snippets_disabled``
adds ``SNIPPETS_MODE=DISABLE`` to its compiles for the duration of ``nncf.quantize``; the
artifact itself compiles normally.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import regroup

from restv2_edge.errors import ExportError

#: CPU plugin precision for the ops NNCF leaves in float (f32: the parity gate; docs/int8.md)
INFERENCE_PRECISION = "f32"
#: SmoothQuant off (-1). Measured on the CIFAR-10 fixture, 500 test images, logits cosine vs
#: fp32: 0.954 with the TRANSFORMER default, 0.993 at alpha 0.5, 0.997 at 0.25, 0.997 off.
SMOOTH_QUANT_ALPHA = -1.0


@contextlib.contextmanager
def snippets_disabled() -> Iterator[None]:
    """Every ``openvino.Core.compile_model`` inside the block runs with snippets disabled."""
    from unittest import mock

    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self: Any, model: Any, device_name: Any = None, config: Any = None) -> Any:
        return original(self, model, device_name, {**(config or {}), "SNIPPETS_MODE": "DISABLE"})

    with mock.patch.object(ov.Core, "compile_model", compile_model):
        yield


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """converters/openvino.py fp32 IR -> nncf.quantize -> model.xml/.bin (float32 storage)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )
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
            with snippets_disabled():
                quantized = nncf.quantize(
                    fp32,
                    nncf.Dataset(batches),
                    model_type=nncf.ModelType.TRANSFORMER,
                    subset_size=len(batches),
                    advanced_parameters=AdvancedQuantizationParameters(
                        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
                    ),
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
        tool="nncf.quantize (model_type=TRANSFORMER, SmoothQuant off)",
        activations="int8/uint8 per-tensor static (NNCF mixed preset)",
        weights="int8 symmetric per-channel",
        fake_quantize_nodes=fake_quantize,
    )
    return result
