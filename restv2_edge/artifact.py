"""Opening an exported artifact: verified manifest + the runner of its target."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from restv2_edge.converters.base import Runner, get_converter
from restv2_edge.errors import ArtifactError
from restv2_edge.manifest import Manifest, verify_files
from restv2_edge.parity import image_input


def open_artifact(
    folder: str | os.PathLike[str], threads: int | None = None, device: str | None = None
) -> tuple[Manifest, Runner]:
    """Check every file against its sha256, then load the target's runner on ``device``
    (None: the target's default; one that is not here raises RunnerUnavailableError)."""
    manifest = verify_files(folder)
    converter = get_converter(manifest.target)
    return manifest, converter.open_runner(Path(folder), manifest, threads, device)


def require_classifier(manifest: Manifest, folder: str | os.PathLike[str], command: str) -> None:
    """A features (backbone) artifact has no classes: one line saying so for ``command``."""
    if manifest.features:
        raise ArtifactError(
            f"{folder} is a features artifact (outputs "
            f"{', '.join(manifest.output_names)}, no classes): {command} needs a classifier; "
            "`restv2-edge golden` and `bench` run a features artifact"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, names: list[str], k: int = 5) -> list[dict[str, object]]:
    """Top-k of one logit vector: index, label, probability (softmax)."""
    probs = softmax(logits.astype(np.float64))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "label": names[i], "probability": float(probs[i])} for i in order]


def classify(
    folder: str | os.PathLike[str],
    images: list[Image.Image],
    k: int = 5,
    device: str | None = None,
) -> list[list[dict[str, object]]]:
    """Top-k for each image, using only the manifest and the target runtime (on ``device``)."""
    require_classifier(Manifest.read(folder), folder, "predict")
    manifest, runner = open_artifact(folder, device=device)
    batch = np.stack([image_input(manifest, image) for image in images])
    logits = runner(batch)
    names = manifest.class_names(Path(folder))
    return [top_k(row, names, k) for row in logits]
