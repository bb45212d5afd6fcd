"""``eval --ray``: every shard of every artifact a Ray task (``tasks.eval_shard_task``).

What moves over the network, per run: each artifact once per node (its files as bytes,
``payload.BYTES``; only its path with ``payload.SHARED``), each shard's encoded images once
(shared by the artifacts' tasks of that shard, which are submitted together), and back the
per-image top-5 class indices. At most ``window`` tasks (default 2 per cluster CPU) are in
flight, so the object store holds a bounded number of shards' images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from restv2_edge.evaluate import EvalPlan
from restv2_edge.scale.cluster import (
    DEFAULT_RETRIES,
    Submission,
    cluster_cpus,
    raise_failures,
    run_all,
)
from restv2_edge.scale.payload import BYTES, pack_artifact
from restv2_edge.scale.shards import Shard
from restv2_edge.scale.tasks import eval_shard_task


@dataclass
class RayEvalExecutor:
    """Runs an EvalPlan's shard tasks on the cluster ``ray`` is connected to.

    ``threads`` per task (each task asks Ray for ``cpus_per_task`` CPUs, one by default:
    as many tasks in flight as the cluster has CPUs), ``retries`` for a task whose worker
    dies, ``ship`` ``bytes`` or ``shared`` (see restv2_edge.scale.payload)."""

    ray: Any
    retries: int = DEFAULT_RETRIES
    ship: str = BYTES
    threads: int | None = 1
    device: str | None = None
    window: int | None = None
    cpus_per_task: float = 1
    on_failed: Callable[[str, str], None] = lambda ident, why: None

    def run(
        self,
        plan: EvalPlan,
        tasks: list[tuple[int, Shard, str]],
        on_result: Callable[[str, dict[str, Any]], None],
    ) -> None:
        ray = self.ray
        remote = ray.remote(
            num_cpus=self.cpus_per_task, max_retries=self.retries, retry_exceptions=False
        )(eval_shard_task)
        artifacts: dict[int, Any] = {}
        images: dict[str, Any] = {}

        def submitter(index: int, shard: Shard, ident: str) -> Callable[[], Any]:
            def submit() -> Any:
                if index not in artifacts:
                    artifacts[index] = ray.put(pack_artifact(plan.models[index], self.ship))
                if shard.id not in images:
                    images.clear()  # shard-major order: the previous shard's tasks are out
                    images[shard.id] = ray.put(plan.shard_images(shard))
                return remote.remote(artifacts[index], plan.source.class_names, images[shard.id],
                                     plan.batch_size, ident, self.threads, self.device)  # fmt: skip

            return submit

        def receiver(ident: str) -> Callable[[Any], None]:
            return lambda result: on_result(ident, result)

        submissions = [
            Submission(ident, submitter(index, shard, ident), receiver(ident))
            for index, shard, ident in tasks
        ]
        window = self.window or 2 * cluster_cpus(ray)
        failed = run_all(ray, submissions, window, self.on_failed)
        raise_failures(failed, len(submissions), self.retries)


@dataclass
class MatrixCells:
    """``bench matrix --ray``: each export + parity + accuracy cell a Ray task
    (``tasks.matrix_cell_task``). With ``ship`` ``shared`` the workers publish the artifacts
    into ``--output`` themselves (storage every node mounts); with ``bytes`` they return the
    files and the driver publishes them there. A cell that fails after its retries is a
    failed row, as a failed export is in a local run."""

    ray: Any
    address: str
    ship: str = BYTES
    retries: int = DEFAULT_RETRIES

    def describe(self) -> dict[str, Any]:
        return {"address": self.address, "ship": self.ship, "retries": self.retries,
                "cpus": cluster_cpus(self.ray)}  # fmt: skip

    def run(
        self,
        model: Any,
        cells: list[tuple[str, str, Any]],
        settings: dict[str, Any],
        progress: Callable[[str], None],
    ) -> list[dict[str, Any]]:
        from restv2_edge.scale.payload import SHARED, publish_payload
        from restv2_edge.scale.tasks import matrix_cell_task

        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=self.retries, retry_exceptions=False)(
            matrix_cell_task
        )
        model_ref, settings_ref = ray.put(model), ray.put(settings)
        rows: dict[str, dict[str, Any]] = {}

        def report() -> None:
            failed = sum(row.get("status") == "failed" for row in rows.values())
            progress(f"ray: {len(rows)}/{len(cells)} cells done, {failed} failed")

        def submission(target: str, precision: str, folder: Any) -> Submission:
            key = f"{target}/{precision}"
            output = str(folder.parent) if self.ship == SHARED else None

            def done(result: dict[str, Any]) -> None:
                row = result["row"]
                if result["payload"] is not None:
                    publish_payload(result["payload"], folder)
                row["artifact"] = str(folder)
                rows[key] = row
                report()

            submit = lambda: remote.remote(model_ref, target, precision, output,  # noqa: E731
                                           folder.name, settings_ref)  # fmt: skip
            return Submission(key, submit, done)

        def failed(key: str, why: str) -> None:
            target, precision = key.split("/")
            rows[key] = {"key": key, "target": target, "precision": precision,
                         "artifact": None, "status": "failed", "error": why}  # fmt: skip
            report()

        report()
        submissions = [submission(*cell) for cell in cells]
        run_all(ray, submissions, 2 * cluster_cpus(ray), failed)
        return [rows[f"{target}/{precision}"] for target, precision, _ in cells]
