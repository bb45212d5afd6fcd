"""Peers: the project's artifacts timed beside each toolchain's plain pipeline.

A peer (``TargetDescriptor.peers``) is what a user gets from the toolchain's defaults on the
independent official-structure network. This module builds both sides from the same
weights, times them interleaved in one process (``timing.time_round_robin`` in blocks, with
the GEMMs behind the floors in the same rounds), checks each against the reference model on
real photos, and judges the performance goals. Two phases, so the slow exports can run
ahead and the timing later on a quiet machine: ``build_project`` fills a work folder
(reused where its record and every artifact still verify), ``measure`` opens it and times.
A row that fails to build is a row with its one-line error, never the end of the run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.bench.peer_goals import (  # noqa: F401 (the report's API)
    goals,
    margin_text,
    value_format,
)
from restv2_edge.bench.timing import (
    BLOCK,
    ORDER,
    Progress,
    round_medians,
    summarize,
    time_round_robin,
)
from restv2_edge.errors import ArtifactError, DataError, RestV2EdgeError, first_line

#: the record of a work folder (weights, calibration set, artifacts built)
WORK_RECORD = "peers-work.json"
WORK_FORMAT = "restv2-edge-peers-work"
#: the precision classes a row is compared in (``PeerPipeline.precision``)
CLASSES = ("fp32", "half", "int8")


def precision_class(precision: str) -> str:
    """fp32, int8, or ``half`` for the 16-bit float precisions (fp16, bf16)."""
    return precision if precision in ("fp32", "int8") else "half"


def project_plan(targets: Iterable[str], classes: Iterable[str] = CLASSES) -> list[tuple[str, str]]:
    """(target, precision): fp32, each 16-bit precision the target exports, int8 where
    calibration/ has a recipe; only the precision classes in ``classes``."""
    from restv2_edge.calibration.recipes import supported_precisions

    wanted = set(classes)
    plan = []
    for target in targets:
        precisions = sorted(supported_precisions(target), key=lambda p: _class_order(p))
        plan += [(target, p) for p in precisions if precision_class(p) in wanted]
    return plan


def _class_order(precision: str) -> tuple[int, str]:
    return CLASSES.index(precision_class(precision)), precision


def peer_plan(
    targets: Iterable[str], classes: Iterable[str] = CLASSES, extra: dict[str, tuple] | None = None
) -> list[tuple[str, Any]]:
    """(target, PeerPipeline) for every peer its descriptor declares (plus ``extra``'s)."""
    from restv2_edge.converters.base import get_descriptor

    wanted = set(classes)
    plan = []
    for target in targets:
        peers = (*get_descriptor(target).peers, *(extra or {}).get(target, ()))
        plan += [(target, peer) for peer in peers if peer.precision in wanted]
    return plan


def file_digest(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


# -- the work folder --------------------------------------------------------------------------


def read_work_record(work: Path) -> dict[str, Any] | None:
    """The work folder's record, or None where there is none (or not one of ours)."""
    path = work / WORK_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("format") == WORK_FORMAT else None


def write_work_record(work: Path, record: dict[str, Any]) -> None:
    from restv2_edge.publish import write_report

    write_report(work / WORK_RECORD, json.dumps(record, indent=2) + "\n")


def new_work_record(model: Any, weights: Path) -> dict[str, Any]:
    """What identifies a build: the weights file's digest, the model config and size."""
    return {
        "format": WORK_FORMAT,
        "weights": {"path": str(weights), "sha256": file_digest(weights)},
        "config": model.config.to_dict(),
        "image_size": list(model.input_hw),
        "artifacts": {},
    }


def same_build(record: dict[str, Any] | None, fresh: dict[str, Any]) -> bool:
    """A previous record for the same weights, config and size (its artifacts may be reused)."""
    if record is None:
        return False
    same = all(record.get(key) == fresh[key] for key in ("config", "image_size"))
    return same and record.get("weights", {}).get("sha256") == fresh["weights"]["sha256"]


def artifact_folder(work: Path, target: str, precision: str) -> Path:
    return work / "artifacts" / f"{target}-{precision}"


def reusable(folder: Path, entry: dict[str, Any] | None, target: str, precision: str) -> bool:
    """The folder is the artifact the record names: built ok, every file verifies against
    its manifest, the manifest is the one recorded (not another artifact put there), and its
    graph form is the one the target's converter chooses now (not one an older version
    exported)."""
    from restv2_edge.converters.base import ExportRequest, get_descriptor
    from restv2_edge.manifest import MANIFEST_NAME, verify_files

    if not entry or entry.get("status") != "ok" or not folder.is_dir():
        return False
    try:
        manifest = verify_files(folder)
    except RestV2EdgeError:
        return False
    recorded = entry.get("manifest_sha256")
    chosen = get_descriptor(target).converter.graph_form_for(ExportRequest(precision=precision))
    return (
        manifest.target == target
        and manifest.precision == precision
        and manifest.graph_form == chosen
        and recorded == file_digest(folder / MANIFEST_NAME)
    )


def calibration_set(work: Path, model: Any, data: Any, size: int, progress: Progress) -> Any:
    """The project's calibration set, saved in the work folder and reused from there."""
    from restv2_edge.calibration.dataset import (
        build_calibration_set,
        load_calibration_set,
        save_calibration_set,
    )
    from restv2_edge.data import default_photo_dir

    folder = work / "calibration"
    if folder.is_dir():
        try:
            found = load_calibration_set(folder)
            found.check_matches(model.preprocessing, model.input_hw)
            if found.size == size:
                return found
        except RestV2EdgeError:
            pass
    progress(f"calibration set: {size} images")
    source = data or default_photo_dir()
    if not Path(source).exists():
        raise DataError(f"int8 rows need calibration images ({source} missing)")
    found = build_calibration_set(source, size, model.preprocessing, hw=model.input_hw)
    save_calibration_set(found, folder, force=True)
    return found


def build_project(
    model: Any,
    work: Path,
    weights: Path,
    plan: list[tuple[str, str]],
    calibration: Callable[[], Any],
    parity_limit: int = 8,
    progress: Progress = lambda step: None,
) -> dict[str, Any]:
    """Export every (target, precision) of ``plan`` into ``work`` through the export
    pipeline (what ``restv2-edge export`` runs), reusing what still verifies; the record."""
    work.mkdir(parents=True, exist_ok=True)
    fresh = new_work_record(model, weights)
    old = read_work_record(work)
    record = old if same_build(old, fresh) else fresh
    for target, precision in plan:
        key = f"{target}/{precision}"
        folder = artifact_folder(work, target, precision)
        if reusable(folder, record["artifacts"].get(key), target, precision):
            progress(f"reuse {key}")
            continue
        progress(f"export {key}")
        record["artifacts"][key] = export_one(
            model, target, precision, folder, calibration, parity_limit
        )
        write_work_record(work, record)  # keep what is done if a later export crashes
    write_work_record(work, record)
    return record


def export_one(
    model: Any,
    target: str,
    precision: str,
    folder: Path,
    calibration: Callable[[], Any],
    parity_limit: int,
) -> dict[str, Any]:
    """One export -> its record entry (status ok with the manifest's digest, or failed)."""
    import time

    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.export import export_artifact
    from restv2_edge.manifest import MANIFEST_NAME

    start = time.perf_counter()
    try:
        request = ExportRequest(precision=precision)
        if precision == "int8":
            request.calibration = calibration()
            request.quantization = {}
        _, manifest = export_artifact(
            model, target, folder, request, force=True, verify=False, parity_limit=parity_limit
        )
    except Exception as exc:  # a backend crash is this row's failure, not the run's
        return {"status": "failed", "error": failure_line(exc)}
    return {
        "status": "ok",
        "export_s": round(time.perf_counter() - start, 1),
        "parity": (manifest.parity or {}).get("status"),
        "manifest_sha256": file_digest(folder / MANIFEST_NAME),
    }


def failure_line(exc: BaseException) -> str:
    """A failure as one line: the project's message, or the exception type and first line."""
    if isinstance(exc, RestV2EdgeError):
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


# -- the timing phase -------------------------------------------------------------------------


def open_project_rows(
    work: Path, record: dict[str, Any], plan: list[tuple[str, str]], threads: int | None
) -> list[dict[str, Any]]:
    """A row per planned artifact: opened through its runner (``open_artifact``: every file
    verified first), or failed with the build's or the opening's one line."""
    from restv2_edge.artifact import open_artifact

    rows = []
    for target, precision in plan:
        key = f"{target}/{precision}"
        entry = record["artifacts"].get(key)
        row = _row("project", target, precision, key)
        folder = artifact_folder(work, target, precision)
        if entry is None:
            row.update(status="failed", error="not built (run the build phase)")
        elif entry["status"] != "ok":
            row.update(status="failed", error=entry["error"])
        elif not reusable(folder, entry, target, precision):
            error = f"{folder} does not verify or is not in the graph form exported now; rebuild it"
            row.update(status="failed", error=error)
        else:
            try:
                manifest, runner = open_artifact(folder, threads)
            except Exception as exc:
                row.update(status="failed", error=failure_line(exc))
            else:
                row.update(status="ok", runner=runner.description, artifact=str(folder))
                row["parity_gate"] = (manifest.parity or {}).get("status")
                row["graph_form"] = manifest.graph_form
                row["_run"] = runner
        rows.append(row)
    return rows


def _row(side: str, target: str, precision: str, key: str, label: str = "") -> dict[str, Any]:
    return {
        "key": key,
        "side": side,
        "target": target,
        "precision": precision,
        "class": precision_class(precision),
        "label": label or f"restv2-edge {target} {precision}",
    }


def build_peer_rows(
    peers: list[tuple[str, Any]],
    reference: Any,
    example: np.ndarray,
    calibration: Callable[[], np.ndarray],
    work: Path,
    progress: Progress,
) -> list[dict[str, Any]]:
    """A row per peer: its ``build`` run on the reference model (failed: its one line)."""
    import time

    rows = []
    for index, (target, peer) in enumerate(peers):
        row = _row("peer", target, peer.precision, f"peer {target}/{peer.label}", peer.label)
        folder = work / "peers" / f"{target}-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        progress(f"build peer {target}: {peer.label}")
        start = time.perf_counter()
        try:
            images = calibration() if peer.precision == "int8" else None
            run = peer.build(reference, example.copy(), images, folder)
            np.asarray(run(example.copy()), dtype=np.float32)  # it runs, once
        except Exception as exc:
            row.update(status="failed", error=failure_line(exc))
        else:
            row.update(
                status="ok", runner=peer.label, build_s=round(time.perf_counter() - start, 1)
            )
            row["_run"] = run
        rows.append(row)
    return rows


def accuracy(rows: list[dict[str, Any]], reference: Any, photos: Any) -> None:
    """Each row's logits against the reference model's on the photos (peers: one image per
    call, the shape they were built for); a row that cannot run them fails here."""
    from restv2_edge.parity import compare, torch_logits

    expected = torch_logits(reference, photos.images)
    for row in rows:
        if "_run" not in row:
            continue
        try:
            got = _logits(row, photos.images)
            metrics = compare(expected, got)
        except Exception as exc:  # it would fail in the timing rounds too: a failed row
            row.update(status="failed", error=f"on the photos: {failure_line(exc)}")
            del row["_run"]
            continue
        row["accuracy"] = {
            key: metrics[key]
            for key in ("images", "max_abs_diff", "cosine_min", "cosine_mean", "top1_agreement")
        }


def _logits(row: dict[str, Any], images: np.ndarray) -> np.ndarray:
    run = row["_run"]
    if row["side"] == "project":
        out = run(images)
    else:
        out = np.concatenate([np.asarray(run(images[i : i + 1])) for i in range(len(images))])
    if isinstance(out, list):
        raise DataError("a features artifact has no logits to compare")
    return np.asarray(out, dtype=np.float32)


def time_rows(
    rows: list[dict[str, Any]],
    example: np.ndarray,
    warmup: int,
    runs: int,
    gemm_size: int,
    progress: Progress,
) -> dict[str, float | None]:
    """Every runnable row and the floors' GEMMs in the same interleaved rounds; each row
    gets its latency statistics; returns the GEMM peak rates."""
    from restv2_edge.bench.floors import gemm_cases, rates_from

    calls: dict[str, Callable[[], Any]] = {}
    for row in rows:
        if "_run" in row:
            calls[row["key"]] = lambda run=row["_run"], x=example.copy(): run(x)
    gemms = gemm_cases(gemm_size)
    calls.update({f"gemm/{name}": case for name, (case, _) in gemms.items()})
    times = time_round_robin(calls, warmup, runs, progress, BLOCK)
    for row in rows:
        if row["key"] in times:
            row["latency"] = summarize(times[row["key"]], int(example.shape[0]))
            row["ms"] = row["latency"]["median_ms"]
            row["rounds_ms"] = round_medians(times[row["key"]], BLOCK)
    return rates_from(gemms, {name: times[f"gemm/{name}"] for name in gemms})


def floors(macs: int, rates: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    """The MAC floor of each precision class at batch 1: {class: {gemm, rate, ms}}."""
    from restv2_edge.bench.floors import floor_ms, rate_for

    found = {}
    for name, precision in (("fp32", "fp32"), ("half", "bf16"), ("int8", "int8")):
        gemm, rate = rate_for(precision, rates)
        found[name] = {"gemm": gemm, "rate": rate, "ms": floor_ms(macs, 1, rate)}
    return found


# -- the whole run ----------------------------------------------------------------------------


def measure(
    model: Any,
    reference: Any,
    work: Path,
    plan: list[tuple[str, str]],
    peers: list[tuple[str, Any]],
    calibration: Callable[[], Any],
    *,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    photos: Any = None,
    photo_limit: int = 16,
    gemm_size: int = 1024,
    progress: Progress = lambda step: None,
) -> dict[str, Any]:
    """The timing phase on a built work folder: open the artifacts, build the peers, check
    every row against ``reference`` on photos, time all interleaved, judge the goals."""
    from restv2_edge.bench.machine import machine_info, package_versions, usable_cores
    from restv2_edge.complexity import total_macs
    from restv2_edge.config import variant_name
    from restv2_edge.parity import load_inputs

    record = read_work_record(work)
    if record is None:
        raise ArtifactError(f"{work} has no {WORK_RECORD}: run the build phase first")
    threads = threads or usable_cores()
    example = np.random.default_rng(0).standard_normal((1, 3, *model.input_hw)).astype(np.float32)
    rows = open_project_rows(work, record, plan, threads)
    images = (lambda: calibration().inputs) if peers else (lambda: None)
    rows += build_peer_rows(peers, reference, example, images, work, progress)
    progress("accuracy on photos")
    inputs = load_inputs(model.preprocessing, photos, photo_limit, hw=_stretch_hw(model))
    accuracy(rows, reference, inputs)
    rates = time_rows(rows, example, warmup, runs, gemm_size, progress)
    for row in rows:
        row.pop("_run", None)
    macs = total_macs(model)
    return {
        "kind": "peers",
        "machine": machine_info(),
        "versions": package_versions(),
        "model": {
            "variant": variant_name(model.config) or "custom",
            "config": model.config.to_dict(),
            "image_size": list(model.input_hw),
            "macs": macs,
            "weights": record["weights"],
        },
        "settings": {
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": 1,
            "order": ORDER,
            "photos": inputs.source,
            "gemm_size": gemm_size,
        },
        "peak_rates": rates,
        "floors": floors(macs, rates),
        "rows": rows,
        "goals": goals(rows),
    }


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several timing runs (separate processes) of one work folder as one report: each row's
    ms the median of the runs' medians, the GEMM peaks likewise; each row's rounds are the
    runs' rounds in order, so a goal's per-round ratios pool every process's rounds.
    The machine's speed drifts over tens of seconds (docs/graph-forms.md), so one run's
    ratios can differ from the next's; the runs' own values stay in ``ms_runs`` and
    ``processes``."""
    if not reports:
        raise DataError("no report to merge")
    first = reports[0]
    weights = {r["model"]["weights"]["sha256"] for r in reports}
    if len(weights) != 1:
        raise DataError("the reports were measured on different weights")
    by_key = [{row["key"]: row for row in r["rows"]} for r in reports]
    for key in by_key[0]:
        forms = {found[key].get("graph_form") for found in by_key if key in found}
        if len(forms) > 1:
            raise DataError(
                f"{key} was measured in different graph forms: {sorted(map(str, forms))}"
            )
    rows = []
    for row in first["rows"]:
        values = [found[row["key"]].get("ms") for found in by_key if row["key"] in found]
        merged = dict(row)
        if all(value is not None for value in values) and len(values) == len(reports):
            merged["ms_runs"] = values
            merged["ms"] = float(np.median(values))
            rounds = [found[row["key"]].get("rounds_ms") for found in by_key]
            merged["rounds_ms"] = [ms for run in rounds for ms in run] if all(rounds) else None
        rows.append(merged)
    rates = {}
    for name in first["peak_rates"]:
        values = [r["peak_rates"].get(name) for r in reports]
        rates[name] = float(np.median(values)) if None not in values else None
    processes = [{"command": r.get("command"), "goals": r["goals"]} for r in reports]
    return {
        **{key: value for key, value in first.items() if key != "command"},
        "machine": first["machine"],
        "settings": {**first["settings"], "processes": len(reports)},
        "peak_rates": rates,
        "floors": floors(first["model"]["macs"], rates),
        "rows": rows,
        "goals": goals(rows),
        "processes": processes,
    }


def _stretch_hw(model: Any) -> tuple[int, int] | None:
    height, width = model.input_hw
    return None if height == width else (height, width)
