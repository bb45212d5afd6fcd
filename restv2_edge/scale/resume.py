"""Shard results kept next to the report, so that an interrupted run can be resumed.

``REPORT.shards/`` holds ``run.json`` (the fingerprint of the settings that decide the
predictions: data, split, limit, batch and shard size, each model's content hash) and one
``<task id>.json`` per finished shard, each written atomically (``restv2_edge.publish``): a
run killed at any moment leaves only whole results. ``--resume`` reads them back and runs
only the missing shards; a fingerprint that differs is refused. A run that completes
removes the folder after writing the report.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from restv2_edge.errors import OutputError
from restv2_edge.publish import write_report

RUN_FILE = "run.json"


def store_path(report: str | os.PathLike[str]) -> Path:
    """Where the shard results of the run writing ``report`` are kept."""
    report = Path(report)
    return report.with_name(report.name + ".shards")


class ShardStore:
    """The kept results of one run (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.fresh = True
        self.opened = False

    def start(self, resume: bool) -> dict[str, dict[str, Any]]:
        """Begin the run: with ``resume`` return the kept results (task id -> result). Nothing
        is written or removed until the first shard is saved, so a run that fails before any
        shard is done (a missing device, bad data) leaves the folder as it was."""
        self.fresh = not resume
        self.opened = False
        return self.load() if resume else {}

    def _open(self) -> None:
        """At the first save: clear an earlier run's results (a fresh run), record the
        fingerprint."""
        if self.fresh and self.folder.is_dir():
            self.clear()
        self.folder.mkdir(parents=True, exist_ok=True)
        write_report(self.folder / RUN_FILE, json.dumps(self.fingerprint, indent=2) + "\n")
        self.opened = True

    def load(self) -> dict[str, dict[str, Any]]:
        run = self.folder / RUN_FILE
        if not run.is_file():
            raise OutputError(f"nothing to resume: {self.folder} holds no kept shard results")
        try:
            recorded = json.loads(run.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise OutputError(f"{run} is unreadable: {exc}") from None
        if recorded != self.fingerprint:
            changed = sorted(k for k in self.fingerprint if recorded.get(k) != self.fingerprint[k])
            raise OutputError(
                f"the shard results kept in {self.folder} are from another run (differs in: "
                f"{', '.join(changed) or 'format'}); run without --resume to start over"
            )
        kept = {}
        for path in sorted(self.folder.glob("*.json")):
            if path.name == RUN_FILE:
                continue
            try:
                result = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue  # not ours or unreadable: that shard runs again
            kept[path.stem] = result
        return kept

    def save(self, ident: str, result: dict[str, Any]) -> None:
        """Keep one finished shard (atomic: a temp file renamed into place)."""
        if not self.opened:
            self._open()
        write_report(self.folder / f"{ident}.json", json.dumps(result) + "\n")

    def clear(self) -> None:
        """Remove the kept results (after the report is written, or before a fresh run)."""
        for path in self.folder.glob("*.json"):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)
