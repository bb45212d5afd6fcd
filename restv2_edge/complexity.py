"""Parameters and multiply-accumulates (MACs) per stage, counted on the built model.

MACs count convolutions, linears and the two attention matmuls (Q K^T and A V) -- the
convention of the published table; norms, activations and the softmax are not counted.
This is the project's one MAC counter: ``info``, the bench floors and the GPU bench use it.
It imports only torch and the model, so the GPU bench runs from a checkout with torch alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from restv2_edge.config import PUBLISHED, variant_name
from restv2_edge.model import Attention, ResTV2


def _module_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, Attention):
        queries = module.grid[0] * module.grid[1]
        keys = module.reduced_grid[0] * module.reduced_grid[1]
        return 2 * output.shape[0] * queries * keys * module.dim
    return 0


def count_macs(model: ResTV2) -> dict[str, int]:
    """MACs of one image, keyed by top-level part (stage1..4 include their patch embedding)."""
    part_of = {
        "stem": "stage1",
        "stage1": "stage1",
        "patch_2": "stage2",
        "stage2": "stage2",
        "patch_3": "stage3",
        "stage3": "stage3",
        "patch_4": "stage4",
        "stage4": "stage4",
        "norm": "head",
        "head": "head",
    }
    totals = dict.fromkeys(["stage1", "stage2", "stage3", "stage4", "head"], 0)
    return _tally(model, totals, lambda name, module: part_of.get(name.split(".", 1)[0]))


def count_macs_by_op(model: ResTV2) -> dict[str, int]:
    """MACs of one image by kind of op: ``linear`` (the GEMMs of every linear layer),
    ``conv`` (dense and depthwise convolutions), ``attention`` (q @ k^T and attn @ v), so a
    profile's per-kernel time can be read as a rate."""
    kinds = ((nn.Linear, "linear"), (nn.Conv2d, "conv"), (Attention, "attention"))
    return _tally(
        model,
        {"linear": 0, "conv": 0, "attention": 0},
        lambda name, module: next(kind for cls, kind in kinds if isinstance(module, cls)),
    )


def _tally(model: ResTV2, totals: dict[str, int], key_of: Any) -> dict[str, int]:
    """One forward pass of a zero image, each conv/linear/attention module's MACs added to
    ``totals[key_of(name, module)]`` (skipped where that is None)."""
    handles = []
    for name, module in model.named_modules():
        counted = isinstance(module, (nn.Conv2d, nn.Linear, Attention))
        key = key_of(name, module) if counted else None
        if key is not None:

            def hook(mod, inputs, output, key=key):
                totals[key] += _module_macs(mod, inputs, output)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_chans, *model.input_hw))
    finally:
        for handle in handles:
            handle.remove()
    return totals


def total_macs(model: ResTV2) -> int:
    """MACs of one image through the whole model."""
    return sum(count_macs(model).values())


def count_params(model: ResTV2) -> dict[str, int]:
    part_of = {
        "stem": "stage1",
        "patch_2": "stage2",
        "patch_3": "stage3",
        "patch_4": "stage4",
        "norm": "head",
        "head": "head",
        **{f"norm_{index}": f"stage{index}" for index in range(1, 5)},  # the features head's
    }
    totals = dict.fromkeys(["stage1", "stage2", "stage3", "stage4", "head"], 0)
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        totals[part_of.get(top, top)] += param.numel()
    return totals


def complexity_report(
    variant: Any = "T", image_size: int = 224, num_classes: int | None = None
) -> dict[str, Any]:
    """Params and MACs per stage and in total, with the published figures when they apply."""
    from restv2_edge.factory import create_model

    model = create_model(variant or "T", image_size, num_classes)
    params, macs = count_params(model), count_macs(model)
    name = variant_name(model.config)
    report: dict[str, Any] = {
        "variant": name or "custom",
        "config": model.config.to_dict(),
        "image_size": image_size,
        "params": sum(params.values()),
        "macs": sum(macs.values()),
        "stages": [
            {"stage": stage, "params": params[stage], "macs": macs[stage]} for stage in params
        ],
    }
    if name and model.config.num_classes == 1000:
        published = PUBLISHED[name]
        report["published"] = {"params": published["params_m"] * 1e6}
        if image_size in (224, 384):
            report["published"]["macs"] = published[f"gmacs_{image_size}"] * 1e9
    return report


def render_report(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"ResTv2-{report['variant']} @ {report['image_size']}")
    table.add_column("part")
    table.add_column("params (M)", justify="right")
    table.add_column("GMACs", justify="right")
    for row in report["stages"]:
        table.add_row(row["stage"], f"{row['params'] / 1e6:.2f}", f"{row['macs'] / 1e9:.3f}")
    table.add_row("total", f"{report['params'] / 1e6:.2f}", f"{report['macs'] / 1e9:.3f}")
    if "published" in report:
        pub = report["published"]
        macs = f"{pub['macs'] / 1e9:.1f}" if "macs" in pub else "-"
        table.add_row("published", f"{pub['params'] / 1e6:.0f}", macs)
    console.print(table)
