"""INT8 post-training quantization recipes, one per target (filled in by the INT8 work).

``export_int8(target, model, example, workdir, request, progress)`` writes an artifact that
the target's own runner (converters/<target>.py ``load``) runs, and returns an ExportResult
whose ``quantization`` records the calibration set, method and layers kept in float.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from restv2_edge.errors import ExportError

# target name -> "module:function" implementing the recipe
INT8_RECIPES: dict[str, str] = {
    "onnx": "restv2_edge.calibration.onnx:export_int8",
    "executorch": "restv2_edge.calibration.executorch:export_int8",
    "openvino": "restv2_edge.calibration.openvino:export_int8",
    "coreml": "restv2_edge.calibration.coreml:export_int8",
}

#: targets whose recipe can quantize weights only (float activations, no calibration)
WEIGHT_ONLY_TARGETS = ("coreml",)


def has_int8_recipe(target: str) -> bool:
    return target in INT8_RECIPES


def export_int8(
    target: str, model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    if target not in INT8_RECIPES:
        raise ExportError(f"no INT8 recipe for {target}")
    quantization = getattr(request, "quantization", None) or {}
    if quantization.get("weights_only") and target not in WEIGHT_ONLY_TARGETS:
        raise ExportError(
            f"--weights-only is offered for {', '.join(WEIGHT_ONLY_TARGETS)}, not {target}"
        )
    if quantization.get("max_drop") is not None:
        from restv2_edge.calibration.sensitivity import export_within_drop

        return export_within_drop(target, model, example, workdir, request, progress)
    return recipe_for(target)(model, example, workdir, request, progress)


def recipe_for(target: str) -> Any:
    """The recipe function registered for ``target``."""
    import importlib

    module_name, function = INT8_RECIPES[target].split(":")
    return getattr(importlib.import_module(module_name), function)
