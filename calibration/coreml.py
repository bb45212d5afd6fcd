"""Core ML INT8: W8A8 (a PT2E graph converted with its quantize/dequantize ops) or weight-only.

- W8A8 (default): the shared PT2E recipe (calibration/pt2e.py: ExecuTorch's XNNPACKQuantizer,
  LayerNorms and ``keep_float`` float) on the calibration set, dequantized scalar constants
  folded (``converters.coreml.fold_scalar_dequantize``), then converted; iOS17 or newer.
- ``--weights-only``: the float program, then ``linear_quantize_weights`` (int8 per-channel
  weights, fp16 activations, no calibration); iOS16 or newer; a dynamic (enumerated) batch
  as in float. W8A8 is traced at a static batch and refuses a dynamic one.
- ``--raw-input``: the image classifier of converters/coreml.py. A W8A8 graph was calibrated
  on raw pixels, so it keeps its whole normalization (ImageType scale 1, bias 0).

The program is converted, described and checked by converters/coreml.py's public steps.
Parity goes through the Core ML runner (Core ML on macOS, the MIL reference interpreter
elsewhere).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import quantize_pt2e
from restv2_edge.calibration.pt2e_guard import export_within_drop, rank_simulated
from restv2_edge.calibration.recipes import W8A8, WEIGHTS_ONLY, Int8Recipe

from restv2_edge.errors import ExportError

#: weights with fewer elements stay float (coremltools' default threshold)
WEIGHT_THRESHOLD = 2048


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """Core ML int8: W8A8 unless ``quantization.weights_only``."""
    if request.quantization.weights_only:
        return _export_weights_only(model, example, workdir, request, progress)
    return _export_w8a8(model, example, workdir, request, progress)


def _export_w8a8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    from restv2_edge.converters import coreml

    if request.dynamic_batch:
        raise ExportError(
            f"Core ML int8 {W8A8} is quantized at a static batch; export it without a dynamic "
            f"batch (the {WEIGHTS_ONLY} scheme takes one)"
        )
    batches = calibration_batches(model, request)
    target_name, target = coreml.requested_target(request, "iOS17", f"int8 {W8A8}")
    progress("quantize")
    graph = quantize_pt2e(model, example, batches, list(request.quantization.keep_float))
    coreml.fold_scalar_dequantize(graph)
    mlmodel = coreml.convert(graph, example, request, target, progress)
    result = coreml.save(mlmodel, workdir, request, target_name, progress)
    result.versions = {**result.versions, **_pt2e_versions()}
    result.quantization = quantization_record(
        request,
        "minmax",
        tool="torchao PT2E + ExecuTorch XNNPACKQuantizer (symmetric, per-channel)",
        scheme=W8A8,
        weights="int8 per-channel",
        activations="int8 per-tensor",
        calibration_images=sum(len(batch) for batch in batches),
    )
    return result


def _export_weights_only(
    model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    import coremltools as ct
    from restv2_edge.converters import coreml

    target_name, target = coreml.requested_target(request, "iOS16", f"int8 {WEIGHTS_ONLY}")
    mlmodel = coreml.convert(model, example, request, target, progress)
    config = ct.optimize.coreml.OptimizationConfig(
        global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int8",
            granularity="per_channel",
            weight_threshold=WEIGHT_THRESHOLD,
        )
    )
    try:
        with coreml.quiet():
            mlmodel = ct.optimize.coreml.linear_quantize_weights(mlmodel, config=config)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"coremltools weight quantization failed: {first}") from exc
    result = coreml.save(mlmodel, workdir, request, target_name, progress)
    record = quantization_record(
        request,
        "weight-only",
        tool="coremltools linear_quantize_weights (linear_symmetric, per_channel)",
        scheme=WEIGHTS_ONLY,
        weights="int8 per-channel",
        activations="fp16",
        weight_threshold=WEIGHT_THRESHOLD,
    )
    result.quantization = {**record, "calibration": None}
    return result


def _pt2e_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("executorch", "torchao"):
        with contextlib.suppress(PackageNotFoundError):
            versions[package] = version(package)
    return versions


RECIPE = Int8Recipe(
    target="coreml",
    export=export_int8,
    schemes=(W8A8, WEIGHTS_ONLY),
    max_drop=functools.partial(export_within_drop, export_int8),
    sensitivity=rank_simulated,
)
