"""Golden vectors: real photos with the exact input tensor and top-5 an artifact gives them.

The demo apps (apps/ios, apps/android, apps/web) test their own decoding, preprocessing and
top-k against these files. The format is documented in apps/README.md; in short::

    DIR/golden.json        index (below)
    DIR/manifest.json      the artifact's manifest, byte for byte
    DIR/000/<photo>        the photo file itself, byte for byte
    DIR/000/decoded.rgb    the photo as PIL decodes it: uint8, (H, W, 3), row-major RGB
    DIR/000/resized.rgb    after resize + center crop: uint8, (S, S, 3)
    DIR/000/input.f32      the model input: float32 little-endian, (1, 3, S, S)

``golden.json`` lists, per image, those paths with shapes and dtypes, whether the photo embeds
an ICC profile (not applied) and its EXIF orientation (``decoded.rgb`` is before it; the
resized crop and the input are of the upright photo, as the apps compute them), the logits
the artifact's own runtime computed, and the top-5 (index, label, softmax probability).

A features artifact (``head`` "features") has no logits: each image lists ``outputs``, one
float32 file per output (``000/stage1.f32``, (1, C, H/stride, W/stride)) with its name, path,
shape and dtype. A stretch-resized (non-square) artifact's ``resized.rgb`` is the photo
resized to exactly (H, W, 3), no crop.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.errors import DataError
from restv2_edge.manifest import MANIFEST_NAME
from restv2_edge.publish import check_output, staged_dir

GOLDEN_FORMAT = "restv2-edge-golden"
GOLDEN_VERSION = 1
GOLDEN_INDEX = "golden.json"
DEFAULT_IMAGES = 4
TOP_K = 5


def _write_array(folder: Path, rel: str, array: np.ndarray) -> dict[str, Any]:
    """Raw bytes in C order (float32 little-endian); the entry names path, shape and dtype."""
    if array.dtype == np.float32:
        array = array.astype("<f4", copy=False)
    (folder / rel).write_bytes(np.ascontiguousarray(array).tobytes(order="C"))
    entry: dict[str, Any] = {"path": rel, "shape": list(array.shape), "dtype": str(array.dtype)}
    if array.dtype.kind == "f":
        entry["byte_order"] = "little"
    return entry


def _photo_metadata(raw: bytes) -> tuple[bool, int | None]:
    """Whether the file embeds an ICC profile, and its EXIF orientation tag (None: absent).

    Neither is applied by the Python side (nor in ``decoded``); apps whose platform decoder
    colour-manages or rotates can tell from these which photos they cannot match exactly.
    """
    from PIL import Image

    with Image.open(io.BytesIO(raw)) as image:
        orientation = image.getexif().get(0x0112)
        return "icc_profile" in image.info, int(orientation) if orientation is not None else None


def _photos(data: str | os.PathLike[str] | None, count: int) -> tuple[Any, list[str]]:
    """The image source and ``count`` keys evenly spread over it (sorted, deterministic)."""
    from restv2_edge.data import default_photo_dir, open_unlabelled

    folder = Path(data) if data is not None else default_photo_dir()
    if data is None and not folder.is_dir():
        raise DataError(
            f"no photos: the shared ImageNet sample is not at {folder}; pass --data FOLDER"
        )
    source = open_unlabelled(folder).subset(count)
    return source, [key for key, _ in source.items]


def write_golden(
    artifact: str | os.PathLike[str],
    output: str | os.PathLike[str],
    images: int = DEFAULT_IMAGES,
    data: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Write golden vectors for ``artifact`` into ``output`` (atomically); return path and index.

    The artifact is verified (sha256 of every file) and run through its own runner. Nothing is
    written under ``output`` unless every step succeeded.
    """
    from restv2_edge.artifact import open_artifact, top_k
    from restv2_edge.data import upright_image
    from restv2_edge.preprocess import normalize, resize_and_crop

    if images < 1:
        raise DataError("--images must be at least 1")
    artifact = Path(artifact)
    output = Path(output)
    check_output(output, force)
    manifest, runner = open_artifact(artifact)
    names = [] if manifest.features else manifest.class_names(artifact)
    pre = manifest.normalization()
    source, keys = _photos(data, images)

    with staged_dir(output, force) as work:
        shutil.copyfile(artifact / MANIFEST_NAME, work / MANIFEST_NAME)
        entries, inputs, skipped = [], [], []
        for key in keys:
            raw = source.read(key)
            try:
                image = source.open(key, upright=False)
            except DataError:
                skipped.append(key)
                continue
            folder = f"{len(entries):03d}"
            (work / folder).mkdir()
            photo = f"{folder}/{Path(key).name}"
            (work / photo).write_bytes(raw)
            decoded = np.asarray(image, dtype=np.uint8)
            icc, orientation = _photo_metadata(raw)
            upright = upright_image(image, orientation)
            resized = _resized(upright, manifest, pre, resize_and_crop)
            tensor = normalize(resized, pre)[None]
            inputs.append(tensor)
            entries.append(
                {
                    "name": Path(key).stem,
                    "source": key,
                    "photo": photo,
                    "photo_sha256": hashlib.sha256(raw).hexdigest(),
                    "icc_profile": icc,
                    "exif_orientation": orientation,
                    "decoded": _write_array(work, f"{folder}/decoded.rgb", decoded),
                    "resized": _write_array(work, f"{folder}/resized.rgb", resized),
                    "input": _write_array(work, f"{folder}/input.f32", tensor),
                }
            )
        if not entries:
            raise DataError(f"{source.location}: no readable photo for golden vectors")
        result = runner(np.concatenate(inputs))
        if manifest.features:
            _write_outputs(work, entries, manifest.output_names, result)
        else:
            k = min(TOP_K, manifest.num_classes)
            for entry, row in zip(entries, result):
                entry["logits"] = [float(v) for v in np.asarray(row, dtype=np.float32)]
                entry["top5"] = top_k(row, names, k)
        model_entry = next(
            (f for f in manifest.files if f["path"] == manifest.model_file),
            {"sha256": None},
        )
        index = {
            "format": GOLDEN_FORMAT,
            "format_version": GOLDEN_VERSION,
            "manifest": MANIFEST_NAME,
            "artifact": {
                "target": manifest.target,
                "precision": manifest.precision,
                "model_file": manifest.model_file,
                "model_sha256": model_entry["sha256"],
                "runner": runner.description,
            },
            "data": str(source.location),
            "skipped": skipped,
            "images": entries,
        }
        (work / GOLDEN_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return output, index


def _resized(image: Any, manifest: Any, pre: Any, crop: Any) -> np.ndarray:
    """The upright photo as the input's pixels: center crop, or straight to (H, W)."""
    if manifest.resize == "center_crop":
        return crop(image, pre)
    from PIL import Image

    height, width = manifest.input_hw
    filters = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    resized = image.convert("RGB").resize((width, height), filters[pre.interpolation])
    return np.asarray(resized, dtype=np.uint8)


def _write_outputs(
    work: Path, entries: list[dict[str, Any]], names: list[str], maps: list[np.ndarray]
) -> None:
    """A features artifact's outputs: one float32 file per image and output."""
    for index, entry in enumerate(entries):
        folder = entry["photo"].split("/")[0]
        entry["outputs"] = [
            {"name": name, **_write_array(work, f"{folder}/{name}.f32", array[index : index + 1])}
            for name, array in zip(names, maps)
        ]


def read_golden(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The golden index with each image's arrays loaded (``decoded``, ``resized``, ``input``)."""
    folder = Path(folder)
    path = folder / GOLDEN_INDEX
    if not path.is_file():
        raise DataError(f"{folder} holds no golden vectors (no {GOLDEN_INDEX})")
    index = json.loads(path.read_text())
    dtypes = {"uint8": np.uint8, "float32": np.dtype("<f4")}
    for entry in index["images"]:
        for name in ("decoded", "resized", "input"):
            spec = entry[name]
            raw = (folder / spec["path"]).read_bytes()
            entry[name + "_array"] = np.frombuffer(raw, dtypes[spec["dtype"]]).reshape(
                spec["shape"]
            )
        for spec in entry.get("outputs", []):
            raw = (folder / spec["path"]).read_bytes()
            spec["array"] = np.frombuffer(raw, dtypes[spec["dtype"]]).reshape(spec["shape"])
    return index
