"""Accuracy guard for INT8, the pieces every target's guard shares: held-back labelled data,
the keep-float loop, the manifest record, and ``calibrate --sensitivity``.

Each target's recipe declares its own guard and ranker (``Int8Recipe.max_drop`` /
``.sensitivity``): onnxruntime's quantizer with single layers quantized (calibration/onnx.py),
NNCF's accuracy control (calibration/openvino.py), the PT2E graph (calibration/pt2e_guard.py,
executorch and coreml). ``--max-drop P``: quantize everything; while the top-1 drop on
held-back labelled images (not in the calibration set) exceeds P points, keep the most
sensitive layers in float (1, 2, 4, ... of them). The layers kept float and the measured
accuracies go into the manifest.

Labels are matched to the model's classes by name (``restv2_edge.evaluate.label_mapping``), so
a folder's class order never matters; the default data (CIFAR-10 test) serves only models whose
classes include CIFAR-10's.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from restv2_edge.errors import DataError, ExportError

#: calibration images used to score each layer
SENSITIVITY_IMAGES = 32
#: held-back labelled images for --max-drop
ACCURACY_LIMIT = 500
#: --max-drop's labelled data when none is given, inside the shared data folder
DEFAULT_ACCURACY_DATA = "cifar10/test.tar"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.maximum(norms, 1e-30)).mean())


def run_sensitivity(
    target: str, variant: Any, weights: str, calib: Any, images: int = SENSITIVITY_IMAGES
) -> dict[str, Any]:
    """Rank the layers of the checkpoint's model by their INT8 sensitivity for ``target``,
    with the ranker its recipe declares, on the graph form its converter exports."""
    from restv2_edge.calibration.recipes import get_recipe, has_int8_recipe, targets_where
    from restv2_edge.converters.base import get_descriptor

    from restv2_edge.export import export_graph, normalization
    from restv2_edge.factory import create_model

    ranker = get_recipe(target).sensitivity if has_int8_recipe(target) else None
    if ranker is None:
        offered = targets_where(lambda other: other.sensitivity is not None)
        raise ExportError(
            f"sensitivity analysis is implemented for {', '.join(offered)}, not {target}"
        )
    model = create_model(variant, calib.image_size, None, weights)
    calib.check_matches(normalization(model), model.input_hw)
    graph = export_graph(model, get_descriptor(target).graph_form, False)
    rows, metric = ranker(graph, calib, images)
    return {
        "target": target,
        "calibration": calib.summary(),
        "images": int(min(images, calib.size)),
        "metric": metric,
        "layers": rows,
    }


def render_sensitivity(report: dict[str, Any], top: int, echo: Callable[[str], None]) -> None:
    echo(f"{'rank':>4}  {'1-cosine':>10}  layer")
    for rank, row in enumerate(report["layers"][:top], 1):
        echo(f"{rank:>4}  {row['error']:10.3e}  {row['layer']}")


def held_back_data(request: Any, limit: int = ACCURACY_LIMIT) -> tuple[np.ndarray, np.ndarray]:
    """Labelled images minus the calibration images, preprocessed as the request's model
    expects, with labels as the model's class indices (matched by class name).

    Without ``accuracy_data`` this is CIFAR-10 test, which only serves a model whose classes
    include CIFAR-10's; data whose classes are not among the model's is a DataError.
    """
    from restv2_edge.data import open_labelled, shared_data_root
    from restv2_edge.evaluate import label_mapping
    from restv2_edge.preprocess import preprocess_image

    pre = request.preprocessing
    if pre is None:
        raise ExportError("--max-drop needs the model's preprocessing on the export request")
    names = list(request.class_names or [])
    given = request.quantization.accuracy_data
    path = given or shared_data_root() / DEFAULT_ACCURACY_DATA
    if not given and not path.exists():
        raise DataError(
            f"--max-drop: the default held-back data {path} is missing; "
            "give labelled images of the model's classes with --accuracy-data"
        )
    source = open_labelled(path)
    if not given and not set(source.class_names) <= set(names):
        raise DataError(
            f"--max-drop: the default held-back data ({DEFAULT_ACCURACY_DATA}) has classes the "
            "model does not have; give labelled images of the model's classes with "
            "--accuracy-data"
        )
    try:
        mapping = label_mapping(source.class_names, names)
    except DataError as exc:
        raise DataError(f"--max-drop data {path}: {exc}") from None
    calib = request.calibration
    used = {entry.get("sha256") for entry in (calib.sources if calib is not None else [])}
    source = source.subset(limit)
    images, labels = [], []
    for key, label, image in source.iter_images():
        if image is None or label < 0:
            continue
        if used and hashlib.sha256(source.read(key)).hexdigest() in used:
            continue
        images.append(preprocess_image(image, pre))
        labels.append(int(mapping[label]))
    if not images:
        raise DataError(f"{path}: no labelled image for --max-drop")
    return np.stack(images), np.asarray(labels)


def top1_percent(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float((logits.argmax(1) == labels).mean() * 100)


def max_drop_record(
    request: Any, limit: float, images: int, fp32_top1: float, int8_top1: float, trials: list
) -> dict[str, Any]:
    """The manifest's ``quantization.max_drop`` (shared by every target's guard)."""
    return {
        "limit_points": limit,
        "data": str(request.quantization.accuracy_data or DEFAULT_ACCURACY_DATA),
        "images": int(images),
        "fp32_top1": fp32_top1,
        "int8_top1": int8_top1,
        "drop_points": fp32_top1 - int8_top1,
        "within_limit": fp32_top1 - int8_top1 <= limit,
        "trials": trials,
    }


def keep_float_until_within(
    top1: Callable[[list[str]], float],
    rank: Callable[[], list[dict[str, Any]]],
    fp32_top1: float,
    limit: float,
) -> tuple[list[str], float]:
    """Layers to keep float and the top-1 then: none, else the 1, 2, 4, ... most sensitive
    (``rank`` runs only when needed) until the drop is within ``limit`` points."""
    keep: list[str] = []
    accuracy = top1(keep)
    if fp32_top1 - accuracy > limit:
        ranking = rank()
        count = 1
        while fp32_top1 - accuracy > limit and len(keep) < len(ranking):
            keep = [row["layer"] for row in ranking[:count]]
            accuracy = top1(keep)
            count *= 2
    return keep, accuracy


def final_request(request: Any, keep: list[str]) -> Any:
    """The request for the artifact itself: no ``max_drop``, ``keep`` in float."""
    final = copy.copy(request)
    final.quantization = dataclasses.replace(
        request.quantization, max_drop=None, keep_float=tuple(keep)
    )
    return final
