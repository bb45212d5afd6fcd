"""What the registry says about targets, for the CLI: ``restv2-edge targets``, the export
command's precision choices and which target-specific options a target reads."""

from __future__ import annotations

import json
from typing import Any

import click


def option_readers(target: str) -> set[str]:
    """The target-specific export options ``target`` reads: its descriptor's, its INT8
    recipe's, and ``weights_only`` where the recipe offers the weight-only scheme."""
    from restv2_edge.calibration.recipes import WEIGHTS_ONLY, get_recipe, has_int8_recipe
    from restv2_edge.converters.base import get_descriptor

    readers = set(get_descriptor(target).options)
    if has_int8_recipe(target):
        recipe = get_recipe(target)
        readers |= set(recipe.options)
        if WEIGHTS_ONLY in recipe.schemes:
            readers.add("weights_only")
    return readers


def float_precisions() -> list[str]:
    from restv2_edge.converters.base import get_descriptor, target_names

    found: list[str] = []
    for name in target_names():
        found += [p for p in get_descriptor(name).precisions if p not in found]
    return found


def backend_present(descriptor: Any) -> bool:
    """Whether every package a target needs is installed (found, not imported: fast)."""
    import importlib.util

    return all(importlib.util.find_spec(package) for package in descriptor.packages)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def targets(as_json: bool) -> None:
    """The export targets: pip extra, precisions, INT8 schemes and guards, dynamic batch,
    target-specific export options, installed or not."""
    from restv2_edge.calibration.recipes import get_recipe, has_int8_recipe
    from restv2_edge.converters.base import ExportRequest, get_descriptor, target_names

    installed = {name for name in target_names() if backend_present(get_descriptor(name))}
    rows = []
    for name in target_names():
        descriptor = get_descriptor(name)
        recipe = get_recipe(name) if has_int8_recipe(name) else None
        rows.append({
            "target": name,
            "extra": descriptor.extra,
            "installed": name in installed,
            "precisions": list(descriptor.precisions),
            "default_precision": descriptor.default_precision,
            "int8_schemes": list(recipe.schemes) if recipe else [],
            "max_drop": bool(recipe and recipe.max_drop),
            "sensitivity": bool(recipe and recipe.sensitivity),
            "graph_form": descriptor.graph_form,
            "graph_form_by_precision": {
                precision: descriptor.converter.graph_form_for(ExportRequest(precision=precision))
                for precision in descriptor.precisions
            },
            "dynamic_batch": descriptor.dynamic_batch,
            "options": sorted(option_readers(name)),
            "model_file": f"model{descriptor.suffix}",
        })  # fmt: skip
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        int8 = ", ".join(row["int8_schemes"]) or "none"
        state = "installed" if row["installed"] else f"pip install 'restv2-edge[{row['extra']}]'"
        batch = "dynamic batch" if row["dynamic_batch"] else "static batch"
        options = ", ".join(f"--{o.replace('_', '-')}" for o in row["options"])
        click.echo(f"{row['target']:<11} {'/'.join(row['precisions'])} (default "
                   f"{row['default_precision']}); int8: {int8}; {batch}; "
                   f"{options + '; ' if options else ''}{state}")  # fmt: skip
