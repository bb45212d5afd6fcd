"""The types and ranges of manifest.json's fields, checked before anything trusts them.

A manifest is input like any other: a hand-edited ``"image_size": "big"`` must be one clear
line, not a traceback three modules later. ``check_manifest`` returns the problems found
(the first is what the user sees); it never raises.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any

from restv2_edge.config import MAX_IMAGE_SIZE
from restv2_edge.preprocess import INTERPOLATIONS

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("target", "precision", "image_size", "num_classes", "model_file", "input", "output")
_KNOWN = (
    *_REQUIRED,
    "labels",
    "variant",
    "config",
    "graph_form",
    "files",
    "versions",
    "parity",
    "export",
    "quantization",
    "format_version",
    "head",
    "outputs",
    "output_norms",
    "checkpoint_layout",
)
HEADS = ("classifier", "features")
OUTPUT_NORMS = ("checkpoint", "identity")
RESIZES = ("center_crop", "stretch")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _positive_int(value: Any, high: int | None = None) -> bool:
    return _is_int(value) and value >= 1 and (high is None or value <= high)


def safe_relative_path(value: Any) -> str | None:
    """Why ``value`` is not a plain relative path inside a folder (None: it is)."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if "\\" in value or "\x00" in value:
        return "must use '/' separators and no NUL"
    path = PurePosixPath(value)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        return "must be relative to the artifact folder"
    if any(part in ("..", ".", "") for part in value.split("/")):
        return "must not contain '..', '.' or empty parts"
    return None


def check_manifest(data: Any, reader_version: int) -> list[str]:
    """Every problem with a parsed manifest, in a stable order (empty: usable)."""
    if not isinstance(data, dict):
        return ["the manifest must be a JSON object"]
    version = data.get("format_version", 1)
    if not _positive_int(version):
        return [f"format_version must be a positive integer (got {version!r})"]
    if version > reader_version:
        return [
            f"format_version {version} is newer than this restv2-edge reads "
            f"({reader_version}); upgrade restv2-edge"
        ]
    problems = [f"missing field {key!r}" for key in _REQUIRED if key not in data]
    problems += [f"unknown field {key!r}" for key in data if key not in _KNOWN]
    if problems:
        return problems
    problems += _check_core(data)
    problems += _check_files(data)
    problems += _check_input(data)
    problems += _check_head(data)
    problems += _check_output_and_labels(data)
    return problems


def _image_hw(value: Any) -> tuple[int, int] | None:
    """``image_size`` as (height, width): an int side or a [height, width] pair (None: neither)."""
    if _positive_int(value, MAX_IMAGE_SIZE):
        return value, value
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(_positive_int(v, MAX_IMAGE_SIZE) for v in value)
    ):
        return value[0], value[1]
    return None


def _features(data: dict[str, Any]) -> bool:
    return data.get("head", "classifier") == "features"


def _check_head(data: dict[str, Any]) -> list[str]:
    head = data.get("head", "classifier")
    if head not in HEADS:
        return [f"head must be one of {', '.join(HEADS)} (got {head!r})"]
    found = []
    norms = data.get("output_norms")
    if head == "features" and norms not in OUTPUT_NORMS:
        found.append(f"output_norms must be one of {', '.join(OUTPUT_NORMS)} for a features head")
    if head == "classifier" and norms is not None:
        found.append("output_norms must be null for a classifier")
    layout = data.get("checkpoint_layout")
    if layout is not None and not isinstance(layout, str):
        found.append("checkpoint_layout must be a string or null")
    outputs = data.get("outputs", [])
    if head == "features" and not outputs:
        found.append("a features manifest must list its outputs")
    if not isinstance(outputs, list):
        return [*found, "outputs must be a list"]
    batch = _input_batch(data)
    for entry in outputs:
        problem = _output_entry_problem(entry, batch)
        if problem:
            return [*found, problem]
    return found


def _input_batch(data: dict[str, Any]) -> int | None:
    shape = data["input"].get("shape") if isinstance(data["input"], dict) else None
    if isinstance(shape, list) and shape and _positive_int(shape[0]):
        return shape[0]
    return None


def _output_entry_problem(entry: Any, batch: int | None) -> str | None:
    """Why one ``outputs`` entry is unusable (None: fine)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        return "every outputs entry must be an object with a name"
    shape = entry.get("shape")
    if not (isinstance(shape, list) and shape and all(_positive_int(v) for v in shape)):
        return f"outputs {entry['name']}: shape must be a list of positive integers"
    if batch is not None and shape[0] != batch:
        return f"outputs {entry['name']}: shape {shape} does not start with the input batch {batch}"
    stride, channels = entry.get("stride"), entry.get("channels")
    if stride is not None and not _positive_int(stride):
        return f"outputs {entry['name']}: stride must be a positive integer or null"
    if not _positive_int(channels):
        return f"outputs {entry['name']}: channels must be a positive integer"
    return None


def _check_core(data: dict[str, Any]) -> list[str]:
    from restv2_edge.converters.base import target_names

    found = []
    targets = target_names()
    if data["target"] not in targets:
        found.append(f"target must be one of {', '.join(targets)} (got {data['target']!r})")
    if data["precision"] not in PRECISIONS:
        found.append(f"precision must be one of {', '.join(PRECISIONS)}")
    if _image_hw(data["image_size"]) is None:
        found.append(f"image_size must be an integer or [height, width] in 1..{MAX_IMAGE_SIZE}")
    if _features(data):
        if data["num_classes"] is not None:
            found.append("num_classes must be null for a features head")
    elif not _positive_int(data["num_classes"], 1_000_000):
        found.append("num_classes must be a positive integer")
    for key, kind in (
        ("config", dict),
        ("versions", dict),
        ("parity", dict),
        ("export", dict),
        ("graph_form", str),
    ):
        if key in data and not isinstance(data[key], kind):
            found.append(f"{key} must be a JSON {'object' if kind is dict else 'string'}")
    if data.get("quantization") is not None and not isinstance(data["quantization"], dict):
        found.append("quantization must be a JSON object or null")
    if data.get("variant") is not None and not isinstance(data["variant"], str):
        found.append("variant must be a string or null")
    return found


def _check_files(data: dict[str, Any]) -> list[str]:
    files = data.get("files")
    if not isinstance(files, list) or not files:
        return ["files must be a non-empty list"]
    found, seen = [], set()
    for entry in files:
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "bytes"}:
            return ["every files entry must be an object with path, sha256 and bytes"]
        problem = safe_relative_path(entry["path"])
        if problem:
            found.append(f"files path {entry['path']!r} {problem}")
        elif entry["path"] in seen:
            found.append(f"files lists {entry['path']!r} twice")
        seen.add(entry["path"])
        if not isinstance(entry["sha256"], str) or not _SHA256.fullmatch(entry["sha256"]):
            found.append(f"files sha256 of {entry['path']!r} must be 64 lowercase hex digits")
        if not _is_int(entry["bytes"]) or entry["bytes"] < 0:
            found.append(f"files bytes of {entry['path']!r} must be a non-negative integer")
    problem = safe_relative_path(data["model_file"])
    if problem:
        found.append(f"model_file {data['model_file']!r} {problem}")
    return found


def _check_input(data: dict[str, Any]) -> list[str]:
    spec = data["input"]
    if not isinstance(spec, dict):
        return ["input must be a JSON object"]
    needed = ("name", "shape", "layout", "scale", "mean", "std", "crop_pct")
    missing = [key for key in needed if key not in spec]
    if missing:
        return [f"input is missing {', '.join(missing)}"]
    found = []
    shape = spec["shape"]
    if not (isinstance(shape, list) and len(shape) == 4 and all(_positive_int(v) for v in shape)):
        found.append("input.shape must be four positive integers")
    elif _image_hw(data["image_size"]) and (
        shape[1] != 3 or tuple(shape[2:]) != _image_hw(data["image_size"])
    ):
        found.append(f"input.shape {shape} does not match image_size {data['image_size']}")
    if spec.get("resize", "center_crop") not in RESIZES:
        found.append(f"input.resize must be one of {', '.join(RESIZES)}")
    if not isinstance(spec["name"], str) or not isinstance(spec["layout"], str):
        found.append("input.name and input.layout must be strings")
    if not isinstance(spec.get("dynamic_batch", False), bool):
        found.append("input.dynamic_batch must be true or false")
    sizes = spec.get("batch_sizes")
    if sizes is not None and not (
        isinstance(sizes, list) and sizes and all(_positive_int(v) for v in sizes)
    ):
        found.append("input.batch_sizes must be a non-empty list of positive integers")
    if not _is_number(spec["scale"]) or spec["scale"] <= 0:
        found.append("input.scale must be a positive number")
    for key in ("mean", "std"):
        values = spec[key]
        if not (isinstance(values, list) and len(values) == 3 and all(map(_is_number, values))):
            found.append(f"input.{key} must be three finite numbers")
        elif key == "std" and min(values) <= 0:
            found.append("input.std must be positive")
    if not _is_number(spec["crop_pct"]) or not 0 < spec["crop_pct"] <= 1:
        found.append("input.crop_pct must be in (0, 1]")
    if spec.get("interpolation", "bicubic") not in INTERPOLATIONS:
        found.append(f"input.interpolation must be one of {', '.join(INTERPOLATIONS)}")
    return found


def _batch_mismatch(data: dict[str, Any]) -> bool:
    """Whether output.shape[0] differs from a valid input.shape[0] (both are the batch N)."""
    if not isinstance(data["input"], dict):
        return False
    shape, batch = data["output"].get("shape"), data["input"].get("shape")
    if not (isinstance(shape, list) and shape and isinstance(batch, list) and batch):
        return False
    return _positive_int(batch[0]) and shape[0] != batch[0]


def _check_output_and_labels(data: dict[str, Any]) -> list[str]:
    found = []
    spec = data["output"]
    if spec is None and _features(data):
        pass
    elif not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        found.append("output must be an object with a name")
    elif spec.get("shape") is not None and not (
        isinstance(spec["shape"], list) and all(_positive_int(v) for v in spec["shape"])
    ):
        found.append("output.shape must be a list of positive integers")
    elif _batch_mismatch(data):
        found.append(
            f"output.shape {spec['shape']} does not start with the input batch "
            f"{data['input']['shape'][0]}"
        )
    labels = data.get("labels")
    if isinstance(labels, list):
        if not all(isinstance(label, str) for label in labels):
            found.append("labels must be a list of strings")
        elif _features(data) and labels:
            found.append("labels must be empty for a features head")
        elif _is_int(data["num_classes"]) and len(labels) != data["num_classes"]:
            found.append(f"{len(labels)} labels for num_classes {data['num_classes']}")
    elif isinstance(labels, str):
        problem = safe_relative_path(labels)
        if problem:
            found.append(f"labels file {labels!r} {problem}")
    else:
        found.append("labels must be a list of class names or a file name in the folder")
    return found
