"""Calibration sets: N images picked deterministically, preprocessed as eval does, hashed.

A calibration set is a folder with ``inputs.npy`` (N, 3, S, S) float32 -- exactly what the
model takes, via ``restv2_edge.preprocess`` -- and ``calibration.json``: the sources (key and
sha256 of each image file), the preprocessing, the count, the skipped corrupt files and a
content hash over the inputs and the preprocessing. Every INT8 recipe reads it the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import QuantizationSettings

from restv2_edge.errors import DataError, ExportError
from restv2_edge.preprocess import Preprocessing

INPUTS_FILE = "inputs.npy"
MANIFEST_FILE = "calibration.json"
FORMAT_VERSION = 1
#: fewer images than this calibrate poorly: a warning, not an error
MIN_RECOMMENDED = 32


class CalibrationWarning(UserWarning):
    """A calibration set that works but is likely too small to calibrate well."""


@dataclass
class CalibrationSet:
    """Preprocessed calibration inputs plus where they came from."""

    inputs: np.ndarray  # (N, 3, S, S) float32, normalized per ``preprocessing``
    preprocessing: Preprocessing
    sources: list[dict[str, str]] = field(default_factory=list)
    data: str = ""
    seed: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def image_size(self) -> int:
        return int(self.inputs.shape[-1])

    @property
    def content_hash(self) -> str:
        """sha256 over the inputs' bytes, shape and the preprocessing (stable across saves)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.preprocessing.to_dict(), sort_keys=True).encode())
        digest.update(repr(tuple(self.inputs.shape)).encode())
        digest.update(np.ascontiguousarray(self.inputs, dtype=np.float32).tobytes())
        return "sha256:" + digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """What an INT8 manifest records about the set."""
        return {"hash": self.content_hash, "size": self.size, "data": self.data}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "restv2-edge-calibration",
            "version": FORMAT_VERSION,
            "inputs_file": INPUTS_FILE,
            "count": self.size,
            "shape": list(self.inputs.shape),
            "dtype": "float32",
            "hash": self.content_hash,
            "preprocessing": self.preprocessing.to_dict(),
            "data": self.data,
            "seed": self.seed,
            "skipped": self.skipped,
            "sources": self.sources,
        }

    def batches(self, raw_input: bool = False) -> list[np.ndarray]:
        """One (1, 3, S, S) array per image; raw RGB 0-255 when the graph normalizes inside."""
        x = self.raw_inputs() if raw_input else self.inputs
        return [np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(self.size)]

    def raw_inputs(self) -> np.ndarray:
        """The inputs mapped back to RGB 0-255 (for ``--raw-input`` graphs)."""
        pre = self.preprocessing
        std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
        mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
        return ((self.inputs * std + mean) / np.float32(pre.scale)).astype(np.float32)

    def check_matches(self, pre: Preprocessing) -> None:
        """Raise if this set was made for another image size or normalization than ``pre``."""
        mine = self.preprocessing
        if mine.image_size != pre.image_size or self.image_size != pre.image_size:
            raise ExportError(
                f"calibration set is for image size {self.image_size}, the export is "
                f"{pre.image_size}; make one with restv2-edge calibrate --image-size "
                f"{pre.image_size}"
            )
        problems = []
        for key in ("mean", "std", "scale"):
            a, b = np.asarray(getattr(mine, key)), np.asarray(getattr(pre, key))
            if not np.allclose(a, b, rtol=1e-6, atol=1e-7):
                problems.append(f"{key} {list(np.atleast_1d(a))} vs {list(np.atleast_1d(b))}")
        for key in ("crop_pct", "interpolation"):
            if getattr(mine, key) != getattr(pre, key):
                problems.append(f"{key} {getattr(mine, key)} vs {getattr(pre, key)}")
        if problems:
            raise ExportError(
                "calibration set preprocessing differs from the model's: " + "; ".join(problems)
            )


def build_calibration_set(
    data: str | os.PathLike[str], size: int, pre: Preprocessing, seed: int = 0
) -> CalibrationSet:
    """Pick ``size`` images from a folder or tar (seeded shuffle of the sorted keys).

    Corrupt files are skipped (and listed) and the next image in the shuffled order is taken.
    No readable image is a DataError; fewer than ``MIN_RECOMMENDED`` warns.
    """
    from restv2_edge.data import open_unlabelled
    from restv2_edge.preprocess import preprocess_image

    if size < 1:
        raise DataError(f"calibration size must be at least 1 (got {size})")
    source = open_unlabelled(data)
    keys = [key for key, _ in source.items]
    order = np.random.default_rng(seed).permutation(len(keys))
    arrays: list[np.ndarray] = []
    sources: list[dict[str, str]] = []
    skipped: list[str] = []
    for index in order:
        if len(arrays) == size:
            break
        key = keys[int(index)]
        try:
            image = source.open(key)
        except DataError:
            skipped.append(key)
            continue
        arrays.append(preprocess_image(image, pre))
        sources.append({"key": key, "sha256": hashlib.sha256(source.read(key)).hexdigest()})
    if not arrays:
        raise DataError(f"{data}: no readable image for calibration ({len(skipped)} corrupt)")
    if len(arrays) < MIN_RECOMMENDED:
        warnings.warn(
            f"calibration set has only {len(arrays)} images (fewer than {MIN_RECOMMENDED}); "
            "INT8 accuracy may suffer",
            CalibrationWarning,
            stacklevel=2,
        )
    return CalibrationSet(
        np.stack(arrays).astype(np.float32), pre, sources, str(data), seed, skipped
    )


def save_calibration_set(
    calib: CalibrationSet, folder: str | os.PathLike[str], force: bool = False
) -> Path:
    """Publish ``inputs.npy`` + ``calibration.json`` as the folder ``folder``.

    An existing folder is replaced only with ``force`` (``restv2_edge.publish``).
    """
    from restv2_edge.publish import staged_dir

    folder = Path(folder)
    with staged_dir(folder, force) as work:
        try:
            np.save(work / INPUTS_FILE, np.ascontiguousarray(calib.inputs, dtype=np.float32))
            (work / MANIFEST_FILE).write_text(json.dumps(calib.to_json(), indent=2) + "\n")
        except OSError as exc:
            raise DataError(f"cannot write calibration set to {folder}: {exc}") from None
    return folder


def load_calibration_set(folder: str | os.PathLike[str]) -> CalibrationSet:
    """Read a calibration set written by ``save_calibration_set`` and check its hash."""
    folder = Path(folder)
    meta_path, inputs_path = folder / MANIFEST_FILE, folder / INPUTS_FILE
    if not meta_path.is_file() or not inputs_path.is_file():
        raise DataError(
            f"{folder} is not a calibration set (needs {MANIFEST_FILE} and {INPUTS_FILE}; "
            "make one with restv2-edge calibrate)"
        )
    try:
        meta = json.loads(meta_path.read_text())
        version = meta.get("version")
        if meta.get("format") != "restv2-edge-calibration" or not isinstance(version, int):
            raise DataError(f"{folder}: {MANIFEST_FILE} is not a restv2-edge calibration set")
        if version > FORMAT_VERSION:
            raise DataError(
                f"{folder}: calibration set version {version} is newer than this restv2-edge "
                f"reads ({FORMAT_VERSION}); upgrade restv2-edge"
            )
        inputs = np.load(inputs_path, allow_pickle=False)
        pre = Preprocessing.from_dict(meta["preprocessing"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{folder}: unreadable calibration set: {exc}") from None
    if pre.problems():
        raise DataError(f"{folder}: calibration preprocessing: {pre.problems()[0]}")
    if inputs.dtype != np.float32 or inputs.ndim != 4 or inputs.shape[1] != 3:
        raise DataError(f"{folder}: {INPUTS_FILE} must be (N, 3, S, S) float32")
    calib = CalibrationSet(
        inputs,
        pre,
        list(meta.get("sources", [])),
        str(meta.get("data", "")),
        int(meta.get("seed", 0)),
        list(meta.get("skipped", [])),
    )
    if calib.content_hash != meta.get("hash"):
        raise DataError(f"{folder}: calibration inputs do not match the hash in {MANIFEST_FILE}")
    if calib.size == 0:
        raise DataError(f"{folder}: calibration set is empty")
    if calib.size < MIN_RECOMMENDED:
        warnings.warn(
            f"calibration set {folder} has only {calib.size} images (fewer than "
            f"{MIN_RECOMMENDED}); INT8 accuracy may suffer",
            CalibrationWarning,
            stacklevel=2,
        )
    return calib


def calibration_batches(model: Any, request: Any) -> list[np.ndarray]:
    """The request's calibration inputs, one (1, 3, S, S) array per image, checked against the
    preprocessing of the model the request is for (``ExportRequest.for_model``; ``model``, the
    graph, is not read)."""
    calib = request.calibration
    if calib is None:
        raise ExportError("INT8 export needs a calibration set (--calib or --calib-data)")
    if request.preprocessing is not None:
        calib.check_matches(request.preprocessing)
    return calib.batches(raw_input=request.raw_input)


def quantization_record(request: Any, method: str, **extra: Any) -> dict[str, Any]:
    """The ExportResult.quantization record shared by every recipe."""
    calib = request.calibration
    record: dict[str, Any] = {
        "calibration": calib.summary() if calib is not None else None,
        "method": method,
        "layers_kept_float": list(request.quantization.keep_float),
    }
    record.update(extra)
    return record


def _floats3(text: str | None, name: str) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise DataError(f"--{name} needs three comma-separated numbers (got {text!r})")
    return values  # type: ignore[return-value]


def calibration_preprocessing(
    weights: str | None,
    image_size: int | None,
    crop_pct: float | None = None,
    mean: str | None = None,
    std: str | None = None,
) -> Preprocessing:
    """Eval preprocessing from an own-format checkpoint's metadata (else defaults) + overrides."""
    from restv2_edge.config import check_image_size

    base = Preprocessing()
    if weights is not None:
        from restv2_edge.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(weights)
        if checkpoint.is_own_format and checkpoint.preprocessing is not None:
            base = checkpoint.preprocessing
    data = base.to_dict()
    data["image_size"] = check_image_size(image_size or base.image_size)
    if crop_pct is not None:
        if not 0 < crop_pct <= 1:
            raise DataError(f"--crop-pct must be in (0, 1] (got {crop_pct})")
        data["crop_pct"] = crop_pct
    for key, text in (("mean", mean), ("std", std)):
        value = _floats3(text, key)
        if value is not None:
            data[key] = value
    return Preprocessing.from_dict(data)


def quantization_settings(options: dict[str, Any]) -> QuantizationSettings:
    """The ExportRequest.quantization settings from the CLI's export options."""
    if not options.get("weights_only") and not (options.get("calib") or options.get("calib_data")):
        raise ExportError("--int8 needs a calibration set: --calib DIR or --calib-data PATH")
    if options.get("calib") and options.get("calib_data"):
        raise ExportError("give --calib or --calib-data, not both")
    max_drop = options.get("max_drop")
    if max_drop is not None and max_drop < 0:
        raise ExportError("--max-drop must be >= 0 (percentage points)")
    accuracy_data = options.get("accuracy_data") if max_drop is not None else None
    return QuantizationSettings(
        method=options.get("calib_method") or "percentile",
        weights_only=bool(options.get("weights_only")),
        max_drop=float(max_drop) if max_drop is not None else None,
        accuracy_data=str(accuracy_data) if accuracy_data else None,
    )


def request_calibration(
    options: dict[str, Any], pre: Preprocessing, report: Any = lambda text: None
) -> CalibrationSet | None:
    """Load (--calib) or build (--calib-data) the calibration set, checked against ``pre``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        if options.get("calib"):
            calib = load_calibration_set(options["calib"])
        elif options.get("calib_data"):
            calib = build_calibration_set(
                options["calib_data"], int(options.get("calib_size") or 256), pre
            )
        else:
            return None
    for warning in caught:
        report(f"[yellow]warning:[/] {warning.message}")
    calib.check_matches(pre)
    return calib
