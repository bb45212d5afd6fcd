"""docs/benchmarks/profile-T.md: where ResTv2-T's time goes in every target's runtime.

Profiles each artifact of a peers work folder (scripts/bench_peers.py ``--phase build``
fills it: every installed target and precision of one variant and size, the same weights)
with ``restv2_edge.profile.profile_artifact``, the runtime's own profiler and the sum
against normal calls, plus the eager model with torch.profiler. A runtime without a
profiler is a line saying so, not the end of the report.

    python scripts/bench_peers.py --variant T --image-size 224 --work exports/peers-T-224 \\
        --phase build
    python scripts/profile_report.py --work exports/peers-T-224 \\
        --markdown docs/benchmarks/profile-T.md --json docs/benchmarks/profile-T.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent

from restv2_edge.bench import peers  # noqa: E402
from restv2_edge.errors import RestV2EdgeError  # noqa: E402


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not >= 1")
    return number


def _work(value: str) -> Path:
    path = Path(value)
    if peers.read_work_record(path) is None:
        raise argparse.ArgumentTypeError(
            f"{path} holds no {peers.WORK_RECORD}: build it with scripts/bench_peers.py "
            "--phase build"
        )
    return path


def _report(value: str) -> Path | None:
    from restv2_edge.publish import check_report_path

    if value.lower() == "none":
        return None
    try:
        return check_report_path(value)
    except RestV2EdgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--work", type=_work, required=True, help="a peers work folder (bench_peers.py)")
    add("--runs", type=_count, default=20, help="profiled runs and timed calls per artifact")
    add("--top", type=_count, default=10)
    add("--threads", type=_count, default=None)
    add("--no-eager", action="store_true", help="skip the eager PyTorch profile")
    add("--markdown", type=_report, default=ROOT / "docs" / "benchmarks" / "profile-T.md")
    add("--json", type=_report, default=None, help="also the reports as JSON")
    return parser.parse_args(argv)


def progress(step: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}", file=sys.stderr, flush=True)


def profile_all(args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the work record, a report or an error entry per artifact, then the eager model)."""
    from restv2_edge.profile import profile_artifact, profile_eager

    record = peers.read_work_record(args.work)
    entries: list[dict[str, Any]] = []
    for key, entry in record["artifacts"].items():
        target, precision = key.split("/", 1)
        if entry["status"] != "ok":
            entries.append({"key": key, "error": f"not built: {entry['error']}"})
            continue
        folder = peers.artifact_folder(args.work, target, precision)
        progress(f"profile {key}")
        try:
            report = profile_artifact(folder, args.runs, args.top, threads=args.threads)
        except Exception as exc:  # one artifact's failure is its row, not the report's end
            entries.append({"key": key, "error": peers.failure_line(exc)})
            continue
        entries.append({"key": key, **report})
    if not args.no_eager:
        progress("profile eager PyTorch")
        weights = record["weights"]["path"]
        size = record["image_size"]
        key = "pytorch/fp32 (eager)"
        try:
            report = profile_eager(
                record["config"], size[0], weights, args.runs, args.top, args.threads
            )
        except Exception as exc:
            entries.append({"key": key, "error": peers.failure_line(exc)})
        else:
            entries.append({"key": key, **report})
    return record, entries


def markdown(record: dict[str, Any], entries: list[dict[str, Any]], command: str) -> str:
    from restv2_edge.bench.machine import describe_machine, machine_info
    from restv2_edge.config import ModelConfig, variant_name
    from restv2_edge.profile import SUM_TOLERANCE, profile_markdown

    name = variant_name(ModelConfig.from_dict(record["config"])) or "custom"
    size = "x".join(map(str, record["image_size"]))
    machine = machine_info()
    lines = [
        f"# Profiles: ResTv2-{name} @ {size}, batch 1, per target",
        "",
        "Generated by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"- Machine: {describe_machine(machine)}; load average "
        f"{', '.join(f'{v:.1f}' for v in machine['load_avg'] or [])}",
        f"- Weights: {record['weights']['path']} (the peers work folder's; "
        f"{record['weights']['sha256'][:19]}...)",
        "- Each runtime's own profiler on one photo batch; the sum of its per-op times is set "
        "beside the median of normal runner calls (restv2_edge.bench.timing), and is expected "
        f"within +-{SUM_TOLERANCE:.0%} of it. Profilers add their own overhead, and some "
        "attribute only part of a call (the notes under each table say how to read them).",
        "",
        "| artifact | profiler | sum ms | end-to-end ms | ratio |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        if "error" in entry:
            lines.append(f"| {entry['key']} | {entry['error']} | - | - | - |")
            continue
        check = entry["sum"]
        flag = "" if check["within"] else " (outside)"
        lines.append(
            f"| {entry['key']} | {entry['profiler']} | {check['sum_ms']:.2f} | "
            f"{check['end_to_end_ms']:.2f} | {check['ratio']:.2f}{flag} |"
        )
    for entry in entries:
        if "error" not in entry:
            lines += ["", f"## {entry['key']}", "", profile_markdown(entry).rstrip()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from restv2_edge.publish import write_report

    args = parse_args(argv)
    command = "python scripts/profile_report.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    try:
        record, entries = profile_all(args)
    except RestV2EdgeError as exc:
        print(f"error: {peers.failure_line(exc)}", file=sys.stderr)
        return 1
    if args.markdown:
        write_report(args.markdown, markdown(record, entries, command))
        progress(f"wrote {args.markdown}")
    if args.json:
        write_report(args.json, json.dumps(entries, indent=2) + "\n")
        progress(f"wrote {args.json}")
    for entry in entries:
        state = entry.get("error") or f"ratio {entry['sum']['ratio']:.2f}"
        print(f"{entry['key']}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
