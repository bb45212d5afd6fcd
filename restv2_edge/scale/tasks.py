"""What runs on a Ray worker. Plain functions (no ray import): ``scale.cluster`` wraps them
as remote tasks, and they can be called in-process the same way.

A worker process keeps the last artifact it opened (runtimes take seconds to load a model),
keyed by the manifest hash; the artifact was verified file by file when it was opened.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from restv2_edge.evaluate import Classifier, evaluate_shard, load_classifier
from restv2_edge.scale.payload import materialize, pack_artifact

_OPENED: dict[tuple[str, int | None, str | None], Classifier] = {}


def open_on_worker(payload: dict[str, Any], threads: int | None, device: str | None) -> Classifier:
    """The artifact's classifier in this process: materialized, verified, opened once."""
    key = (payload["key"], threads, device)
    if key not in _OPENED:
        folder = materialize(payload)
        _OPENED.clear()  # one model in memory per worker process
        _OPENED[key] = load_classifier(folder, threads, device)
    return _OPENED[key]


def eval_shard_task(
    payload: dict[str, Any],
    dataset_classes: list[str],
    images: list[tuple[str, int, bytes]],
    batch_size: int,
    ident: str,
    threads: int | None = 1,
    device: str | None = None,
) -> dict[str, Any]:
    """One shard of one artifact: per-image top-5 predictions (``evaluate.evaluate_shard``),
    with the worker's host and pid (which process computed it)."""
    classifier = open_on_worker(payload, threads, device)
    result = evaluate_shard(classifier, dataset_classes, images, batch_size, ident)
    result["host"] = socket.gethostname()
    return result


def matrix_cell_task(
    model: Any,
    target: str,
    precision: str,
    output: str | None,
    folder_name: str,
    cell: dict[str, Any],
) -> dict[str, Any]:
    """One export + parity + accuracy cell of ``bench matrix --ray``.

    With ``output`` (shared storage) the artifact is published there by the worker; without
    it the worker exports into a temp folder and returns the files as bytes for the driver
    to publish. Returns ``{"row": ..., "payload": ... or None, "pid": ...}``."""
    from restv2_edge.bench.matrix import export_cell

    if output is not None:
        row = export_cell(model, target, precision, Path(output) / folder_name, **cell)
        return {"row": row, "payload": None, "pid": os.getpid(), "host": socket.gethostname()}
    with tempfile.TemporaryDirectory(prefix="restv2-edge-cell-") as work:
        folder = Path(work) / folder_name
        row = export_cell(model, target, precision, folder, **cell)
        payload = pack_artifact(folder) if row.get("status") == "ok" else None
    return {"row": row, "payload": payload, "pid": os.getpid(), "host": socket.gethostname()}
