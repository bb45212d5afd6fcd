"""Top-1/top-5 accuracy of a checkpoint (PyTorch) or an exported artifact (its runner)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.data import ImageSource, open_labelled
from restv2_edge.errors import DataError, RunnerUnavailableError
from restv2_edge.preprocess import Preprocessing, preprocess_image

Event = dict[str, Any]


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


def evaluate(
    model: str | Path,
    data: str | Path,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    progress: Callable[[Event], None] = lambda event: None,
    device: str | None = None,
) -> dict[str, Any]:
    """Accuracy on labelled images; corrupt images are skipped and counted."""
    classifier = load_classifier(model, device=device)
    source: ImageSource = open_labelled(data, split).subset(limit)
    labelled = [(key, label) for key, label in source.items if label >= 0]
    if not labelled:
        raise DataError(f"{data}: no labelled images")
    source.items = labelled
    mapping = label_mapping(source.class_names, classifier.class_names)
    top1 = top5 = seen = 0
    skipped: list[str] = []
    batch: list[np.ndarray] = []
    targets: list[int] = []
    started = time.perf_counter()

    def flush() -> None:
        nonlocal top1, top5, seen
        logits = classifier.predict(np.stack(batch))
        truth = np.asarray(targets)
        order = np.argsort(-logits, axis=1)[:, :5]
        top1 += int((order[:, 0] == truth).sum())
        top5 += int((order == truth[:, None]).any(axis=1).sum())
        seen += len(truth)
        batch.clear()
        targets.clear()
        progress({"event": "progress", "done": seen + len(skipped), "total": len(source.items),
                  "top1": top1 / seen})  # fmt: skip

    for key, label, image in source.iter_images():
        if image is None:
            skipped.append(key)
            continue
        batch.append(preprocess_image(image, classifier.preprocessing))
        targets.append(int(mapping[label]))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if seen == 0:
        raise DataError(f"{data}: no readable image ({len(skipped)} corrupt)")
    return {
        "model": str(model),
        "runner": classifier.description,
        "device": classifier.device,
        "data": str(data),
        "split": split,
        "images": seen,
        "skipped": len(skipped),
        "skipped_files": skipped[:20],
        "top1": top1 / seen,
        "top5": top5 / seen,
        "seconds": round(time.perf_counter() - started, 2),
    }
