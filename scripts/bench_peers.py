"""The performance contract: restv2-edge's artifacts beside each toolchain's plain pipeline.

For one variant and size, with one set of weights (an official-layout checkpoint with every
tensor randomized, seed ``--seed``, unless ``--weights`` is given):

- build phase: the project's artifacts of every installed target and precision (fp32, the
  16-bit ones each target exports, int8 where calibration/ has a recipe) through the export
  pipeline, into ``--work DIR`` (reused where its record and every file still verify);
- time phase: those artifacts opened through their runners, every descriptor's peers built
  from the independent official-structure model (tests/reference_restv2.py) with the same
  weights, each row checked against that model on the shared photos, all rows and the GEMMs
  behind the floors timed interleaved in one process; then the machine's report files,
  docs/benchmarks/peers-KIND.json, .md and .png (KIND: ``machine.cpu_kind``, e.g. zen5,
  intel-amx), unless ``--json``/``--markdown``/``--plot`` say otherwise (``none``: not
  written). scripts/peers_summary.py then sets every machine's goals side by side.

    python scripts/bench_peers.py --variant T --image-size 224 --work exports/peers-T-224 \\
        --phase build          # ahead of time, any machine load
    python scripts/bench_peers.py --variant T --image-size 224 --work exports/peers-T-224 \\
        --phase time           # on a quiet machine: writes docs/benchmarks/peers-KIND.*
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from restv2_edge.bench import peers as lib  # noqa: E402
from restv2_edge.errors import DataError, RestV2EdgeError, first_line  # noqa: E402
from restv2_edge.publish import optional_report_arg  # noqa: E402
from restv2_edge.script_args import OneLineParser, existing_file_arg  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks"
PHASES = ("build", "time", "all")
REPORT_SUFFIXES = {"json": "json", "markdown": "md", "plot": "png"}
#: ``--json none`` and the like: that report is not written
NO_REPORT = False


def _variant(value: str) -> Any:
    from restv2_edge.cli import parse_variant

    try:
        return parse_variant(value)
    except RestV2EdgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _image_size(value: str) -> int:
    from restv2_edge.config import check_image_size

    try:
        return check_image_size(int(value))
    except (ValueError, RestV2EdgeError) as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None


def _count(low: int) -> Any:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"{number} is not >= {low}")
        return number

    return parse


def _report_option(value: str) -> Path | bool:
    """A checked report path, or NO_REPORT for ``none``."""
    path = optional_report_arg(value)
    return NO_REPORT if path is None else path


def _work(value: str) -> Path:
    from restv2_edge.publish import check_writable_folder

    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder")
    try:
        check_writable_folder(path)
    except RestV2EdgeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


def _targets(value: str) -> list[str]:
    from restv2_edge.converters.base import get_descriptor, target_names

    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in target_names()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{', '.join(unknown) or repr(value)}: choose from {', '.join(target_names())}"
        )
    for name in names:
        try:
            get_descriptor(name).check_installed()
        except RestV2EdgeError as exc:
            raise argparse.ArgumentTypeError(f"{name}: {exc}") from None
    return names


def _classes(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    wrong = [name for name in names if name not in lib.CLASSES]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(lib.CLASSES)}")
    return names


def _form_lines(report: dict[str, Any]) -> list[str]:
    """The graph form of each project artifact timed (from its manifest), where recorded."""
    forms = [f"{r['key']} {r['graph_form']}" for r in report["rows"] if r.get("graph_form")]
    return [f"- Project artifacts' graph forms: {', '.join(forms)}"] if forms else []


def _process_lines(report: dict[str, Any]) -> list[str]:
    """For a merged report: how many timing processes, their commands, and each process's
    ratio per goal (the spread the median hides)."""
    processes = report.get("processes")
    if not processes:
        return []
    lines = [
        f"- ms = the median over {len(processes)} separate timing processes (each its own "
        "sessions); the timing commands:",
        *(f"      {p['command']}" for p in processes if p.get("command")),
        "- Each process's value per goal (merged value in the Goals table):",
    ]
    for goal in report["goals"]:
        name = goal["goal"]
        values = [g["value"] for p in processes for g in p["goals"] if g["goal"] == name]
        shown = ", ".join(_fmt(v, lib.value_format(goal)) for v in values)
        lines.append(f"  - {goal['goal']}: {shown}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--variant", type=_variant, default=None, help="T, S, B, L or a JSON config (default T)")
    add("--image-size", type=_image_size, default=None, help="default: the checkpoint's, or 224")
    add("--weights", type=existing_file_arg, default=None, help="checkpoint (default: random)")
    add("--seed", type=int, default=1, help="seed of the random weights")
    add("--work", type=_work, default=None, help="work folder (default exports/peers-V-SIZE)")
    add("--phase", choices=PHASES, default="all")
    add("--targets", type=_targets, default=None, help="comma-separated (default: installed)")
    add("--precisions", type=_classes, default=list(lib.CLASSES), help="fp32,half,int8")
    add("--threads", type=_count(1), default=None)
    add("--warmup", type=_count(0), default=3)
    add("--runs", type=_count(1), default=60, help="timed calls per row")
    add("--calib-size", type=_count(1), default=64, help="calibration images (int8)")
    add("--calib-data", type=Path, default=None, help="default: the shared ImageNet photos")
    add("--photos", type=_count(1), default=16, help="photos for the accuracy columns")
    add("--photo-data", type=Path, default=None, help="default: the shared ImageNet photos")
    add("--parity-limit", type=_count(1), default=8, help="photos of each export's own gate")
    add("--gemm-size", type=_count(64), default=1024)
    add("--merge", type=existing_file_arg, nargs="+", default=None, metavar="JSON",
        help="merge the peers.json of separate timing runs (median per row)")  # fmt: skip
    for name in REPORT_SUFFIXES:
        add(f"--{name}", type=_report_option, default=None, help="or none (default peers-KIND)")
    args = parser.parse_args(argv)
    if args.plot is not NO_REPORT:
        from restv2_edge.bench.report import check_matplotlib

        try:
            check_matplotlib()
        except RestV2EdgeError as exc:
            parser.error(str(exc))
    for name in ("calib_data", "photo_data"):
        folder = getattr(args, name)
        if folder is not None and not folder.exists():
            parser.error(f"--{name.replace('_', '-')}: {folder} does not exist")
    return args


def progress(step: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {step}", file=sys.stderr, flush=True)


# -- the model and its weights ------------------------------------------------------------------


def weights_file(args: argparse.Namespace, work: Path) -> Path:
    """The given checkpoint, or official-layout random weights kept in the work folder."""
    if args.weights is not None:
        return args.weights
    import torch
    from reference_restv2 import randomize_, reference_model

    from restv2_edge.config import resolve_config

    config = resolve_config(args.variant or "T")
    path = work / f"weights-seed{args.seed}.pth"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        reference = randomize_(reference_model("custom", **_reference_spec(config)), args.seed)
        torch.save({"model": reference.state_dict()}, path)
    return path


def _reference_spec(config: Any) -> dict[str, Any]:
    keys = ("embed_dims", "num_heads", "depths", "sr_ratios", "num_classes")
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in config.to_dict().items() if key in keys}  # fmt: skip


def models(args: argparse.Namespace, weights: Path) -> tuple[Any, Any]:
    """(the project's model, the official-structure reference), the same weights loaded."""
    from reference_restv2 import reference_model

    from restv2_edge.checkpoint import read_checkpoint
    from restv2_edge.factory import create_model

    model = create_model(args.variant, args.image_size, None, weights)
    reference = reference_model("custom", **_reference_spec(model.config))
    reference.load_state_dict(read_checkpoint(weights).state_dict)
    return model, reference.eval()


def default_work(args: argparse.Namespace) -> Path:
    from restv2_edge.config import variant_name

    if args.work is not None:
        return args.work
    name = variant_name(_config(args)) or "custom"
    return ROOT / "exports" / f"peers-{name}-{args.image_size or 224}"


def _config(args: argparse.Namespace) -> Any:
    from restv2_edge.config import resolve_config

    return resolve_config(args.variant or "T")


# -- the report ---------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _rounds(report: dict[str, Any]) -> int:
    """How many timing rounds a row has (every process's, in a merged report)."""
    return max((len(row.get("rounds_ms") or []) for row in report["rows"]), default=0)


def row_cells(row: dict[str, Any], peers_of: dict[tuple[str, str], float]) -> list[str]:
    accuracy = row.get("accuracy") or {}
    if row["status"] != "ok":
        return [row["target"], row["precision"], row["label"], f"failed: {row['error']}"] + [
            "-"
        ] * 4
    peer = peers_of.get((row["target"], row["class"]))
    ratio = row["ms"] / peer if row["side"] == "project" and peer and row.get("ms") else None
    metric = (
        f"max |dlogit| {accuracy['max_abs_diff']:.1e}"
        if row["class"] == "fp32" and "max_abs_diff" in accuracy
        else f"cosine min {accuracy['cosine_min']:.6f}"
        if "cosine_min" in accuracy
        else accuracy.get("error", "-")
    )
    return [
        row["target"],
        row["precision"],
        row["label"],
        "ok",
        _fmt(row.get("ms"), ".2f"),
        _fmt(peer if row["side"] == "project" else None, ".2f"),
        _fmt(ratio, ".2f") + ("x" if ratio else ""),
        metric,
    ]


HEADER = ["target", "precision", "pipeline", "status", "ms", "peer ms", "ratio", "vs reference"]


def fastest_peers(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(target, precision class) -> the fastest peer's median ms."""
    found: dict[tuple[str, str], float] = {}
    for row in rows:
        if row["side"] == "peer" and row.get("ms") is not None:
            key = (row["target"], row["class"])
            found[key] = min(found.get(key, row["ms"]), row["ms"])
    return found


def _table_line(cells: list[str]) -> str:
    """A markdown table line; a ``|`` inside a cell (``max |dlogit|``) is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown(report: dict[str, Any], command: str) -> str:
    from restv2_edge.bench.machine import describe_machine

    m, s, machine = report["model"], report["settings"], report["machine"]
    peers_of = fastest_peers(report["rows"])
    floors = ", ".join(
        f"{name} {_fmt(f['ms'], '.2f')} ms ({f['gemm']})" for name, f in report["floors"].items()
    )
    lines = [
        f"# Peers: ResTv2-{m['variant']} @ {'x'.join(map(str, m['image_size']))}, batch 1",
        "",
        "Generated by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"- Machine: {describe_machine(machine)}; {machine['os']}",
        f"- Load average when it ran: {', '.join(f'{v:.1f}' for v in machine['load_avg'] or [])}",
        f"- {s['threads']} threads, {s['warmup']} warm-up + {s['runs']} timed calls per row, "
        f"{s['order']}, every row and the floors' GEMMs in the same rounds; ms = median; "
        f"speed goals: median over {_rounds(report)} rounds of the per-round ratio.",
        *_process_lines(report),
        *_form_lines(report),
        f"- Weights: {m['weights']['path']} ({m['weights']['sha256'][:19]}...); "
        f"{m['macs'] / 1e9:.2f} GMACs per image.",
        f"- Floors (2 x MACs / the peak GEMM rate measured in the same rounds): {floors}",
        f"- Accuracy: each row against the official-structure model on {s['photos']}.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += [_table_line(row_cells(r, peers_of)) for r in report["rows"]]
    lines += [
        "",
        "## Goals",
        "",
        "| goal | measured | limit | verdict | rows |",
        "|---|---|---|---|---|",
    ]
    for goal in report["goals"]:
        cells = [goal["goal"], _fmt(goal["value"], lib.value_format(goal)), f"{goal['limit']:g}"]
        lines.append(_table_line([*cells, lib.margin_text(goal), goal["detail"]]))
    lines += [
        "",
        "A peer is the official-structure network through the toolchain's defaults and none "
        "of restv2-edge's graph work (each target's `peers` in converters/). ratio = the "
        "project's median / the fastest peer of the same target and precision class (half: "
        "fp16/bf16 or the runtime's CPU default). A speed goal's value is the median over the "
        "timing rounds of the same ratio within each round (rows of one round share the "
        "machine's speed at that time; restv2_edge/bench/peer_goals.py), so it can differ a "
        "little from the ratio of the medians. Absolute times hold for this machine only; "
        "the ratios are what compare across machines. A Core ML row on Linux runs the MIL "
        "reference interpreter (numpy): its time says nothing about Core ML.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any]) -> bytes:
    """Latency bars per target and precision, the peers beside the project; floors as lines."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in report["rows"] if row.get("ms") is not None]
    groups = list(dict.fromkeys((row["target"], row["class"]) for row in rows))
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(groups) + 2), 4.8))
    width = 0.8
    for index, group in enumerate(groups):
        members = [row for row in rows if (row["target"], row["class"]) == group]
        step = width / len(members)
        for slot, row in enumerate(members):
            x = index - width / 2 + step * (slot + 0.5)
            color = "tab:blue" if row["side"] == "project" else "tab:gray"
            ax.bar(x, row["ms"], step * 0.9, color=color)
            named = row["side"] == "project" and row["class"] == "half"
            text = f"{row['ms']:.1f}" + (f"\n{row['precision']}" if named else "")
            ax.annotate(text, (x, row["ms"]), ha="center", va="bottom", fontsize=7)
    top = 1.2 * max((row["ms"] for row in rows), default=1.0)
    styles = {"fp32": "--", "half": "-.", "int8": ":"}
    off_scale = []
    label_y = -top  # labels at least 4 % of the axis apart, so close floors stay readable
    floors = sorted(report["floors"].items(), key=lambda item: item[1]["ms"] or 0.0)
    for name, floor in floors:
        if not floor["ms"]:
            continue
        if floor["ms"] > top:
            off_scale.append(f"{name} floor {floor['ms']:.1f} ms")
            continue
        ax.axhline(floor["ms"], linestyle=styles[name], color="tab:red", linewidth=1)
        label_y = max(floor["ms"], label_y + 0.04 * top)
        # labelled outside the plot, right of it, where no bar can hide them
        ax.annotate(f"{name} floor {floor['ms']:.1f} ms", (1.005, label_y),
                    xycoords=("axes fraction", "data"), ha="left", va="center", fontsize=7,
                    color="tab:red", annotation_clip=False)  # fmt: skip
    ax.set_ylim(0, top)
    ax.set_xticks(range(len(groups)), [f"{t}\n{c}" for t, c in groups], fontsize=8)
    ax.bar(0, 0, color="tab:blue", label="restv2-edge")
    ax.bar(0, 0, color="tab:gray", label="peer (toolchain defaults)")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_ylabel("latency ms (batch 1, median)")
    m = report["model"]
    title = f"ResTv2-{m['variant']} @ {'x'.join(map(str, m['image_size']))}: "
    title += report["machine"]["cpu"]
    if off_scale:
        title += f"\n(off scale: {', '.join(off_scale)})"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def report_paths(args: argparse.Namespace, machine: dict[str, Any]) -> dict[str, Path]:
    """The report files to write: each given path, or docs/benchmarks/peers-KIND.SUFFIX for
    the machine the report was measured on (``none``: that file is not written)."""
    from restv2_edge.bench.machine import cpu_kind

    paths = {}
    for name, suffix in REPORT_SUFFIXES.items():
        given = getattr(args, name)
        if given is not NO_REPORT:
            paths[name] = given or DOCS / f"peers-{cpu_kind(machine)}.{suffix}"
    return paths


def write_outputs(args: argparse.Namespace, report: dict[str, Any], command: str) -> None:
    from restv2_edge.publish import staged_file, write_report

    paths = report_paths(args, report["machine"])
    if "json" in paths:
        write_report(paths["json"], json.dumps(report, indent=2) + "\n")
    if "markdown" in paths:
        write_report(paths["markdown"], markdown(report, command))
    if "plot" in paths:
        png = plot(report)
        with staged_file(paths["plot"], force=True) as tmp:
            tmp.write_bytes(png)
    for path in paths.values():
        progress(f"wrote {path}")


# -- main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any] | None:
    from restv2_edge.converters.base import installed_targets

    work = default_work(args)
    targets = args.targets or installed_targets()
    progress(f"model and weights ({work})")
    weights = weights_file(args, work)
    model, reference = models(args, weights)
    plan = lib.project_plan(targets, args.precisions)
    cached: list[Any] = []

    def calibration() -> Any:
        if not cached:
            cached.append(
                lib.calibration_set(work, model, args.calib_data, args.calib_size, progress)
            )
        return cached[0]

    if args.phase in ("build", "all"):
        record = lib.build_project(
            model, work, weights, plan, calibration, args.parity_limit, progress
        )
        for key, entry in record["artifacts"].items():
            if entry["status"] != "ok":
                progress(f"{key} failed: {entry['error']}")
    if args.phase == "build":
        return None
    report = lib.measure(
        model,
        reference,
        work,
        plan,
        lib.peer_plan(targets, args.precisions),
        calibration,
        threads=args.threads,
        warmup=args.warmup,
        runs=args.runs,
        photos=args.photo_data,
        photo_limit=args.photos,
        gemm_size=args.gemm_size,
        progress=progress,
    )
    return report


def merged(paths: list[Path]) -> dict[str, Any]:
    """The reports of separate timing runs merged (``lib.merge_reports``)."""
    reports = []
    for path in paths:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a peers report ({first_line(exc)})") from None
    return lib.merge_reports(reports)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python scripts/bench_peers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        report = merged(args.merge) if args.merge else run(args)
    except RestV2EdgeError as exc:
        print(f"error: {lib.failure_line(exc)}", file=sys.stderr)
        return 1
    if report is None:
        return 0
    report.setdefault("command", command)
    write_outputs(args, report, command)
    for goal in report["goals"]:
        value = _fmt(goal["value"], lib.value_format(goal))
        print(f"{goal['goal']}: {value} -> {lib.margin_text(goal)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
