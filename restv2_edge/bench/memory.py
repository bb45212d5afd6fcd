"""Peak memory of one artifact: the RSS high-water mark of a fresh process that runs it.

A fresh subprocess per artifact (``python -m restv2_edge.bench --peak-memory FOLDER``) opens
the artifact and runs two batches, so no other artifact, model or arena of the benchmarking
process is counted. ``load_run_mb`` is that mark minus the process RSS just before the
artifact was opened (runtime import + model + arenas).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from restv2_edge.bench.timing import bench_input

MEMORY_METHOD = (
    "RSS high-water (Linux VmHWM; else ru_maxrss) of a fresh subprocess per artifact "
    "(open + 2 batches); load_run_mb = that minus the RSS just before opening"
)


def _status_bytes(field: str) -> int | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def _rss_bytes() -> int:
    return _status_bytes("VmRSS") or 0


def _maxrss_bytes() -> int:
    """This process's RSS high-water mark.

    Linux: VmHWM, which starts afresh at exec. (``ru_maxrss`` does not: it keeps the
    high-water of the forking parent across fork + exec, so a probe started from a process
    that already holds big models would report the parent's peak.)
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def memory_child(
    folder: str, threads: int | None, batch: int, calls: int, device: str | None = None
) -> dict[str, Any]:
    """The probe itself, run inside the fresh process: open, run ``calls`` batches, measure."""
    from restv2_edge.artifact import open_artifact

    before = _rss_bytes()
    manifest, runner = open_artifact(folder, threads, device)
    x = bench_input(manifest, batch)
    for _ in range(max(calls, 1)):
        runner(x)
    peak = _maxrss_bytes()
    return {"peak_rss_mb": peak / 2**20, "load_run_mb": max(peak - before, 0) / 2**20}


def peak_memory(
    folder: str | os.PathLike[str],
    threads: int | None,
    batch: int,
    calls: int = 2,
    device: str | None = None,
) -> dict[str, Any]:
    """RSS high-water of a fresh process that opens ``folder`` and runs ``calls`` batches.

    A failed probe is reported in the result (``{"error": ...}``), not raised: one artifact's
    memory must not cost the whole benchmark.
    """
    command = [
        sys.executable,
        "-m",
        "restv2_edge.bench",
        "--peak-memory",
        str(folder),
        "--batch",
        str(batch),
        "--calls",
        str(calls),
    ]
    if threads:
        command += ["--threads", str(threads)]
    if device:
        command += ["--device", device]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "memory probe timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(lines[-1])
