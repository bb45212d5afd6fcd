"""The performance contract of ``bench.peers``: each goal judged on the measured rows, with
its margin (how far inside or outside its limit), so a report says pass or miss and by how
much rather than a bare number.

A speed goal compares two rows timed in the same interleaved rounds: its value is the median
over those rounds of the per-round ratio (``timing.median_round_ratio``), so the machine's
speed drifting from one round to the next cancels out; rows without rounds (older reports)
fall back to the ratio of their medians."""

from __future__ import annotations

from typing import Any

from restv2_edge.bench.timing import median_round_ratio

#: the goals: (name, kind, limit); "max" goals pass at value <= limit, "min" at >= limit
FP32_RATIO = 0.85
HALF_RATIO = 0.85
INT8_SPEEDUP = 2.0
BEST_INT8_RATIO = 0.5
FP32_MAX_DLOGIT = 1e-4
INT8_COSINE_MIN = 0.999


def _ms(rows: list[dict[str, Any]], side: str, klass: str, target: str | None = None) -> list:
    return [
        row
        for row in rows
        if row["side"] == side
        and row["class"] == klass
        and row.get("ms") is not None
        and (target is None or row["target"] == target)
    ]


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    return min(rows, key=lambda row: row["ms"]) if rows else None


def speed_ratio(row: dict[str, Any], base: dict[str, Any]) -> float:
    """``row``'s time over ``base``'s: per round where both carry the same rounds."""
    mine, theirs = row.get("rounds_ms"), base.get("rounds_ms")
    if mine and theirs and len(mine) == len(theirs):
        return median_round_ratio(theirs, mine)
    return row["ms"] / base["ms"]


def judge(name: str, value: float | None, limit: float, kind: str, detail: str) -> dict[str, Any]:
    """One goal's verdict: pass/miss and by how much (``margin``: value / limit - 1)."""
    goal = {"goal": name, "value": value, "limit": limit, "kind": kind, "detail": detail}
    if value is None:
        return {**goal, "status": "not measured", "margin": None}
    passed = value <= limit if kind == "max" else value >= limit
    return {**goal, "status": "pass" if passed else "miss", "margin": value / limit - 1}


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The performance contract, judged on the measured rows (targets in the rows' order)."""
    targets = list(dict.fromkeys(row["target"] for row in rows))
    found = []
    for target in targets:
        found += _ratio_goal(rows, target, "fp32", FP32_RATIO)
        found += _ratio_goal(rows, target, "half", HALF_RATIO)
        own32, own8 = (_fastest(_ms(rows, "project", k, target)) for k in ("fp32", "int8"))
        if own32 and own8:
            found.append(
                judge(
                    f"{target} int8 >= {INT8_SPEEDUP:g}x its own fp32",
                    speed_ratio(own32, own8),
                    INT8_SPEEDUP,
                    "min",
                    f"fp32 {own32['ms']:.2f} ms / {own8['key']} {own8['ms']:.2f} ms",
                )
            )
    found += _best_int8_goals(rows)
    found += _accuracy_goals(rows)
    return found


def _ratio_goal(rows: list[dict[str, Any]], target: str, klass: str, limit: float) -> list:
    own, peer = (_fastest(_ms(rows, side, klass, target)) for side in ("project", "peer"))
    if not (own and peer):
        return []
    return [
        judge(
            f"{target} {klass} <= {limit:g}x its peer",
            speed_ratio(own, peer),
            limit,
            "max",
            f"{own['key']} {own['ms']:.2f} ms / {peer['label']} {peer['ms']:.2f} ms",
        )
    ]


def _best_int8_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best = _fastest(_ms(rows, "project", "int8"))
    if best is None:
        return []
    found = []
    peer = _fastest(_ms(rows, "peer", "int8"))
    if peer:
        found.append(
            judge(
                f"best int8 <= {BEST_INT8_RATIO:g}x the best peer int8",
                speed_ratio(best, peer),
                BEST_INT8_RATIO,
                "max",
                f"{best['key']} {best['ms']:.2f} ms / {peer['label']} {peer['ms']:.2f} ms",
            )
        )
    half = _fastest(_ms(rows, "project", "half") + _ms(rows, "peer", "half"))
    if half:
        found.append(
            judge(
                "best int8 faster than the best half-precision row",
                speed_ratio(best, half),
                1.0,
                "max",
                f"{best['key']} {best['ms']:.2f} ms / {half['label']} {half['ms']:.2f} ms",
            )
        )
    return found


def _accuracy_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for row in rows:
        measured = row.get("accuracy") or {}
        if row["side"] != "project" or "images" not in measured:
            continue
        if row["class"] == "fp32":
            found.append(
                judge(
                    f"{row['key']} max |dlogit| <= {FP32_MAX_DLOGIT:g}",
                    measured["max_abs_diff"],
                    FP32_MAX_DLOGIT,
                    "max",
                    f"{measured['images']} photos vs the reference model",
                )
            )
        elif row["class"] == "int8":
            found.append(
                judge(
                    f"{row['key']} cosine >= {INT8_COSINE_MIN:g} per photo",
                    measured["cosine_min"],
                    INT8_COSINE_MIN,
                    "min",
                    f"worst of {measured['images']} photos vs the reference model",
                )
            )
    return found


def value_format(goal: dict[str, Any]) -> str:
    """Cosines need six digits to be told from their 0.999 limit; ratios three."""
    return ".6g" if "cosine" in goal["goal"] else ".3g"


def margin_text(goal: dict[str, Any]) -> str:
    """``pass (12.0% below the limit)``, ``miss (8.0% above the limit)``, ``not measured``."""
    if goal["margin"] is None:
        return goal["status"]
    side = "above" if goal["margin"] > 0 else "below"
    margin = abs(goal["margin"])
    return (
        f"{goal['status']} ({margin:.1%} {side} the limit)"
        if margin >= 0.01
        else (f"{goal['status']} ({margin:.3%} {side} the limit)")
    )
