"""Parity: an artifact in its own runtime against the PyTorch model, on real photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from restv2_edge.data import default_photo_dir, open_unlabelled
from restv2_edge.errors import DataError
from restv2_edge.preprocess import Preprocessing, preprocess_image

# Gates per precision. fp32: max |dlogit| and exact top-1; fp16/int8: cosine and the top-1
# agreement on clear calls (``compare``: a flip between two classes closer than the
# artifact's own error on that image is noise, not a different answer).
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-3, "top1_agreement": 1.0},
    "fp16": {"cosine_min": 0.9995, "top1_agreement_clear": 0.99},
    "int8": {"cosine_mean": 0.99, "top1_agreement_clear": 0.9},
}
#: a call is close when the reference's top-1 leads its runner-up by at most this many
#: root-mean-square logit errors of the candidate on that image
CLOSE_CALL_ERRORS = 2.0


@dataclass
class ParityInputs:
    images: np.ndarray  # (N, 3, S, S) float32, as the artifact expects
    names: list[str]
    folder: str | None  # the photo folder; None for seeded synthetic images

    @property
    def synthetic(self) -> bool:
        return self.folder is None

    @property
    def source(self) -> str:
        """What the gate ran on, as the manifest and the printed line say it."""
        count = len(self.names)
        if self.synthetic:
            return f"synthetic: {count} seeded images"
        return f"photos: {self.folder} ({count})"


def load_inputs(
    pre: Preprocessing, data: str | Path | None = None, limit: int | None = 16
) -> ParityInputs:
    """Preprocess up to ``limit`` photos (evenly spread over the folder) per ``pre``.

    ``data`` None: the shared ImageNet sample; if that does not exist, seeded synthetic images
    (``ParityInputs.synthetic``: callers must say so, such a gate says little). A given folder
    with no readable image is an error.
    """
    folder = Path(data) if data is not None else default_photo_dir()
    if data is None and not folder.is_dir():
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (limit or 8, pre.image_size, pre.image_size, 3), np.uint8)
        from restv2_edge.preprocess import normalize

        return ParityInputs(
            normalize(pixels, pre), [f"synthetic_{i}" for i in range(len(pixels))], None
        )
    source = open_unlabelled(folder).subset(limit)
    arrays, names = [], []
    for key, _, image in source.iter_images():
        if image is not None:
            arrays.append(preprocess_image(image, pre))
            names.append(key)
    if not arrays:
        raise DataError(f"{folder}: no readable image for parity")
    return ParityInputs(np.stack(arrays), names, str(folder))


#: printed (and recorded) when a gate ran on synthetic images only
SYNTHETIC_WARNING = (
    "parity ran on seeded synthetic images only (no photos found; give --parity-data PATH or "
    "set RESTV2_EDGE_DATA): it shows the runtime computes the same function, not that real "
    "photos classify the same; run `restv2-edge parity` on real photos to replace it"
)


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Logit agreement between a reference (PyTorch) and a candidate (runtime) batch."""
    reference = reference.astype(np.float64)
    candidate = candidate.astype(np.float64)
    diff = np.abs(reference - candidate)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-30)
    k = min(5, reference.shape[1])
    top_ref = np.argsort(-reference, axis=1)[:, :k]
    top_can = np.argsort(-candidate, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_can)]
    agree = top_ref[:, 0] == top_can[:, 0]
    ordered = np.sort(reference, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if reference.shape[1] > 1 else np.inf
    rms_error = np.sqrt(((reference - candidate) ** 2).mean(axis=1))
    clear = margin > CLOSE_CALL_ERRORS * rms_error
    return {
        "images": int(reference.shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
        "top1_agreement": float(agree.mean()),
        "top5_agreement": float(np.mean(overlap)),
        "close_calls": int((~clear).sum()),
        "top1_agreement_clear": float(agree[clear].mean()) if clear.any() else 1.0,
    }


def failures(metrics: dict[str, float], precision: str) -> list[str]:
    """Human-readable list of the gates this result misses (empty: passed)."""
    missed = []
    for key, limit in THRESHOLDS[precision].items():
        value = metrics[key]
        bad = value > limit if key.endswith("diff") else value < limit
        if bad:
            missed.append(f"{key} {value:.6g} (limit {limit:g})")
    return missed


def torch_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [
                model(torch.from_numpy(images[i : i + batch_size])).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )


def measure(
    runner: Any, model: torch.nn.Module, inputs: ParityInputs, precision: str
) -> dict[str, Any]:
    """Run both, compare, and return a parity record for the manifest."""
    reference = torch_logits(model, inputs.images)
    candidate = runner(inputs.images)
    metrics = compare(reference, candidate)
    missed = failures(metrics, precision)
    return {
        "status": "passed" if not missed else "failed",
        "runner": runner.description,
        "device": getattr(runner, "device", "CPU"),
        "batch": {
            "size": getattr(runner, "batch_size", None),
            "dynamic": bool(getattr(runner, "dynamic_batch", False)),
        },
        "precision": precision,
        "data": inputs.source,
        "synthetic": inputs.synthetic,
        "thresholds": THRESHOLDS[precision],
        "metrics": metrics,
        "failures": missed,
    }
