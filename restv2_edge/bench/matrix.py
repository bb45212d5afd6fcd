"""``bench matrix``: export one variant to every installed target and precision, measure all.

Rows: PyTorch eager fp32 (the baseline), then each (target, precision) the converters support
(int8 where calibration/ has a recipe). Each row gets its parity record, size, latency in
the same interleaved rounds as the others and as the GEMMs behind the floors, and top-1
accuracy when labelled data is given. A failed export is a row with an error, not the end
of the matrix. With ``--ray`` the cells (export + parity + accuracy) run as Ray tasks
(restv2_edge.scale.executor) and the timing stays here, on one machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.bench.artifacts import artifact_bytes
from restv2_edge.bench.floors import floor_ms, gemm_cases, rate_for, rates_from
from restv2_edge.bench.machine import machine_info, package_versions, usable_cores
from restv2_edge.bench.timing import (
    BLOCK,
    ORDER,
    Progress,
    bench_input,
    check_counts,
    summarize,
    time_round_robin,
)
from restv2_edge.errors import DataError, RestV2EdgeError, RunnerUnavailableError, first_line

FIXTURE_NAME = "restv2_cifar10.safetensors"


class EagerRunner:
    """PyTorch eager fp32 on the same threads: the speed-up baseline of the matrix."""

    def __init__(self, model: Any, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = model.eval()
        self.description = f"PyTorch {torch.__version__} eager fp32"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


def fixture_checkpoint_path() -> Path:
    """Where the committed CIFAR-10 fixture lives in a checkout."""
    return Path(__file__).resolve().parents[2] / "tests" / "fixtures" / FIXTURE_NAME


def default_accuracy_data(weights: str | os.PathLike[str] | None) -> Path | None:
    """CIFAR-10 test.tar from the shared data when ``weights`` is the committed fixture."""
    if weights is None:
        return None
    path = Path(weights).resolve()
    if path != fixture_checkpoint_path() and path.name != FIXTURE_NAME:
        return None
    from restv2_edge.data import shared_data_root

    tar = shared_data_root() / "cifar10" / "test.tar"
    return tar if tar.is_file() else None


def matrix_plan(targets: list[str], int8: bool) -> list[tuple[str, str]]:
    """(target, precision) pairs: every float precision, plus int8 where a recipe exists."""
    from restv2_edge.calibration.recipes import has_int8_recipe
    from restv2_edge.converters.base import get_converter

    plan = []
    for target in targets:
        floats = get_converter(target).precisions
        plan += [(target, precision) for precision in ("fp32", "fp16") if precision in floats]
        if int8 and has_int8_recipe(target):
            plan.append((target, "int8"))
    return plan


def resolve_targets(targets: list[str] | None) -> list[str]:
    """The requested targets (each must be installed), or every installed one."""
    from restv2_edge.converters.base import installed_targets

    available = installed_targets()
    if not targets:
        return available
    missing = [t for t in targets if t not in available]
    if missing:
        raise RunnerUnavailableError(f"target(s) not installed: {', '.join(missing)}")
    return targets


def run_matrix(
    variant: Any = "T",
    image_size: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] = "exports/bench",
    targets: list[str] | None = None,
    int8: bool = False,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    batch: int = 1,
    parity_data: str | os.PathLike[str] | None = None,
    parity_limit: int | None = 16,
    accuracy_data: str | os.PathLike[str] | None = None,
    accuracy_split: str | None = None,
    accuracy_limit: int | None = 500,
    calib: str | os.PathLike[str] | None = None,
    calib_data: str | os.PathLike[str] | None = None,
    calib_size: int = 64,
    gemm_size: int = 1024,
    progress: Progress = lambda step: None,
    cluster: Any = None,
) -> dict[str, Any]:
    """Export ``variant`` to every installed target/precision, check parity, measure all.

    int8 rows calibrate on ``calib`` (a saved calibration set) or ``calib_size`` images of
    ``calib_data`` (default: the shared ImageNet sample) with each target's recipe defaults.
    With ``cluster`` (a ``restv2_edge.scale.executor.MatrixCells``) each export + parity +
    accuracy cell is a Ray task; the artifacts land in ``output`` and are timed here, in the
    same interleaved rounds as a local run, so the table is the same.
    """
    from restv2_edge.complexity import total_macs
    from restv2_edge.config import variant_name
    from restv2_edge.factory import create_model

    check_counts(warmup, runs, batch)
    threads = threads or usable_cores()
    targets = resolve_targets(targets)
    progress("build model")
    model = create_model(variant, image_size, None, weights)
    name = variant_name(model.config) or "custom"
    macs = total_macs(model)
    accuracy_data = accuracy_data or default_accuracy_data(weights)

    eager = EagerRunner(model, threads)
    x = (
        np.random.default_rng(0)
        .standard_normal((batch, 3, model.image_size, model.image_size))
        .astype(np.float32)
    )
    calls: dict[str, Callable[[], Any]] = {"pytorch/fp32": lambda: eager(x)}
    rows: list[dict[str, Any]] = [_eager_row(model, eager)]
    notes: list[str] = []
    calibration: list[Any] = []

    def calibration_set() -> Any:  # built once, at the first int8 row
        if not calibration:
            progress("calibration set")
            calibration.append(_calibration(model, calib, calib_data, calib_size, notes))
        return calibration[0]

    cells = [
        (target, precision, Path(output) / f"restv2-{name}-{model.image_size}-{target}-{precision}")
        for target, precision in matrix_plan(targets, int8)
    ]
    if cluster is not None:
        needs_int8 = any(precision == "int8" for _, precision, _ in cells)
        settings = {"threads": None, "parity_data": parity_data, "parity_limit": parity_limit,
                    "calibration": calibration_set() if needs_int8 else None,
                    "accuracy_data": accuracy_data, "accuracy_split": accuracy_split,
                    "accuracy_limit": accuracy_limit}  # fmt: skip
        opened = [_open_row(row, threads) for row in cluster.run(model, cells, settings, progress)]
    else:
        opened = []
        for target, precision, folder in cells:
            progress(f"export {target}/{precision}")
            opened.append(_export_row(model, target, precision, folder, threads, parity_data,
                                      parity_limit, calibration_set))  # fmt: skip
    for row, manifest, runner in opened:
        rows.append(row)
        if runner is not None:
            xa = bench_input(manifest, batch)
            calls[row["key"]] = lambda runner=runner, xa=xa: runner(xa)

    # the GEMMs behind the floors run inside the same rounds: same threads, same machine load
    gemms = gemm_cases(gemm_size)
    calls.update({f"gemm/{gemm}": case for gemm, (case, _) in gemms.items()})
    times = time_round_robin(calls, warmup, runs, progress, BLOCK)
    rates = rates_from(gemms, {gemm: times[f"gemm/{gemm}"] for gemm in gemms})
    base = float(np.median(times["pytorch/fp32"]))
    for row in rows:
        if row["key"] not in times:
            continue
        row.update(summarize(times[row["key"]], batch))
        row["speedup_vs_eager"] = base / (row["median_ms"] / 1e3)
        row["floor_gemm"], rate = rate_for(row["precision"], rates)
        row["floor_ms"] = floor_ms(macs, batch, rate)
    if accuracy_data is not None:
        for row in rows:
            source = row["artifact"] or weights
            if row.get("status") == "failed" or source is None or "accuracy" in row:
                continue
            progress(f"accuracy {row['key']}")
            row["accuracy"] = _accuracy(source, accuracy_data, accuracy_split, accuracy_limit)
    return {
        "kind": "matrix",
        "machine": machine_info(),
        "versions": package_versions(),
        "model": {
            "variant": name,
            "config": model.config.to_dict(),
            "image_size": model.image_size,
            "macs": macs,
            "weights": str(weights) if weights else None,
        },
        "settings": {
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": batch,
            "order": ORDER,
            "targets": targets,
            "int8": int8,
            "parity_data": str(parity_data) if parity_data else "default",
            "parity_limit": parity_limit,
            "accuracy_data": str(accuracy_data) if accuracy_data else None,
            "accuracy_split": accuracy_split,
            "accuracy_limit": accuracy_limit,
            "gemm_size": gemm_size,
            "ray": cluster.describe() if cluster is not None else None,
        },
        "peak_rates": rates,
        "notes": notes,
        "rows": rows,
    }


def _eager_row(model: Any, eager: EagerRunner) -> dict[str, Any]:
    return {
        "key": "pytorch/fp32",
        "target": "pytorch",
        "precision": "fp32",
        "runner": eager.description,
        "status": "reference",
        "size_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6,
        "parity": {
            "status": "reference",
            "cosine_mean": 1.0,
            "cosine_min": 1.0,
            "top1_agreement": 1.0,
        },
        "artifact": None,
    }


def _export_row(
    model: Any,
    target: str,
    precision: str,
    folder: Path,
    threads: int,
    parity_data: Any,
    parity_limit: int | None,
    calibration_set: Callable[[], Any],
) -> tuple[dict[str, Any], Any, Any]:
    """Export and open one (target, precision) -> (row, manifest, runner).

    A failure is recorded in the row (status, error); manifest and runner are then None.
    """
    from restv2_edge.artifact import open_artifact
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.export import export_artifact

    row: dict[str, Any] = {
        "key": f"{target}/{precision}",
        "target": target,
        "precision": precision,
        "artifact": str(folder),
    }
    try:
        request = ExportRequest(precision=precision)
        if precision == "int8":
            request.calibration = calibration_set()
            request.quantization = {}
        _, manifest = export_artifact(
            model,
            target,
            folder,
            request,
            force=True,
            verify=False,
            parity_data=parity_data,
            parity_limit=parity_limit,
        )
        _, runner = open_artifact(folder, threads)
    except RestV2EdgeError as exc:
        row.update(status="failed", error=first_line(exc))
        return row, None, None
    except Exception as exc:  # a backend crash must not end the whole matrix
        row.update(status="failed", error=f"{type(exc).__name__}: {first_line(exc)}")
        return row, None, None
    record = manifest.parity or {}
    metrics = record.get("metrics", {})
    row.update(
        status="ok",
        runner=runner.description,
        size_mb=artifact_bytes(manifest) / 1e6,
        parity={
            "status": record.get("status", "not run"),
            "cosine_mean": metrics.get("cosine_mean"),
            "cosine_min": metrics.get("cosine_min"),
            "top1_agreement": metrics.get("top1_agreement"),
            "max_abs_diff": metrics.get("max_abs_diff"),
            "images": metrics.get("images"),
        },
    )
    return row, manifest, runner


def export_cell(
    model: Any,
    target: str,
    precision: str,
    folder: Path,
    threads: int | None = None,
    parity_data: Any = None,
    parity_limit: int | None = 16,
    calibration: Any = None,
    accuracy_data: Any = None,
    accuracy_split: str | None = None,
    accuracy_limit: int | None = 500,
) -> dict[str, Any]:
    """One cell of the matrix as a unit of work (a Ray task of ``bench matrix --ray``):
    export + parity, then top-1/top-5 on ``accuracy_data`` when given. Returns the row."""
    row, _, _ = _export_row(model, target, precision, folder, threads or usable_cores(),
                            parity_data, parity_limit, lambda: calibration)  # fmt: skip
    if accuracy_data is not None and row.get("status") == "ok":
        row["accuracy"] = _accuracy(folder, accuracy_data, accuracy_split, accuracy_limit)
    return row


def _open_row(row: dict[str, Any], threads: int) -> tuple[dict[str, Any], Any, Any]:
    """A row exported elsewhere, with its artifact opened here (verified) for the timing."""
    if row.get("status") != "ok":
        return row, None, None
    from restv2_edge.artifact import open_artifact

    try:
        manifest, runner = open_artifact(row["artifact"], threads)
    except RestV2EdgeError as exc:
        row.update(status="failed", error=first_line(exc))
        return row, None, None
    return row, manifest, runner


def _calibration(model: Any, calib: Any, calib_data: Any, calib_size: int, notes: list[str]) -> Any:
    from restv2_edge.calibration.dataset import request_calibration
    from restv2_edge.data import default_photo_dir

    if calib is None and calib_data is None:
        calib_data = default_photo_dir()
        if not Path(calib_data).is_dir():
            raise DataError(f"int8 needs calibration images: --calib-data ({calib_data} missing)")
    options = {"calib": calib, "calib_data": calib_data, "calib_size": calib_size}

    def note(text: str) -> None:  # calibration reports in rich markup; the doc wants text
        notes.append(text.replace("[yellow]", "").replace("[/]", ""))

    found = request_calibration(options, model.preprocessing, note)
    notes.append(f"int8 calibration: {found.summary()}")
    return found


def _accuracy(source: Any, data: Any, split: str | None, limit: int | None) -> dict[str, Any]:
    from restv2_edge.evaluate import evaluate

    try:
        result = evaluate(source, data, split, limit)
    except RestV2EdgeError as exc:
        return {"error": first_line(exc)}
    return {"top1": result["top1"], "top5": result["top5"], "images": result["images"]}
