"""Where an inference's time goes: per op type, from each runtime's own profiler.

``Runner.profile`` (converters/) gives per-node mean times from the runtime's profiler;
this module aggregates them by op type, picks the top ops, counts delegated and fallback
nodes, and sets the sum beside the end-to-end latency of normal runner calls
(``bench.timing``), because a profiler that misses work (or adds its own) shows in that
ratio. Eager PyTorch is profiled the same way with ``torch.profiler``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from restv2_edge.bench.timing import BLOCK, ORDER, Progress, summarize, time_round_robin
from restv2_edge.converters.base import OpProfile, OpTime
from restv2_edge.errors import DataError, ProfileError

#: the sum of the per-op times must lie within this fraction of the end-to-end latency
SUM_TOLERANCE = 0.30
#: profile and normal-call rounds alternated (``profile_runner``)
ROUNDS = 4


def by_op_type(profile: OpProfile) -> list[dict[str, Any]]:
    """Per op type: mean ms per inference, node count, share of the sum (largest first)."""
    total = sum(op.ms for op in profile.ops)
    groups: dict[str, dict[str, Any]] = {}
    for op in profile.ops:
        group = groups.setdefault(op.op_type, {"op_type": op.op_type, "ms": 0.0, "count": 0})
        group["ms"] += op.ms
        group["count"] += 1
    rows = sorted(groups.values(), key=lambda g: (-g["ms"], g["op_type"]))
    for row in rows:
        row["share"] = row["ms"] / total if total > 0 else 0.0
    return rows


def top_ops(profile: OpProfile, k: int) -> list[dict[str, Any]]:
    """The ``k`` slowest nodes."""
    ordered = sorted(profile.ops, key=lambda op: (-op.ms, op.name))[:k]
    return [
        {"name": op.name, "op_type": op.op_type, "ms": op.ms, "delegated": op.delegated}
        for op in ordered
    ]


def delegation(profile: OpProfile) -> dict[str, Any] | None:
    """Delegated vs fallback node counts and times; None where the runtime has no delegates
    (every node's ``delegated`` is None)."""
    known = [op for op in profile.ops if op.delegated is not None]
    if not known:
        return None
    delegated = [op for op in known if op.delegated]
    fallback = [op for op in known if not op.delegated]
    return {
        "delegated": len(delegated),
        "fallback": len(fallback),
        "delegated_ms": sum(op.ms for op in delegated),
        "fallback_ms": sum(op.ms for op in fallback),
        "fallback_types": sorted({op.op_type for op in fallback}),
    }


def sum_check(
    sum_ms: float, end_to_end_ms: float, round_ratios: list[float] | None = None
) -> dict[str, Any]:
    """The per-op sum against the end-to-end latency and whether it is within
    ``SUM_TOLERANCE``. With ``round_ratios`` (each profiled round's sum over the median of the
    normal calls right after it) the ratio is their median: the machine's speed drifting
    between rounds cancels out, as in the peers goals; otherwise ``sum_ms / end_to_end_ms``."""
    if round_ratios:
        ratio = float(np.median(round_ratios))
    else:
        ratio = sum_ms / end_to_end_ms if end_to_end_ms > 0 else float("inf")
    return {
        "sum_ms": sum_ms,
        "end_to_end_ms": end_to_end_ms,
        "ratio": ratio,
        "round_ratios": list(round_ratios or []),
        "tolerance": SUM_TOLERANCE,
        "within": abs(ratio - 1.0) <= SUM_TOLERANCE,
    }


def summarize_profile(
    profile: OpProfile,
    end_to_end: dict[str, Any],
    top: int = 10,
    round_ratios: list[float] | None = None,
) -> dict[str, Any]:
    """The report of one profile: op types, top ops, delegation, sum vs end-to-end."""
    if not profile.ops:
        raise ProfileError(f"{profile.profiler}: the profile holds no op")
    sum_ms = sum(op.ms for op in profile.ops)
    return {
        "profiler": profile.profiler,
        "unit": profile.unit,
        "runs": profile.runs,
        "notes": list(profile.notes),
        "ops": len(profile.ops),
        "op_types": by_op_type(profile),
        "top_ops": top_ops(profile, top),
        "delegation": delegation(profile),
        "end_to_end": end_to_end,
        "sum": sum_check(sum_ms, end_to_end["median_ms"], round_ratios),
    }


def profile_runner(
    runner: Any,
    x: np.ndarray,
    runs: int = 20,
    top: int = 10,
    progress: Progress = lambda s: None,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """``runner.profile`` (ProfileError where its runtime has none) and normal calls of the
    same batch, alternated in ``rounds`` so that a slow spell of the machine falls on both
    sides alike; the per-node times are the mean over the rounds, the end-to-end latency the
    median of every normal call."""
    rounds = max(1, min(rounds, runs))
    per_round = [runs // rounds + (1 if index < runs % rounds else 0) for index in range(rounds)]
    profiles, seconds, ratios = [], [], []
    for index, count in enumerate(per_round):
        progress(f"profile, round {index + 1}/{rounds}")
        profiles.append(runner.profile(x, count))
        timed = time_round_robin({"call": lambda: runner(x)}, 2, count, progress, BLOCK)
        seconds += timed["call"]
        ratios.append(sum(op.ms for op in profiles[-1].ops) / (np.median(timed["call"]) * 1e3))
    latency = {**summarize(seconds, 1), "order": f"{ORDER}, alternated with the profile"}
    report = summarize_profile(merge_profiles(profiles), latency, top, ratios)
    report["runner"] = getattr(runner, "description", type(runner).__name__)
    return report


def merge_profiles(profiles: list[OpProfile]) -> OpProfile:
    """One profile from several of the same runner: each node's time weighted by its rounds'
    runs (a node missing from a round counts 0 there); the first profile's notes."""
    runs = sum(profile.runs for profile in profiles)
    total: dict[str, float] = {}
    first: dict[str, OpTime] = {}
    for profile in profiles:
        for op in profile.ops:
            total[op.name] = total.get(op.name, 0.0) + op.ms * profile.runs
            first.setdefault(op.name, op)
    ops = tuple(
        OpTime(name, first[name].op_type, ms / runs, first[name].delegated)
        for name, ms in total.items()
    )
    notes = (*profiles[0].notes, f"{len(profiles)} profiled rounds alternated with normal calls")
    return OpProfile(profiles[0].profiler, runs, ops, notes, profiles[0].unit)


def profile_input(manifest: Any, data: Any = None) -> tuple[np.ndarray, str]:
    """One batch of the artifact's static batch size from the photos (parity's loader: the
    shared photos, or seeded synthetic images, said so), and where it came from."""
    from restv2_edge.parity import manifest_inputs

    batch = manifest.batch_size
    inputs = manifest_inputs(manifest, data, max(batch, 1))
    images = inputs.images
    if len(images) == 0:
        raise DataError("no image to profile with")
    repeats = -(-batch // len(images))
    x = np.ascontiguousarray(np.concatenate([images] * repeats)[:batch], dtype=np.float32)
    return x, inputs.source


def profile_artifact(
    folder: str | os.PathLike[str],
    runs: int = 20,
    top: int = 10,
    device: str | None = None,
    threads: int | None = None,
    data: Any = None,
    progress: Progress = lambda s: None,
) -> dict[str, Any]:
    """Open and verify the artifact (``open_artifact``), profile it on a photo batch."""
    from restv2_edge.artifact import open_artifact

    progress("open")
    manifest, runner = open_artifact(folder, threads, device)
    x, source = profile_input(manifest, data)
    report = profile_runner(runner, x, runs, top, progress)
    report.update(
        artifact=str(folder),
        target=manifest.target,
        precision=manifest.precision,
        input=source,
        batch=int(x.shape[0]),
        synthetic=source.startswith("synthetic"),
    )
    return report


class EagerProfiler:
    """PyTorch eager fp32 as a runner with a profiler: ``torch.profiler`` CPU activity,
    self CPU time per aten op (so nested ops are not counted twice)."""

    def __init__(self, model: Any, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self.description = f"PyTorch {torch.__version__} eager fp32"

    def __call__(self, x: np.ndarray) -> Any:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x))

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        import torch
        from torch.profiler import ProfilerActivity, profile

        if runs < 1:
            raise ProfileError(f"profile needs at least one run (got {runs})")
        self(x)  # warm-up, outside the profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                self(x)
        ops = [
            OpTime(name=event.key, op_type=event.key, ms=event.self_cpu_time_total / 1e3 / runs)
            for event in prof.key_averages()
            if event.self_cpu_time_total > 0
        ]
        return OpProfile(
            profiler=f"torch.profiler {torch.__version__} (CPU activity, self time per op)",
            runs=runs,
            ops=tuple(ops),
            notes=("one node per aten op type: torch.profiler aggregates by op name",),
        )


def profile_eager(
    variant: Any = "T",
    image_size: Any = 224,
    weights: Any = None,
    runs: int = 20,
    top: int = 10,
    threads: int | None = None,
    data: Any = None,
    progress: Progress = lambda s: None,
) -> dict[str, Any]:
    """The eager model (``create_model``) profiled with torch.profiler on one photo."""
    from restv2_edge.config import variant_name
    from restv2_edge.factory import create_model
    from restv2_edge.parity import load_inputs

    progress("build model")
    model = create_model(variant, image_size, None, weights)
    hw = None if model.input_hw[0] == model.input_hw[1] else model.input_hw
    pre = model.preprocessing or _stretch_preprocessing(model)
    inputs = load_inputs(pre, data, 1, hw=hw)
    x = np.ascontiguousarray(inputs.images[:1], dtype=np.float32)
    report = profile_runner(EagerProfiler(model, threads), x, runs, top, progress)
    report.update(
        artifact=None,
        target="pytorch",
        precision="fp32",
        variant=variant_name(model.config) or "custom",
        image_size=list(model.input_hw),
        input=inputs.source,
        batch=1,
        synthetic=inputs.synthetic,
    )
    return report


def _stretch_preprocessing(model: Any) -> Any:
    from restv2_edge.preprocess import Preprocessing

    return Preprocessing(image_size=model.input_hw[0])


def _per_round(check: dict[str, Any]) -> str:
    rounds = check.get("round_ratios") or []
    return f" (median over {len(rounds)} rounds of the round's ratio)" if rounds else ""


def profile_markdown(report: dict[str, Any], types: int = 12) -> str:
    """One profile as markdown: the sum check, the op types, the top ops, delegation."""
    check = report["sum"]
    unit = report["unit"]
    flag = "within" if check["within"] else "OUTSIDE"
    lines = [
        f"Profiler: {report['profiler']}; {report['runs']} profiled runs of one batch of "
        f"{report['batch']} ({report['input']}); runner: {report['runner']}.",
        "",
        f"Sum of the per-op times {check['sum_ms']:.2f} ms vs end-to-end "
        f"{check['end_to_end_ms']:.2f} ms (median of normal calls): ratio {check['ratio']:.2f}"
        f"{_per_round(check)}, {flag} +-{check['tolerance']:.0%}.",
        "",
        f"| op type | {unit}s | ms | share |",
        "|---|---|---|---|",
    ]
    for row in report["op_types"][:types]:
        lines.append(
            f"| {row['op_type']} | {row['count']} | {row['ms']:.3f} | {row['share']:.1%} |"
        )
    if len(report["op_types"]) > types:
        rest = report["op_types"][types:]
        lines.append(
            f"| ({len(rest)} other types) | {sum(r['count'] for r in rest)} | "
            f"{sum(r['ms'] for r in rest):.3f} | {sum(r['share'] for r in rest):.1%} |"
        )
    lines += ["", "| top op | type | ms |", "|---|---|---|"]
    lines += [f"| `{op['name']}` | {op['op_type']} | {op['ms']:.3f} |" for op in report["top_ops"]]
    share = report["delegation"]
    if share:
        lines += [
            "",
            f"Delegated {unit}s: {share['delegated']} ({share['delegated_ms']:.2f} ms); "
            f"fallback {unit}s: {share['fallback']} ({share['fallback_ms']:.2f} ms"
            + (f": {', '.join(share['fallback_types'])})" if share["fallback_types"] else ")"),
        ]
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"
