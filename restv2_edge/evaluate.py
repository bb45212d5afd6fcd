"""Top-1/top-5 accuracy of a checkpoint (PyTorch) or an exported artifact (its runner).

Evaluation is split into shards of the sorted image list (``restv2_edge.scale.shards``); each
shard of each model yields per-image top-5 predictions, and the report is merged from the
shard results by shard id. A local run evaluates the shards one after the other in this
process; ``restv2-edge eval --ray`` runs the same shard function as Ray tasks
(``restv2_edge.scale``), so both give the same predictions and the same report.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from restv2_edge.data import ImageSource, open_labelled
from restv2_edge.errors import DataError, RunnerUnavailableError
from restv2_edge.preprocess import Preprocessing, preprocess_image
from restv2_edge.scale.shards import DEFAULT_SHARD_SIZE, Shard, make_shards

Event = dict[str, Any]
WORST_CLASSES = 5


@dataclass
class Classifier:
    """Anything that maps preprocessed batches to logits, with its labels and transform."""

    predict: Callable[[np.ndarray], np.ndarray]
    class_names: list[str]
    preprocessing: Preprocessing
    description: str
    device: str = "CPU"


def load_classifier(
    model: str | Path, threads: int | None = None, device: str | None = None
) -> Classifier:
    """A checkpoint file runs in PyTorch (on the CPU); an artifact folder runs through its
    target runner on ``device`` (None: the target's default)."""
    path = Path(model)
    if path.is_dir():
        from restv2_edge.artifact import open_artifact

        manifest, runner = open_artifact(path, threads, device)
        description = f"{manifest.target} {manifest.precision} via {runner.description}"
        return Classifier(
            runner, manifest.class_names(path), manifest.preprocessing(), description, runner.device
        )
    if device is not None and device.upper() != "CPU":
        raise RunnerUnavailableError(
            f"device {device} is not available for a PyTorch checkpoint here; available: CPU "
            "(export it to pick a runtime's device)"
        )
    import torch

    from restv2_edge.factory import create_model
    from restv2_edge.parity import torch_logits

    if threads:
        torch.set_num_threads(threads)
    net = create_model(weights=path)
    names = net.class_names or [str(i) for i in range(net.config.num_classes)]
    return Classifier(lambda x: torch_logits(net, x, 64), names, net.preprocessing,
                      f"PyTorch {torch.__version__} fp32 (eager)")  # fmt: skip


def label_mapping(dataset_classes: list[str], model_classes: list[str]) -> np.ndarray:
    """Dataset label index -> model class index, matched by name."""
    if dataset_classes == model_classes:
        return np.arange(len(model_classes))
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(model_classes):
        positions.setdefault(name, []).append(index)
    unknown = [name for name in dataset_classes if name not in positions]
    if unknown:
        raise DataError(
            f"dataset classes not among the model's labels: {', '.join(unknown[:5])}"
            + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    ambiguous = [name for name in dataset_classes if len(positions[name]) > 1]
    if ambiguous:
        raise DataError(f"class names that appear twice in the model's labels: {ambiguous[:5]}")
    return np.array([positions[name][0] for name in dataset_classes])


# -- planning --------------------------------------------------------------------------------


@dataclass
class EvalPlan:
    """What to evaluate: the labelled images (sorted), their shards, and a fingerprint of the
    settings that decide the predictions (a resumed run must match it)."""

    data: str
    split: str | None
    source: ImageSource
    shards: list[Shard]
    batch_size: int
    models: list[str]
    model_keys: list[str]
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def shard_images(self, shard: Shard) -> list[tuple[str, int, bytes]]:
        """(key, dataset label, encoded bytes) of a shard: what a task needs of the data."""
        return [(key, label, self.source.read(key)) for key, label in shard.items]

    def task_ids(self) -> list[tuple[int, Shard, str]]:
        """(model index, shard, task id) for every shard of every model, shard-major."""
        return [
            (index, shard, task_id(key, shard))
            for shard in self.shards
            for index, key in enumerate(self.model_keys)
        ]


def task_id(model_key: str, shard: Shard) -> str:
    """A task's id: the model's content hash and the shard's id (the merge key)."""
    return f"{model_key[:16]}-{shard.id}"


def model_key(model: str | os.PathLike[str]) -> str:
    """A content id of a model: sha256 of an artifact's manifest.json (which lists the hash of
    every file), or of a checkpoint file."""
    path = Path(model)
    target = path / "manifest.json" if path.is_dir() else path
    if not target.is_file():
        raise DataError(f"model not found: {path}")
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def plan_eval(
    models: list[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> EvalPlan:
    """Open the labelled data and cut it into shards (multiples of ``batch_size``)."""
    source: ImageSource = open_labelled(data, split).subset(limit)
    labelled = [(key, label) for key, label in source.items if label >= 0]
    if not labelled:
        raise DataError(f"{data}: no labelled images")
    source.items = labelled
    shards = make_shards(labelled, shard_size, batch_size)
    keys = [model_key(model) for model in models]
    fingerprint = {
        "data": str(Path(data).resolve()),
        "split": split,
        "limit": limit,
        "images": len(labelled),
        "batch_size": batch_size,
        "shard_size": shards[0].size_limit,
        "models": keys,
    }
    return EvalPlan(str(data), split, source, shards, batch_size,
                    [str(m) for m in models], keys, fingerprint)  # fmt: skip


# -- one shard -------------------------------------------------------------------------------


def evaluate_shard(
    classifier: Classifier,
    dataset_classes: list[str],
    images: list[tuple[str, int, bytes]],
    batch_size: int,
    shard_id: str,
) -> dict[str, Any]:
    """Top-5 model class indices for each readable image of a shard (corrupt ones skipped).

    The result is plain JSON data: it travels back from a Ray worker and is kept on disk
    for ``--resume``."""
    mapping = label_mapping(dataset_classes, classifier.class_names)
    source = ImageSource(Path("."), [(key, label) for key, label, _ in images], dataset_classes,
                         {key: blob for key, _, blob in images})  # fmt: skip
    keys: list[str] = []
    targets: list[int] = []
    top5: list[list[int]] = []
    skipped: list[str] = []
    batch: list[np.ndarray] = []
    started = time.perf_counter()

    def flush() -> None:
        logits = classifier.predict(np.stack(batch))
        top5.extend(np.argsort(-logits, axis=1, kind="stable")[:, :5].tolist())
        batch.clear()

    for key, label, image in source.iter_images():
        if image is None:
            skipped.append(key)
            continue
        batch.append(preprocess_image(image, classifier.preprocessing))
        keys.append(key)
        targets.append(int(mapping[label]))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return {
        "shard": shard_id,
        "keys": keys,
        "targets": targets,
        "top5": top5,
        "skipped": skipped,
        "runner": classifier.description,
        "device": classifier.device,
        "pid": os.getpid(),
        "seconds": round(time.perf_counter() - started, 3),
    }


# -- running and merging ---------------------------------------------------------------------


class Executor(Protocol):
    """Runs every (model index, shard, task id) of a plan and calls ``on_result(task id,
    result)`` once per finished shard (local: in this process; Ray: restv2_edge.scale)."""

    def run(
        self,
        plan: EvalPlan,
        tasks: list[tuple[int, Shard, str]],
        on_result: Callable[[str, dict[str, Any]], None],
    ) -> None: ...


@dataclass
class LocalExecutor:
    """The shards one after the other in this process, each model opened once."""

    device: str | None = None
    threads: int | None = None

    def run(
        self,
        plan: EvalPlan,
        tasks: list[tuple[int, Shard, str]],
        on_result: Callable[[str, dict[str, Any]], None],
    ) -> None:
        classifiers: dict[int, Classifier] = {}
        for index, shard, ident in sorted(tasks, key=lambda task: task[0]):
            if index not in classifiers:
                classifiers.clear()  # one model in memory at a time
                classifiers[index] = load_classifier(plan.models[index], self.threads, self.device)
            images = plan.shard_images(shard)
            result = evaluate_shard(
                classifiers[index], plan.source.class_names, images, plan.batch_size, ident
            )
            on_result(ident, result)


def run_plan(
    plan: EvalPlan,
    executor: Executor,
    done: dict[str, dict[str, Any]] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] = lambda ident, result: None,
) -> list[dict[str, Any]]:
    """Run the shards not in ``done`` (task id -> result, e.g. kept from an interrupted run)
    and merge everything into one report per model.

    Results are keyed by task id, so a shard that comes back twice (a retried task) counts
    once."""
    results: dict[str, dict[str, Any]] = dict(done or {})
    started = time.perf_counter()

    def collect(ident: str, result: dict[str, Any]) -> None:
        if ident in results:
            return
        results[ident] = result
        on_result(ident, result)

    todo = [task for task in plan.task_ids() if task[2] not in results]
    if todo:
        executor.run(plan, todo, collect)
    seconds = round(time.perf_counter() - started, 2)
    return [merge_model(plan, index, results, seconds) for index in range(len(plan.models))]


def merge_model(
    plan: EvalPlan, index: int, results: dict[str, dict[str, Any]], seconds: float
) -> dict[str, Any]:
    """One model's report from its shard results, in shard order."""
    shards = [results[task_id(plan.model_keys[index], shard)] for shard in plan.shards]
    keys = [key for shard in shards for key in shard["keys"]]
    targets = np.array([t for shard in shards for t in shard["targets"]], dtype=np.int64)
    top5 = [row for shard in shards for row in shard["top5"]]
    skipped = [key for shard in shards for key in shard["skipped"]]
    if not keys:
        raise DataError(f"{plan.data}: no readable image ({len(skipped)} corrupt)")
    order = np.array([row + [-1] * (5 - len(row)) for row in top5], dtype=np.int64)
    hit1 = order[:, 0] == targets
    hit5 = (order == targets[:, None]).any(axis=1)
    names = model_class_names(plan, index)
    return {
        "model": plan.models[index],
        "runner": shards[0]["runner"],
        "device": shards[0]["device"],
        "data": plan.data,
        "split": plan.split,
        "images": len(keys),
        "skipped": len(skipped),
        "skipped_files": skipped[:20],
        "top1": float(hit1.mean()),
        "top5": float(hit5.mean()),
        "per_class": per_class(targets, hit1, hit5, names),
        "worst_classes": worst_classes(targets, order[:, 0], hit1, names),
        "shards": len(shards),
        "seconds": seconds,
        "predictions": {"keys": keys, "targets": targets.tolist(), "top5": top5},
    }


def model_class_names(plan: EvalPlan, index: int) -> list[str]:
    """The model's class names, as the report names classes."""
    model = Path(plan.models[index])
    if model.is_dir():
        from restv2_edge.manifest import Manifest

        return Manifest.read(model).class_names(model)
    from restv2_edge.checkpoint import read_checkpoint

    return read_checkpoint(model).class_names or load_classifier(model).class_names


def per_class(
    targets: np.ndarray, hit1: np.ndarray, hit5: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    """Accuracy of each class present in the data, by the model's class name."""
    table = {}
    for target in sorted(set(targets.tolist())):
        mask = targets == target
        table[names[target]] = {
            "images": int(mask.sum()),
            "top1": float(hit1[mask].mean()),
            "top5": float(hit5[mask].mean()),
        }
    return table


def worst_classes(
    targets: np.ndarray,
    predicted: np.ndarray,
    hit1: np.ndarray,
    names: list[str],
    count: int = WORST_CLASSES,
) -> list[dict[str, Any]]:
    """The ``count`` classes with the lowest top-1 and what they were taken for most often."""
    classes = sorted(set(targets.tolist()), key=lambda t: (float(hit1[targets == t].mean()), t))
    worst = []
    for target in classes[:count]:
        mask = targets == target
        wrong = Counter(int(p) for p in predicted[mask] if p != target)
        worst.append({
            "class": names[target],
            "top1": float(hit1[mask].mean()),
            "images": int(mask.sum()),
            "confused_with": [{"class": names[p], "count": n} for p, n in wrong.most_common(3)],
        })  # fmt: skip
    return worst


def evaluate_models(
    models: Iterable[str | os.PathLike[str]],
    data: str | os.PathLike[str],
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    shard_size: int = DEFAULT_SHARD_SIZE,
    executor: Executor | None = None,
    done: dict[str, dict[str, Any]] | None = None,
    on_result: Callable[[str, dict[str, Any]], None] = lambda ident, result: None,
) -> list[dict[str, Any]]:
    """One report per model (see :func:`evaluate`), the shards run by ``executor``."""
    plan = plan_eval(list(models), data, split, limit, batch_size, shard_size)
    return run_plan(plan, executor or LocalExecutor(), done, on_result)


def evaluate(
    model: str | Path,
    data: str | Path,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: Callable[[Event], None] = lambda event: None,
    device: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Accuracy on labelled images; corrupt images are skipped and counted.

    The report: top-1/top-5, per-class accuracy, the worst classes with their confusions,
    and the per-image top-5 predictions (``predictions``)."""
    plan = plan_eval([model], data, split, limit, batch_size)
    total = len(plan.source.items)
    seen = {"done": 0, "top1": 0}

    def tick(ident: str, result: dict[str, Any]) -> None:
        seen["done"] += len(result["keys"]) + len(result["skipped"])
        seen["top1"] += sum(row[0] == t for row, t in zip(result["top5"], result["targets"]))
        progress({"event": "progress", "done": seen["done"], "total": total,
                  "top1": seen["top1"] / max(seen["done"], 1)})  # fmt: skip

    return run_plan(plan, LocalExecutor(device, threads), on_result=tick)[0]


def report_without_predictions(report: dict[str, Any]) -> dict[str, Any]:
    """A report as written to ``--json`` unless predictions are asked for."""
    return {key: value for key, value in report.items() if key != "predictions"}
