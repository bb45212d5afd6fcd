"""The ``restv2-edge eval`` command's work, local or on Ray (CLI layer: it owns the progress
bar and the printed lines; cli.py declares the options).

The same plan and merge serve both: shards of the sorted image list, each shard of each
model a task (in this process, or a Ray task), results kept beside ``--json`` as they come
in (``scale.resume``) and merged by task id into one report per model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from restv2_edge.publish import write_report


def eval_command(
    models: tuple[str, ...],
    data: str,
    split: str | None,
    limit: int | None,
    json_file: str | None,
    predictions: bool,
    device: str | None,
    ray_address: str | None,
    resume: bool,
    shard_size: int,
    retries: int,
    shared_storage: bool,
    out: Any,
) -> None:
    """Evaluate, write the report (one model: its object; several: ``{"results": [...]}``),
    drop the kept shard results, print one line per model."""
    check_eval_models(models)
    with eval_progress(out) as update:
        reports = run_eval(models, data, split, limit, json_file, device, ray_address, resume,
                           shard_size, retries, shared_storage, update)  # fmt: skip
    if json_file:
        from restv2_edge.evaluate import report_without_predictions
        from restv2_edge.scale.resume import store_path

        kept = reports if predictions else [report_without_predictions(r) for r in reports]
        body = kept[0] if len(kept) == 1 else {"results": kept}
        write_report(json_file, json.dumps(body, indent=2) + "\n")
        shutil.rmtree(store_path(json_file), ignore_errors=True)
    for report in reports:
        print_eval(out, report)


def check_eval_models(models: tuple[str, ...]) -> None:
    """A features artifact has no classes: refused before any work."""
    from restv2_edge.artifact import require_classifier
    from restv2_edge.manifest import Manifest

    for model in models:
        if Path(model).is_dir():
            require_classifier(Manifest.read(model), model, "eval")


@contextlib.contextmanager
def eval_progress(out: Any) -> Iterator[Callable[[dict[str, Any]], None]]:
    """One bar for the whole run: images, images/s across the cluster, tasks done/failed."""
    from rich.progress import Progress

    with Progress(console=out, transient=True) as bar:
        task = bar.add_task("eval", total=None)

        def update(event: dict[str, Any]) -> None:
            bar.update(task, total=event["total"], completed=event["done"],
                       description=f"eval {event['images_per_s']:.0f} img/s, tasks "
                       f"{event['tasks_done']}/{event['tasks_total']} done, "
                       f"{event['tasks_failed']} failed")  # fmt: skip

        yield update


def run_eval(
    models: tuple[str, ...],
    data: str,
    split: str | None,
    limit: int | None,
    json_file: str | None,
    device: str | None,
    ray_address: str | None,
    resume: bool,
    shard_size: int,
    retries: int,
    shared_storage: bool,
    update: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Plan the shards, take the kept ones (--resume), run the rest here or on Ray, merge."""
    from restv2_edge.evaluate import LocalExecutor, plan_eval, run_plan
    from restv2_edge.scale.progress import ClusterProgress
    from restv2_edge.scale.resume import ShardStore, store_path

    plan = plan_eval(list(models), data, split, limit, shard_size=shard_size)
    store = ShardStore(store_path(json_file), plan.fingerprint) if json_file else None
    done = store.start(resume) if store else {}
    tasks = plan.task_ids()
    kept = {ident: done[ident] for _, _, ident in tasks if ident in done}
    progress = ClusterProgress(len(plan.source.items) * len(models), len(tasks), update)
    progress.resumed(sum(len(r["keys"]) + len(r["skipped"]) for r in kept.values()), len(kept))

    def finished(ident: str, result: dict[str, Any]) -> None:
        if store:
            store.save(ident, result)
        progress.finished(len(result["keys"]) + len(result["skipped"]), result.get("pid"))

    if ray_address is None:
        return run_plan(plan, LocalExecutor(device), kept, finished)
    from restv2_edge.scale.cluster import connected
    from restv2_edge.scale.executor import RayEvalExecutor
    from restv2_edge.scale.payload import BYTES, SHARED

    with connected(ray_address) as ray:
        ship = SHARED if shared_storage else BYTES
        executor = RayEvalExecutor(ray, retries, ship, device=device,
                                   on_failed=lambda *_: progress.failed())  # fmt: skip
        return run_plan(plan, executor, kept, finished)


def print_eval(out: Any, report: dict[str, Any]) -> None:
    """One line per model, and its worst classes with what they were taken for."""
    out.print(f"{report['model']}: {report['runner']}: top-1 {report['top1']:.2%}  "
              f"top-5 {report['top5']:.2%}  on {report['images']} images "
              f"({report['skipped']} skipped)")  # fmt: skip
    worst = []
    for entry in report["worst_classes"][:3]:
        confused = ", ".join(f"{c['class']} {c['count']}" for c in entry["confused_with"][:2])
        worst.append(
            f"{entry['class']} {entry['top1']:.0%}" + (f" ({confused})" if confused else "")
        )
    if worst:
        out.print("  worst: " + "; ".join(worst))
