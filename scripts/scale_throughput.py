"""Eval throughput (images/s) of ``eval --ray`` with 1 and 2 workers on a local Ray head.

Starts one head on 127.0.0.1 with as many CPUs as the largest worker count, connects once
(so the workers stay warm between runs) and runs the same sharded eval of the given
artifacts with N workers in flight (each task asks for CPUS/N CPUs and runs one runtime
thread), beside a local in-process eval (one thread) as the baseline. Configurations are
interleaved round by round after one untimed run each; the medians go to
docs/benchmarks/scale.json and docs/benchmarks/scale.md with the CPU model. Run it on a
quiet machine: numbers taken while other work runs are not benchmarks.

    python scripts/scale_throughput.py ARTIFACT... --data ../shared/data/cifar10/test.tar
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", help="artifact folders to evaluate")
    parser.add_argument("--data", required=True, help="labelled data (folder or tar)")
    parser.add_argument("--split", default=None)
    parser.add_argument("--limit", type=int, default=2000, help="images per run")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="images per runner call")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (interleaved)")
    parser.add_argument("--json", default="docs/benchmarks/scale.json")
    parser.add_argument("--markdown", default="docs/benchmarks/scale.md")
    return parser.parse_args(argv)


def lscpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for line in text.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def one_run(plan: Any, executor: Any) -> float:
    """Images per second of one full run of ``plan`` (every shard computed)."""
    from restv2_edge.evaluate import run_plan

    started = time.perf_counter()
    reports = run_plan(plan, executor)
    seconds = time.perf_counter() - started
    return sum(r["images"] + r["skipped"] for r in reports) / seconds


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from restv2_edge.scale.head import LOOPBACK_ENV, start_head

    os.environ.update(LOOPBACK_ENV)  # before ray is imported
    import ray

    from restv2_edge.bench.machine import package_versions
    from restv2_edge.evaluate import LocalExecutor, plan_eval
    from restv2_edge.scale.executor import RayEvalExecutor

    cpus = max(args.workers)
    plan = plan_eval(args.artifacts, args.data, args.split, args.limit, args.batch_size,
                     args.shard_size)  # fmt: skip
    head = start_head(cpus)
    try:
        ray.init(address=head.address, log_to_driver=False)
        configs: dict[str, Any] = {"local, 1 thread": LocalExecutor(threads=1)}
        for n in args.workers:
            configs[f"ray, {n} worker{'s' if n > 1 else ''}"] = RayEvalExecutor(
                ray, threads=1, cpus_per_task=cpus / n
            )
        for executor in configs.values():  # untimed: workers start, runtimes load
            one_run(plan, executor)
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):
            for name, executor in configs.items():
                rates[name].append(one_run(plan, executor))
    finally:
        ray.shutdown()
        head.stop()
    return {
        "cpu": lscpu_model(),
        "cores": os.cpu_count(),
        "versions": package_versions() | {"ray": ray.__version__},
        "artifacts": args.artifacts,
        "images_per_run": len(plan.source.items) * len(args.artifacts),
        "shard_size": plan.shards[0].size_limit,
        "rounds": args.rounds,
        "images_per_s": rates,
        "median_images_per_s": {name: statistics.median(v) for name, v in rates.items()},
    }


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# eval --ray throughput",
        "",
        f"Measured by `{command}` on {result['cpu']} ({result['cores']} cores): "
        f"{result['images_per_run']} images per run ({len(result['artifacts'])} artifact(s), "
        f"shards of {result['shard_size']}), {result['rounds']} interleaved rounds after one "
        "untimed run each; one runtime thread per task; local head on 127.0.0.1.",
        "",
        "| configuration | median images/s | rounds |",
        "|---|---:|---|",
    ]
    for name, median in result["median_images_per_s"].items():
        rounds = ", ".join(f"{rate:.1f}" for rate in result["images_per_s"][name])
        lines.append(f"| {name} | {median:.1f} | {rounds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from restv2_edge.publish import write_report

    result = measure(args)
    command = "python scripts/scale_throughput.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    write_report(args.json, json.dumps(result, indent=2) + "\n")
    write_report(args.markdown, markdown(result, command))
    print(markdown(result, command))


if __name__ == "__main__":
    main()
