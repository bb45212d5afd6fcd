"""``bench ARTIFACT...``: latency, throughput, size and peak memory of exported artifacts.

Every latency comes from the same runners parity uses (``restv2_edge.artifact.open_artifact``),
all artifacts interleaved in the same rounds (``timing.time_round_robin``).
"""

from __future__ import annotations

import os
from typing import Any

from restv2_edge.bench.machine import machine_info, package_versions, usable_cores
from restv2_edge.bench.memory import MEMORY_METHOD, peak_memory
from restv2_edge.bench.timing import (
    BLOCK,
    ORDER,
    Progress,
    bench_input,
    check_counts,
    summarize,
    time_round_robin,
)
from restv2_edge.errors import DataError


def artifact_bytes(manifest: Any) -> int:
    """Bytes of the artifact's files as its manifest records them (the manifest excluded)."""
    return int(sum(entry["bytes"] for entry in manifest.files))


def bench_artifacts(
    folders: list[str | os.PathLike[str]],
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    batch: int | None = None,
    memory: bool = True,
    progress: Progress = lambda step: None,
    device: str | None = None,
) -> dict[str, Any]:
    """Latency/throughput (interleaved), size and peak memory of each artifact folder.

    ``batch``: images per call (None: each artifact's exported batch, ``input.shape[0]``); a
    static artifact runs a batch that is not its own in chunks of its own, the last padded.
    ``device``: the device every artifact runs on (None: each target's default); checked
    for every artifact before anything is timed.
    """
    from restv2_edge.artifact import open_artifact

    if not folders:
        raise DataError("no artifact folder given")
    check_counts(warmup, runs, batch or 1)
    threads = threads or usable_cores()
    opened, calls, rows = {}, {}, []
    for folder in folders:
        key = str(folder)
        if key in opened:
            raise DataError(f"{key} given twice")
        progress(f"open {key}")
        manifest, runner = open_artifact(folder, threads, device)
        size = batch or manifest.batch_size
        x = bench_input(manifest, size)
        opened[key] = (manifest, runner, size)
        calls[key] = lambda runner=runner, x=x: runner(x)
    times = time_round_robin(calls, warmup, runs, progress, BLOCK)
    for key, (manifest, runner, size) in opened.items():
        stats = summarize(times[key], size)
        row = {
            "artifact": key,
            "target": manifest.target,
            "precision": manifest.precision,
            "variant": manifest.variant or "custom",
            "image_size": manifest.image_size,
            "head": manifest.head,
            "runner": runner.description,
            "device": runner.device,
            "batch": size,
            "artifact_batch": manifest.batch_size,
            "dynamic_batch": manifest.dynamic_batch,
            "size_mb": artifact_bytes(manifest) / 1e6,
            **stats,
            "per_image_ms": stats["median_ms"] / size,
        }
        if memory:
            progress(f"memory {key}")
            row["memory"] = peak_memory(key, threads, size, device=device)
        rows.append(row)
    return {
        "kind": "artifacts",
        "machine": machine_info(),
        "versions": package_versions(),
        "settings": {
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": batch,
            "device": device,
            "order": ORDER,
            "memory": MEMORY_METHOD if memory else None,
        },
        "rows": rows,
    }
