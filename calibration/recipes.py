"""INT8 post-training quantization: one ``Int8Recipe`` per target, found by discovery.

Each module ``calibration/<target>.py`` that declares ``RECIPE`` gives its target int8:
the recipe function, the schemes it offers, its accuracy guard (``--max-drop``) and its
sensitivity ranker (``calibrate --sensitivity``). Nothing else lists which targets have int8.

``export_int8(target, model, example, workdir, request, progress)`` writes an artifact that
the target's own runner (converters/<target>.py ``load``) runs, and returns an ExportResult
whose ``quantization`` records the calibration set, method and layers kept in float.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from restv2_edge.converters.base import (
    INT8,
    ExportRequest,
    ExportResult,
    Progress,
    get_descriptor,
    target_names,
)

from restv2_edge.errors import ExportError

#: int8 weights and activations, from a calibration set
W8A8 = "w8a8"
#: int8 weights only, float activations, no calibration (``--weights-only``)
WEIGHTS_ONLY = "weights"

#: (model, example, workdir, request, progress) -> ExportResult: a recipe or a guard
Recipe = Callable[[Any, Any, Path, ExportRequest, Progress], ExportResult]
#: (graph in the target's form, calibration set, images) -> (ranked rows, metric description)
Ranker = Callable[[Any, Any, int], tuple[list[dict[str, Any]], str]]


@dataclass(frozen=True)
class Int8Recipe:
    """A target's INT8 capabilities, declared once in calibration/<target>.py."""

    target: str
    export: Recipe
    schemes: tuple[str, ...] = (W8A8,)
    #: the ``--max-drop`` guard (None: not offered)
    max_drop: Recipe | None = None
    #: the ``calibrate --sensitivity`` ranking (None: not offered)
    sensitivity: Ranker | None = None
    #: recipe-specific export options it reads (CLI option names, e.g. ``calib_method``):
    #: the CLI refuses one of them for a target whose recipe does not list it
    options: tuple[str, ...] = ()


@lru_cache(maxsize=1)
def _discovered() -> dict[str, Int8Recipe]:
    """Every ``RECIPE`` of the calibration package's modules, in the targets' order."""
    import restv2_edge.calibration as package

    found: dict[str, Int8Recipe] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if recipe is None:
            continue
        if not isinstance(recipe, Int8Recipe):
            raise ExportError(f"{module.__name__}.RECIPE is not an Int8Recipe")
        get_descriptor(recipe.target)  # a recipe for an unknown target is a bug
        if recipe.target in found:
            raise ExportError(f"two calibration modules declare int8 for {recipe.target!r}")
        found[recipe.target] = recipe
    return {name: found[name] for name in target_names() if name in found}


def int8_targets() -> list[str]:
    """The targets that have an INT8 recipe, in the registry's order."""
    return list(_discovered())


def has_int8_recipe(target: str) -> bool:
    return target in _discovered()


def get_recipe(target: str) -> Int8Recipe:
    """The recipe of ``target``; ExportError when it has none."""
    recipes = _discovered()
    if target not in recipes:
        raise ExportError(f"no INT8 recipe for {target}")
    return recipes[target]


def recipe_for(target: str) -> Recipe:
    """The recipe function of ``target``."""
    return get_recipe(target).export


def supported_precisions(target: str) -> tuple[str, ...]:
    """The converter's float precisions, plus int8 where calibration/ has a recipe."""
    floats = get_descriptor(target).precisions
    return floats + ((INT8,) if has_int8_recipe(target) else ())


def targets_where(test: Callable[[Int8Recipe], bool]) -> list[str]:
    """The targets whose recipe passes ``test`` (e.g. offers a guard), for messages and docs."""
    return [name for name, recipe in _discovered().items() if test(recipe)]


def export_int8(
    target: str, model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """The target's INT8 artifact: its recipe, or its accuracy guard with ``max_drop``."""
    recipe = get_recipe(target)
    settings = request.quantization
    if settings.weights_only and WEIGHTS_ONLY not in recipe.schemes:
        weight_only = targets_where(lambda other: WEIGHTS_ONLY in other.schemes)
        raise ExportError(f"--weights-only is offered for {', '.join(weight_only)}, not {target}")
    if settings.max_drop is None:
        return recipe.export(model, example, workdir, request, progress)
    if recipe.max_drop is None:
        guarded = targets_where(lambda other: other.max_drop is not None)
        raise ExportError(f"--max-drop is implemented for {', '.join(guarded)}, not {target}")
    if request.raw_input:
        raise ExportError("--max-drop needs a normalized-input export (no --raw-input)")
    if settings.weights_only:
        raise ExportError("--max-drop needs calibrated W8A8 int8, not --weights-only")
    return recipe.max_drop(model, example, workdir, request, progress)
