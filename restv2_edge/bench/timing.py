"""Latency measurement shared by every benchmark: interleaved rounds, blocks of calls, stats.

Measurements are interleaved round-robin across everything being compared, so a noisy,
shared machine slows all candidates alike and the ratios stay fair. Each round times a short
block of calls per candidate after one untimed settling call: onnxruntime's worker threads
spin after every call, and single interleaved calls measured that spinning, not the models
(T@224 onnxruntime int8 vs fp32 read 1.6x interleaved call by call, 1.9x in blocks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from restv2_edge.errors import DataError

Progress = Callable[[str], None]

#: timed calls per candidate per round (``time_round_robin``)
BLOCK = 5
#: how reports describe the order ``time_round_robin(..., block=BLOCK)`` runs calls in
ORDER = f"round-robin in blocks of {BLOCK} (+1 settling call)"


def summarize(seconds: list[float], batch: int) -> dict[str, Any]:
    """Median / p90 / mean / min latency in ms and throughput (images/s at the median)."""
    if not seconds:
        raise ValueError("no timings")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    return {
        "runs": len(ms),
        "median_ms": median,
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "images_per_s": batch / (median / 1e3),
    }


def time_round_robin(
    candidates: dict[str, Callable[[], Any]],
    warmup: int,
    runs: int,
    progress: Progress,
    block: int = 1,
) -> dict[str, list[float]]:
    """Interleave the candidates in rounds; seconds per timed call.

    ``warmup`` untimed rounds of one call each come first. Then every round gives each
    candidate up to ``block`` timed calls; with ``block > 1`` they follow one untimed
    settling call, so runtimes whose worker threads keep spinning after a call (onnxruntime's
    default) have stopped stealing cores from the previous candidate. One call per round
    (``block=1``) is fair only for runtimes that park their threads.
    """
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds = warmup + -(-runs // block)
    for round_index in range(rounds):
        timed = round_index >= warmup
        progress(f"{'run' if timed else 'warm-up'} {round_index + 1}/{rounds}")
        calls = min(block, runs - len(times[names[0]])) if timed else 1
        # rotate the start so no candidate always runs right after the same neighbour
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if timed and block > 1:
                candidates[name]()
            for _ in range(calls):
                start = time.perf_counter()
                candidates[name]()
                elapsed = time.perf_counter() - start
                if timed:
                    times[name].append(elapsed)
    return times


def round_medians(seconds: list[float], block: int = BLOCK) -> list[float]:
    """The median ms of each full round of ``block`` calls in ``time_round_robin``'s order."""
    rounds = len(seconds) // block
    return [float(np.median(seconds[i * block : (i + 1) * block])) * 1e3 for i in range(rounds)]


def median_round_ratio(base: list[float], other: list[float]) -> float:
    """Median over rounds of ``other[r] / base[r]`` (per-round values of rows timed in the same
    rounds): the machine's speed drifting between rounds cancels out, which a ratio of
    overall medians does not guarantee."""
    if not base or len(base) != len(other):
        raise DataError(f"need the same rounds on both sides (got {len(base)} and {len(other)})")
    return float(np.median(np.asarray(other) / np.asarray(base)))


def per_round_ratio(
    times: dict[str, list[float]], base: str, other: str, block: int = BLOCK
) -> float:
    """``median_round_ratio`` of two candidates' seconds from one ``time_round_robin``."""
    rounds = min(len(times[base]), len(times[other])) // block
    if rounds == 0:
        raise DataError(f"no full round of {block} calls to compare")
    size = rounds * block
    return median_round_ratio(
        round_medians(times[base][:size], block), round_medians(times[other][:size], block)
    )


def check_counts(warmup: int, runs: int, batch: int) -> None:
    """Refuse counts that would time nothing, before any export or model load."""
    if warmup < 0 or runs < 1 or batch < 1:
        raise DataError(f"need warmup >= 0, runs >= 1, batch >= 1 (got {warmup}, {runs}, {batch})")


def bench_input(manifest: Any, batch: int, seed: int = 0) -> np.ndarray:
    """A seeded batch in the artifact's input convention (normalized, or raw 0-255)."""
    rng = np.random.default_rng(seed)
    shape = (batch, 3, *manifest.input_hw)
    if manifest.raw_input:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)
