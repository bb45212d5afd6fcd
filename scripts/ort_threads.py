"""onnxruntime's intra-op threads: an explicit count against the default, in fresh processes.

Each setting runs in its own new process (a session's thread placement holds for its life),
alternating, and prints the median latency of each process:

    python scripts/ort_threads.py exports/peers-T-224/artifacts/onnx-fp32/model.onnx --processes 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

SETTINGS = {"default": None, "explicit": 2}


def one_process(path: str, threads: int | None, runs: int) -> float:
    """Median ms of ``runs`` batch-1 calls in a new session (run in a child process)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    shape = [1 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape]
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(shape)}
    feed = {k: v.astype(np.float32) for k, v in feed.items()}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an .onnx file")
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per setting")
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process(args.model, SETTINGS[args.child], args.runs)))
        return
    found: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.processes):
        for name in SETTINGS:
            command = [sys.executable, __file__, args.model, "--runs", str(args.runs)]
            out = subprocess.run([*command, "--child", name], capture_output=True, text=True)
            found[name].append(round(json.loads(out.stdout.strip().splitlines()[-1]), 1))
    for name, values in found.items():
        threads = SETTINGS[name] or "onnxruntime's default"
        print(f"{name} ({threads} threads): median ms per process {sorted(values)}")


if __name__ == "__main__":
    main()
