"""One aggregated progress record for a distributed run: images per second across the
cluster, tasks done, failed and resumed. Library code only counts; the CLI draws the bar."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClusterProgress:
    """Counts finished shard tasks and their images; ``report`` gets a snapshot on each
    change (``done``/``total`` images, tasks ``done``/``failed``/``resumed``/``total``,
    ``images_per_s`` since the start of this run)."""

    total_images: int
    total_tasks: int
    report: Callable[[dict[str, Any]], None] = lambda snapshot: None
    images: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    tasks_resumed: int = 0
    computed_images: int = 0
    workers: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.perf_counter)

    def resumed(self, images: int, tasks: int) -> None:
        """Shards taken from an earlier run (not recomputed)."""
        self.images += images
        self.tasks_done += tasks
        self.tasks_resumed += tasks
        self.emit()

    def finished(self, images: int, pid: int | None = None) -> None:
        self.images += images
        self.computed_images += images
        self.tasks_done += 1
        if pid is not None:
            self.workers.add(pid)
        self.emit()

    def failed(self) -> None:
        self.tasks_failed += 1
        self.emit()

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return {
            "event": "progress",
            "done": self.images,
            "total": self.total_images,
            "tasks_done": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "tasks_resumed": self.tasks_resumed,
            "tasks_total": self.total_tasks,
            "images_per_s": self.computed_images / elapsed,
            "workers": len(self.workers),
        }

    def emit(self) -> None:
        self.report(self.snapshot())
