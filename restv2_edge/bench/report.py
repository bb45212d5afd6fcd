"""Presenting bench reports: rich tables, the markdown doc (docs/benchmarks/cpu.md), a plot.

Only formatting lives here: the reports are plain dicts (also written as JSON), so a saved
report renders the same way later.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from restv2_edge.bench.machine import describe_machine
from restv2_edge.bench.timing import BLOCK
from restv2_edge.errors import RunnerUnavailableError


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_artifacts(report: dict[str, Any], console: Any) -> None:
    """The artifacts report as a rich table on ``console``."""
    from rich.table import Table

    s = report["settings"]
    batch = f"batch {s['batch']}" if s.get("batch") else "each artifact's batch"
    table = Table(
        title=f"{batch}, {s['threads']} threads, {s['runs']} runs (round-robin)",
        caption=describe_machine(report["machine"]),
    )
    for column in (
        "artifact",
        "target",
        "precision",
        "batch",
        "size MB",
        "median ms",
        "p90 ms",
        "ms/img",
        "img/s",
        "peak RSS MB",
        "device",
        "runner",
    ):
        table.add_column(
            column, justify="right" if column[0].isupper() or " " in column else "left"
        )
    for row in report["rows"]:
        memory = row.get("memory") or {}
        table.add_row(
            Path(row["artifact"]).name,
            row["target"],
            row["precision"],
            _batch_cell(row, s.get("batch")),
            f"{row['size_mb']:.2f}",
            f"{row['median_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            _fmt(row.get("per_image_ms"), ".2f"),
            f"{row['images_per_s']:.1f}",
            _fmt(memory.get("peak_rss_mb"), ".0f") if "error" not in memory else "error",
            row.get("device", "CPU"),
            row["runner"],
        )
    console.print(table)


def _batch_cell(row: dict[str, Any], settings_batch: int | None) -> str:
    """The batch timed, and how the artifact takes it: ``4 (dynamic)``, ``1 (static 4, padded)``."""
    size = row.get("batch", settings_batch)
    own = row.get("artifact_batch")
    if row.get("dynamic_batch"):
        return f"{size} (dynamic)"
    if own is not None and size != own:
        return f"{size} (static {own}" + (", padded)" if size % own else ")")
    return str(size)


def matrix_columns(row: dict[str, Any]) -> list[str]:
    """One table row of the matrix as strings (also used for the markdown doc)."""
    parity = row.get("parity") or {}
    accuracy = row.get("accuracy") or {}
    if row.get("status") == "failed":
        return [row["target"], row["precision"], "-", "failed", "-", "-", "-", "-"]
    cosine = parity.get("cosine_mean")
    agree = parity.get("top1_agreement")
    par = "-" if cosine is None else f"{cosine:.5f} / {agree:.0%}"
    if parity.get("status") == "failed":
        par += " (FAILED)"
    acc = f"{accuracy['top1']:.2%}" if "top1" in accuracy else "-"
    floor = "-" if row.get("floor_ms") is None else f"{row['floor_ms']:.2f} ({row['floor_gemm']})"
    return [
        row["target"],
        row["precision"],
        _fmt(row.get("size_mb"), ".2f"),
        par,
        acc,
        _fmt(row.get("median_ms"), ".2f"),
        _fmt(row.get("speedup_vs_eager"), ".2f") + "x",
        floor,
    ]


MATRIX_HEADER = [
    "target",
    "precision",
    "size MB",
    "parity cos / top-1",
    "accuracy",
    "latency ms",
    "vs eager",
    "floor ms",
]


def render_matrix(report: dict[str, Any], console: Any) -> None:
    """The matrix as a rich table on ``console``, then one line per failed row."""
    from rich.table import Table

    m, s = report["model"], report["settings"]
    table = Table(
        title=(
            f"ResTv2-{m['variant']} @ {m['image_size']}, batch {s['batch']}, "
            f"{s['threads']} threads, median of {s['runs']} (round-robin)"
        ),
        caption=describe_machine(report["machine"]),
    )
    for column in MATRIX_HEADER:
        table.add_column(column, justify="left" if column in ("target", "precision") else "right")
    for row in report["rows"]:
        table.add_row(*matrix_columns(row))
    console.print(table)
    for row in report["rows"]:
        if row.get("status") == "failed":
            console.print(f"[red]{row['key']} failed:[/] {row['error']}")


def matrix_markdown(report: dict[str, Any]) -> str:
    """The matrix table in markdown."""
    lines = ["| " + " | ".join(MATRIX_HEADER) + " |", "|" + "---|" * len(MATRIX_HEADER)]
    lines += ["| " + " | ".join(matrix_columns(row)) + " |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def matrix_doc(report: dict[str, Any], command: str) -> str:
    """docs/benchmarks/cpu.md: the machine, the command, the table, the peaks and floors."""
    m, s, machine = report["model"], report["settings"], report["machine"]
    rates = ", ".join(
        f"{k} {v / 1e9:.3g}" if v else f"{k} -" for k, v in report["peak_rates"].items()
    )
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    load = machine.get("load_avg")
    lines = [
        f"# CPU benchmark matrix: ResTv2-{m['variant']} @ {m['image_size']}",
        "",
        "Generated by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"- Machine: {describe_machine(machine)}; {machine['os']}",
        f"- Load average when it ran: {', '.join(f'{v:.1f}' for v in load) if load else '-'}",
        f"- Batch {s['batch']}, {s['threads']} threads, {s['warmup']} warm-up + {s['runs']} "
        f"timed calls per row, interleaved round-robin in blocks of {BLOCK} (each after one "
        "untimed settling call); latency = median.",
        f"- Weights: {m['weights'] or 'random (parity is meaningful, accuracy is not)'}",
        f"- Peak GEMM rates through torch, same threads, timed in the same rounds "
        f"(GFLOP/s; int8 GOP/s): {rates}",
        f"- Model: {m['macs'] / 1e9:.2f} GMACs per image; floor = 2 x MACs x batch / peak rate.",
        f"- Versions: {versions}",
        "",
        matrix_markdown(report),
    ]
    failed = [r for r in report["rows"] if r.get("status") == "failed"]
    lines += [f"- {r['key']} failed: {r['error']}" for r in failed]
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += [
        "",
        "How to read it: parity is the mean cosine of the logits and the top-1 agreement "
        "against PyTorch fp32 on the parity photos, from each artifact's manifest parity "
        "record (FAILED marks a row past the project's thresholds; the top-1 shown counts every "
        "photo, the gate only clear calls, docs/manifest.md). Accuracy is top-1 on "
        "labelled data when given (else -). Speed-up is against PyTorch eager fp32 measured "
        "in the same rounds. The floor is the time the model's MACs would take at the "
        "machine's measured peak GEMM rate for that precision (fp16 rows: the better 16-bit "
        "rate); a row can only approach it, and on a loaded machine the measured peak (and so "
        "the floor) is itself noisy. All rows and GEMMs are interleaved round-robin, so "
        "background load slows them alike; absolute numbers on a shared machine are still "
        "pessimistic. On Linux a coreml row runs the MIL reference interpreter (numpy), not "
        "Core ML.",
    ]
    return "\n".join(lines) + "\n"


def check_matplotlib() -> None:
    """Refuse ``--plot`` before any work where matplotlib is not installed."""
    try:
        found = importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # ValueError: a loaded module without a spec
        found = False
    if not found:
        raise RunnerUnavailableError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        )


def matrix_png(report: dict[str, Any]) -> bytes:
    """Latency (x) against accuracy when measured, else parity cosine (y), one point per row."""
    check_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r.get("median_ms") is not None]
    use_acc = any("top1" in (r.get("accuracy") or {}) for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if use_acc:
            y = (row.get("accuracy") or {}).get("top1")
        else:
            y = (row.get("parity") or {}).get("cosine_mean")
        if y is None:
            continue
        ax.scatter(row["median_ms"], y)
        ax.annotate(
            row["key"], (row["median_ms"], y), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    m = report["model"]
    ax.set_xlabel(f"latency ms (batch {report['settings']['batch']}, median)")
    ax.set_ylabel("top-1 accuracy" if use_acc else "parity: mean cosine vs PyTorch fp32")
    ax.set_title(f"ResTv2-{m['variant']} @ {m['image_size']}: {report['machine']['cpu']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def plot_matrix(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``matrix_png`` to ``path`` atomically (a failed plot leaves no partial file)."""
    from restv2_edge.publish import check_report_path, staged_file

    png = matrix_png(report)
    path = check_report_path(path)
    with staged_file(path, force=True) as tmp:
        tmp.write_bytes(png)
    return path
