"""Parity: an artifact in its own runtime against the PyTorch model, on real photos."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from restv2_edge.data import default_photo_dir, open_unlabelled
from restv2_edge.errors import DataError
from restv2_edge.preprocess import Preprocessing, normalize, preprocess_image

# Gates per precision. fp32: max |dlogit| and exact top-1; fp16/bf16/int8: cosine and the
# top-1 agreement on clear calls (``compare``: a flip between two classes closer than the
# artifact's own error on that image is noise, not a different answer). An artifact is judged
# by the type its runtime computes in (``gate_precision``): an fp16 IR that OpenVINO runs at
# bf16 on AVX-512 BF16 / AMX CPUs meets the bf16 gate, set from bf16's measured noise (worst
# cosine 0.99969 over 500 CIFAR-10 images of the fixture, 2 clear-call flips in 99 on a
# random-weight T; the gate allows about 3x that cosine error and one flip in the default 16
# photos: docs/precision.md, scripts/precision_noise.py). True fp16 keeps its tighter gate.
BF16_GATE = {"cosine_min": 0.999, "top1_agreement_clear": 0.93}
THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_diff": 1e-3, "top1_agreement": 1.0},
    "fp16": {"cosine_min": 0.9995, "top1_agreement_clear": 0.99},
    "bf16": dict(BF16_GATE),
    "int8": {"cosine_mean": 0.99, "top1_agreement_clear": 0.9},
}
# Gates per precision for a features artifact, judged on every output (stage1..stage4).
# fp32: max |diff| relative to max(1, the map's largest |value|), and the cosine of each
# image's flattened map; fp16/int8: that cosine (worst image, and mean). Chosen from measured
# values (docs/backbone.md), with headroom.
FEATURE_THRESHOLDS: dict[str, dict[str, float]] = {
    "fp32": {"max_rel_diff": 1e-4, "cosine_min": 0.99999},
    "fp16": {"cosine_min": 0.999},
    "bf16": {"cosine_min": 0.999},
    "int8": {"cosine_mean": 0.98, "cosine_min": 0.95},
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
    pre: Preprocessing,
    data: str | Path | None = None,
    limit: int | None = 16,
    hw: tuple[int, int] | None = None,
) -> ParityInputs:
    """Preprocess up to ``limit`` photos (evenly spread over the folder) per ``pre``: its
    center crop, or with ``hw`` each photo resized straight to height x width (no crop).

    ``data`` None: the shared ImageNet sample; if that does not exist, seeded synthetic images
    (``ParityInputs.synthetic``: callers must say so, such a gate says little). A given folder
    with no readable image is an error.
    """
    folder = Path(data) if data is not None else default_photo_dir()
    if data is None and not folder.is_dir():
        rng = np.random.default_rng(0)
        size = hw or (pre.image_size, pre.image_size)
        pixels = rng.integers(0, 256, (limit or 8, *size, 3), np.uint8)
        return ParityInputs(
            normalize(pixels, pre), [f"synthetic_{i}" for i in range(len(pixels))], None
        )
    source = open_unlabelled(folder).subset(limit)
    arrays, names = [], []
    for key, _, image in source.iter_images():
        if image is not None:
            arrays.append(stretch_image(image, pre, hw) if hw else preprocess_image(image, pre))
            names.append(key)
    if not arrays:
        raise DataError(f"{folder}: no readable image for parity")
    return ParityInputs(np.stack(arrays), names, str(folder))


def manifest_inputs(manifest: Any, data: str | Path | None = None, limit: int | None = 16):
    """``load_inputs`` for an artifact: its center crop, or for a stretch-resized (non-square)
    artifact each photo resized straight to its height x width."""
    if manifest.resize == "center_crop":
        return load_inputs(manifest.preprocessing(), data, limit)
    return load_inputs(manifest.normalization(), data, limit, hw=manifest.input_hw)


_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def stretch_image(image: Any, pre: Preprocessing, hw: tuple[int, int]) -> np.ndarray:
    """PIL image -> (3, H, W) float32: resized to exactly ``hw`` (no crop), normalized."""
    height, width = hw
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), _FILTERS[pre.interpolation])
    return normalize(np.asarray(image, dtype=np.uint8), pre)


def image_input(manifest: Any, image: Any) -> np.ndarray:
    """One PIL image as the artifact's input (3, H, W), per its manifest."""
    if manifest.resize == "center_crop":
        return preprocess_image(image, manifest.preprocessing())
    return stretch_image(image, manifest.normalization(), manifest.input_hw)


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


def torch_logits(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 16
) -> np.ndarray | list[np.ndarray]:
    """The model's output on ``images`` in batches: logits, or for a model with several
    outputs (features head) the list of them."""
    chunks = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            result = model(torch.from_numpy(images[i : i + batch_size]))
            if isinstance(result, (tuple, list)):
                chunks.append([part.numpy() for part in result])
            else:
                chunks.append(result.numpy())
    if chunks and isinstance(chunks[0], list):
        return [np.concatenate(parts) for parts in zip(*chunks)]
    return np.concatenate(chunks)


def compare_maps(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Agreement of one feature map (N, C, H, W): max |diff| (absolute and relative to
    max(1, the reference's largest |value|)) and the per-image cosine of the flattened map."""
    reference = reference.astype(np.float64).reshape(reference.shape[0], -1)
    candidate = candidate.astype(np.float64).reshape(candidate.shape[0], -1)
    if reference.shape != candidate.shape:
        raise DataError(f"output shape {candidate.shape} differs from the reference's")
    diff = np.abs(reference - candidate)
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-30)
    return {
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max() / max(1.0, float(np.abs(reference).max()))),
        "mean_abs_diff": float(diff.mean()),
        "cosine_min": float(cosine.min()),
        "cosine_mean": float(cosine.mean()),
    }


def compare_features(
    reference: list[np.ndarray], candidate: list[np.ndarray], names: list[str]
) -> dict[str, Any]:
    """Per-output metrics (``outputs``) and the worst of each over all outputs."""
    if len(candidate) != len(reference):
        raise DataError(f"the artifact returned {len(candidate)} outputs, expected {len(names)}")
    per_output = {
        name: compare_maps(ref, can) for name, ref, can in zip(names, reference, candidate)
    }
    worst = {
        key: (min if key.startswith("cosine") else max)(m[key] for m in per_output.values())
        for key in next(iter(per_output.values()))
    }
    return {"images": int(reference[0].shape[0]), **worst, "outputs": per_output}


def feature_failures(metrics: dict[str, Any], precision: str) -> list[str]:
    """The gates a features result misses, per output (empty: passed)."""
    missed = []
    for name, values in metrics["outputs"].items():
        for key, limit in FEATURE_THRESHOLDS[precision].items():
            value = values[key]
            bad = value > limit if key.endswith("diff") else value < limit
            if bad:
                missed.append(f"{name} {key} {value:.6g} (limit {limit:g})")
    return missed


def gate_precision(precision: str, runner: Any) -> str:
    """The gate an artifact is judged by: its precision, or the 16-bit type its runtime
    reports computing in (``Runner.executes``) where that differs (fp16 run at bf16)."""
    executes = getattr(runner, "executes", None)
    if precision == "fp16" and executes in THRESHOLDS and executes != "fp32":
        return executes
    return precision


def measure(
    runner: Any, model: torch.nn.Module, inputs: ParityInputs, precision: str
) -> dict[str, Any]:
    """Run both, compare, and return a parity record for the manifest (a features model:
    every output compared, ``metrics.outputs`` per output, gated by FEATURE_THRESHOLDS),
    gated by ``gate_precision`` and naming that gate."""
    gate = gate_precision(precision, runner)
    reference = torch_logits(model, inputs.images)
    candidate = runner(inputs.images)
    if isinstance(reference, list):
        if not isinstance(candidate, list):
            candidate = [candidate]
        names = list(getattr(model, "output_names", None) or output_names(len(reference)))
        metrics = compare_features(reference, candidate, names)
        missed = feature_failures(metrics, gate)
        thresholds = FEATURE_THRESHOLDS[gate]
    else:
        metrics = compare(reference, candidate)
        missed = failures(metrics, gate)
        thresholds = THRESHOLDS[gate]
    return {
        "status": "passed" if not missed else "failed",
        "runner": runner.description,
        "device": getattr(runner, "device", "CPU"),
        "batch": {
            "size": getattr(runner, "batch_size", None),
            "dynamic": bool(getattr(runner, "dynamic_batch", False)),
        },
        "precision": precision,
        "gate": gate,
        "data": inputs.source,
        "synthetic": inputs.synthetic,
        "thresholds": thresholds,
        "metrics": metrics,
        "failures": missed,
    }


def output_names(count: int) -> list[str]:
    """The features head's output names (``stage1``..): the model's own order."""
    return [f"stage{index + 1}" for index in range(count)]


def gate_was_synthetic(record: dict[str, Any]) -> bool:
    return bool(record.get("synthetic")) or record.get("data") == "synthetic"


def replace_parity_record(folder: Path, manifest: Any, record: dict[str, Any]) -> None:
    """Rewrite manifest.json with ``record`` as its parity (files and hashes unchanged)."""
    from restv2_edge.manifest import MANIFEST_NAME
    from restv2_edge.publish import staged_file

    manifest.parity = record
    with staged_file(folder / MANIFEST_NAME, force=True) as tmp:
        tmp.write_text(manifest.to_json())
