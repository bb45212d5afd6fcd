"""Calibration sets: N images picked deterministically, preprocessed as eval does, hashed.

A calibration set is a folder with ``inputs.npy`` (N, 3, H, W) float32 -- exactly what the
model takes -- and ``calibration.json``: the sources (key and sha256 of each image file), the
preprocessing, the image size and resize rule, the count, the skipped corrupt files and a
content hash over the inputs, the preprocessing and (for a stretched set) the rule. A square
set is the eval transform (``restv2_edge.preprocess``: resize, center crop); a non-square one
resizes each image straight to H x W (``parity.stretch_image``, no crop), as a non-square
artifact's manifest says (``input.resize: "stretch"``). Every INT8 recipe reads it the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import QuantizationSettings

from restv2_edge.config import format_image_size
from restv2_edge.errors import DataError, ExportError
from restv2_edge.manifest import CENTER_CROP, STRETCH
from restv2_edge.preprocess import Preprocessing

INPUTS_FILE = "inputs.npy"
MANIFEST_FILE = "calibration.json"
#: version 1 sets without ``resize`` and ``image_size`` (written before a non-square size
#: existed) are read as center crops
FORMAT_VERSION = 1
RESIZE_RULES = (CENTER_CROP, STRETCH)
#: fewer images than this calibrate poorly: a warning, not an error
MIN_RECOMMENDED = 32


class CalibrationWarning(UserWarning):
    """A calibration set that works but is likely too small to calibrate well."""


@dataclass
class CalibrationSet:
    """Preprocessed calibration inputs plus where they came from."""

    inputs: np.ndarray  # (N, 3, H, W) float32, normalized per ``preprocessing``
    preprocessing: Preprocessing
    sources: list[dict[str, str]] = field(default_factory=list)
    data: str = ""
    seed: int = 0
    skipped: list[str] = field(default_factory=list)
    #: CENTER_CROP (square: the eval transform) or STRETCH (resized straight to H x W)
    resize: str = CENTER_CROP

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_hw(self) -> tuple[int, int]:
        return int(self.inputs.shape[-2]), int(self.inputs.shape[-1])

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The side of a square set, (height, width) otherwise (as ``model.image_size``)."""
        height, width = self.input_hw
        return height if height == width else (height, width)

    @property
    def content_hash(self) -> str:
        """sha256 over the inputs' bytes, shape, the preprocessing and a stretched set's
        resize rule (stable across saves; a center-crop set's hash is what it always was)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.preprocessing.to_dict(), sort_keys=True).encode())
        if self.resize != CENTER_CROP:
            digest.update(f"resize={self.resize}".encode())
        digest.update(repr(tuple(self.inputs.shape)).encode())
        digest.update(np.ascontiguousarray(self.inputs, dtype=np.float32).tobytes())
        return "sha256:" + digest.hexdigest()

    def describe(self) -> str:
        """``64 (center crop)`` or ``64x96 (stretch)``: how error lines name the set."""
        return f"{format_image_size(self.image_size)} ({self.resize.replace('_', ' ')})"

    def summary(self) -> dict[str, Any]:
        """What an INT8 manifest records about the set."""
        return {
            "hash": self.content_hash,
            "size": self.size,
            "image_size": _json_size(self.image_size),
            "resize": self.resize,
            "data": self.data,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "restv2-edge-calibration",
            "version": FORMAT_VERSION,
            "inputs_file": INPUTS_FILE,
            "count": self.size,
            "shape": list(self.inputs.shape),
            "image_size": _json_size(self.image_size),
            "resize": self.resize,
            "dtype": "float32",
            "hash": self.content_hash,
            "preprocessing": self.preprocessing.to_dict(),
            "data": self.data,
            "seed": self.seed,
            "skipped": self.skipped,
            "sources": self.sources,
        }

    def batches(self, raw_input: bool = False) -> list[np.ndarray]:
        """One (1, 3, H, W) array per image; raw RGB 0-255 when the graph normalizes inside."""
        x = self.raw_inputs() if raw_input else self.inputs
        return [np.ascontiguousarray(x[i : i + 1], dtype=np.float32) for i in range(self.size)]

    def raw_inputs(self) -> np.ndarray:
        """The inputs mapped back to RGB 0-255 (for ``--raw-input`` graphs)."""
        pre = self.preprocessing
        std = np.asarray(pre.std, np.float32).reshape(1, 3, 1, 1)
        mean = np.asarray(pre.mean, np.float32).reshape(1, 3, 1, 1)
        return ((self.inputs * std + mean) / np.float32(pre.scale)).astype(np.float32)

    def check_matches(self, pre: Preprocessing, hw: tuple[int, int] | None = None) -> None:
        """Raise if this set was made for another image size, resize rule or normalization
        than the model's: ``pre`` (its center crop), or with a non-square ``hw`` (height,
        width) a stretch to that size with ``pre``'s normalization."""
        hw = (int(hw[0]), int(hw[1])) if hw is not None else (pre.image_size, pre.image_size)
        rule = CENTER_CROP if hw[0] == hw[1] else STRETCH
        mine = self.preprocessing
        same_crop = rule == STRETCH or mine.image_size == pre.image_size == hw[0]
        if self.input_hw != hw or self.resize != rule or not same_crop:
            size = format_image_size(hw[0] if rule == CENTER_CROP else hw)
            raise ExportError(
                f"calibration set is for image size {self.describe()}, the export is "
                f"{size} ({rule.replace('_', ' ')}); make one with restv2-edge calibrate "
                f"--image-size {size}"
            )
        problems = []
        for key in ("mean", "std", "scale"):
            a, b = np.asarray(getattr(mine, key)), np.asarray(getattr(pre, key))
            if not np.allclose(a, b, rtol=1e-6, atol=1e-7):
                problems.append(f"{key} {list(np.atleast_1d(a))} vs {list(np.atleast_1d(b))}")
        keys = ("crop_pct", "interpolation") if rule == CENTER_CROP else ("interpolation",)
        for key in keys:
            if getattr(mine, key) != getattr(pre, key):
                problems.append(f"{key} {getattr(mine, key)} vs {getattr(pre, key)}")
        if problems:
            raise ExportError(
                "calibration set preprocessing differs from the model's: " + "; ".join(problems)
            )


def _json_size(image_size: int | tuple[int, int]) -> int | list[int]:
    return list(image_size) if isinstance(image_size, tuple) else image_size


def _image_transform(pre: Preprocessing, hw: tuple[int, int] | None) -> tuple[Any, str]:
    """(PIL image -> (3, H, W) input, resize rule): ``pre``'s center crop for a square size,
    a straight resize to a non-square ``hw`` (the stretch rule of non-square artifacts)."""
    from restv2_edge.parity import stretch_image
    from restv2_edge.preprocess import preprocess_image

    if hw is None or hw[0] == hw[1]:
        return (lambda image: preprocess_image(image, pre)), CENTER_CROP
    height, width = int(hw[0]), int(hw[1])
    return (lambda image: stretch_image(image, pre, (height, width))), STRETCH


def build_calibration_set(
    data: str | os.PathLike[str],
    size: int,
    pre: Preprocessing,
    seed: int = 0,
    hw: tuple[int, int] | None = None,
) -> CalibrationSet:
    """Pick ``size`` images from a folder or tar (seeded shuffle of the sorted keys).

    ``hw`` (height, width) not square: each image is resized straight to it with ``pre``'s
    interpolation and normalization (no crop; ``pre``'s ``crop_pct`` is not used and is
    recorded as 1.0). Corrupt files are skipped (and listed) and the next image in the
    shuffled order is taken. No readable image is a DataError; fewer than
    ``MIN_RECOMMENDED`` warns.
    """
    from restv2_edge.data import open_unlabelled

    if size < 1:
        raise DataError(f"calibration size must be at least 1 (got {size})")
    if hw is not None and hw[0] == hw[1] and hw[0] != pre.image_size:
        pre = replace(pre, image_size=int(hw[0]))
    transform, rule = _image_transform(pre, hw)
    if rule == STRETCH:
        pre = replace(pre, image_size=int(hw[0]), crop_pct=1.0)  # type: ignore[index]
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
        arrays.append(transform(image))
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
    inputs = np.stack(arrays).astype(np.float32)
    return CalibrationSet(inputs, pre, sources, str(data), seed, skipped, rule)


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
        resize = meta.get("resize", CENTER_CROP)  # version 1 sets before it was recorded
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{folder}: unreadable calibration set: {exc}") from None
    if pre.problems():
        raise DataError(f"{folder}: calibration preprocessing: {pre.problems()[0]}")
    if resize not in RESIZE_RULES:
        raise DataError(
            f"{folder}: calibration resize {resize!r} is not one of {', '.join(RESIZE_RULES)}"
        )
    if inputs.dtype != np.float32 or inputs.ndim != 4 or inputs.shape[1] != 3:
        raise DataError(f"{folder}: {INPUTS_FILE} must be (N, 3, H, W) float32")
    calib = CalibrationSet(
        inputs,
        pre,
        list(meta.get("sources", [])),
        str(meta.get("data", "")),
        int(meta.get("seed", 0)),
        list(meta.get("skipped", [])),
        resize,
    )
    recorded = meta.get("image_size", _json_size(calib.image_size))
    if recorded != _json_size(calib.image_size):
        raise DataError(
            f"{folder}: {MANIFEST_FILE} says image size {recorded}, {INPUTS_FILE} is "
            f"{format_image_size(calib.image_size)}"
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
    """The request's calibration inputs, one (1, 3, H, W) array per image, checked against the
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
    image_size: int | tuple[int, int] | None,
    crop_pct: float | None = None,
    mean: str | None = None,
    std: str | None = None,
) -> Preprocessing:
    """Eval preprocessing from an own-format checkpoint's metadata (else defaults) + overrides.

    A (height, width) ``image_size`` that is not square gives the height as ``image_size``
    (pass the pair to ``build_calibration_set`` as ``hw``); it has no crop, so ``crop_pct``
    is refused with it.
    """
    from restv2_edge.config import check_image_size, image_hw

    if image_size is not None:
        height, width = image_hw(check_image_size(image_size))
        if height != width and crop_pct is not None:
            raise DataError(
                f"--crop-pct does nothing for a non-square size ({height}x{width}: each image "
                "is resized straight to it, no crop)"
            )
        image_size = height
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
    options: dict[str, Any],
    pre: Preprocessing,
    report: Any = lambda text: None,
    hw: tuple[int, int] | None = None,
) -> CalibrationSet | None:
    """Load (--calib) or build (--calib-data) the calibration set, checked against ``pre``
    (and a non-square model's ``hw``: a set stretched to that height x width)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        if options.get("calib"):
            calib = load_calibration_set(options["calib"])
        elif options.get("calib_data"):
            calib = build_calibration_set(
                options["calib_data"], int(options.get("calib_size") or 256), pre, hw=hw
            )
        else:
            return None
    for warning in caught:
        report(f"[yellow]warning:[/] {warning.message}")
    calib.check_matches(pre, hw)
    return calib
