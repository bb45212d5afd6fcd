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
INT8_RECIPES: dict[str, str] = {}


def has_int8_recipe(target: str) -> bool:
    return target in INT8_RECIPES


def export_int8(
    target: str, model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    if target not in INT8_RECIPES:
        raise ExportError(f"no INT8 recipe for {target}")
    import importlib

    module_name, function = INT8_RECIPES[target].split(":")
    recipe = getattr(importlib.import_module(module_name), function)
    return recipe(model, example, workdir, request, progress)
