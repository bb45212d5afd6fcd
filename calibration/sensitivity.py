"""Accuracy guard for INT8: per-layer sensitivity and ``--max-drop``, onnx here; openvino
through NNCF's accuracy control (calibration/openvino.py); executorch and coreml through the
PT2E guard (calibration/pt2e_guard.py). The shared pieces (held-back data, the manifest
record, the dispatch) live here.

ONNX sensitivity: calibrate once (onnxruntime's calibration cache), then quantize each MatMul/
Conv/Gemm *alone* and measure how far its logits move from the fp32 graph's (1 - mean
cosine over calibration images). ``--max-drop P``: quantize everything; while the top-1
drop on held-back labelled images (not in the calibration set) exceeds P points, keep the
most sensitive layers in float (1, 2, 4, ... of them). The layers kept float and the
measured accuracies go into the manifest.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.calibration.dataset import calibration_batches, quantization_record

from restv2_edge.errors import DataError, ExportError

#: calibration images used to score each layer
SENSITIVITY_IMAGES = 32
#: held-back labelled images for --max-drop
ACCURACY_LIMIT = 500
MAX_DROP_TARGETS = ("onnx", "openvino", "executorch", "coreml")
#: targets ``calibrate --sensitivity`` ranks layers for
SENSITIVITY_TARGETS = ("onnx", "openvino", "executorch", "coreml")


class OnnxQuantizer:
    """One fp32 ONNX graph, calibrated once, quantized with any set of layers kept float."""

    def __init__(self, fp32_path: Path, batches: list[np.ndarray], method: str, work: Path):
        from onnxruntime.quantization.shape_inference import quant_pre_process
        from restv2_edge.calibration.onnx import quantizable_nodes
        from restv2_edge.converters.onnx import INPUT_NAME

        self.work = work
        self.prepared = work / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(self.prepared), skip_symbolic_shape=True)
        except Exception:  # an optimization only
            self.prepared = fp32_path
        self.cache = work / "calibration-cache.json"
        self.batches = batches
        self.method = method
        self.input_name = INPUT_NAME
        self.nodes = quantizable_nodes(self.prepared)
        self.fp32_path = fp32_path
        self._count = 0

    def quantize(self, exclude: list[str] | None = None, only: list[str] | None = None) -> Path:
        """A quantized copy (ranges from the shared calibration cache)."""
        from restv2_edge.calibration.onnx import quantize_onnx_file

        self._count += 1
        out = self.work / f"q{self._count}.onnx"
        quantize_onnx_file(
            self.prepared,
            out,
            self.batches,
            self.input_name,
            self.method,
            exclude,
            only=only,
            cache=self.cache,
            preprocess=False,
        )
        return out

    def session(self, path: Path) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def logits(self, session: Any, images: np.ndarray) -> np.ndarray:
        batch = int(session.get_inputs()[0].shape[0])
        outs = []
        for start in range(0, len(images) - batch + 1, batch):
            chunk = np.ascontiguousarray(images[start : start + batch], np.float32)
            outs.append(session.run(None, {self.input_name: chunk})[0])
        return np.concatenate(outs)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(((a * b).sum(axis=1) / np.maximum(norms, 1e-30)).mean())


def rank_layers(quantizer: OnnxQuantizer, images: np.ndarray) -> list[dict[str, Any]]:
    """Every quantizable layer with the logits error its quantization alone causes."""
    reference = quantizer.logits(quantizer.session(quantizer.fp32_path), images)
    if not quantizer.cache.is_file():  # calibrate every tensor once, before single layers
        quantizer.quantize().unlink(missing_ok=True)
    rows = []
    for node in quantizer.nodes:
        path = quantizer.quantize(only=[node])
        value = cosine(reference, quantizer.logits(quantizer.session(path), images))
        path.unlink(missing_ok=True)
        rows.append({"layer": node, "cosine": value, "error": 1.0 - value})
    rows.sort(key=lambda row: row["error"], reverse=True)
    return rows


def _fp32_onnx(graph: Any, example: Any, work: Path) -> Path:
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.converters.onnx import CONVERTER, MODEL_FILE

    folder = work / "fp32"
    folder.mkdir()
    CONVERTER.export(graph, example, folder, ExportRequest(), lambda step: None)
    return folder / MODEL_FILE


def run_sensitivity(
    target: str, variant: Any, weights: str, calib: Any, images: int = SENSITIVITY_IMAGES
) -> dict[str, Any]:
    """Rank the layers of the checkpoint's model by their INT8 sensitivity for ``target``:
    onnxruntime's quantizer (onnx), else a PyTorch simulation of the target's scheme
    (calibration/pt2e_guard.py: XNNPACKQuantizer for executorch/coreml; for openvino the
    same int8 scheme on weights and inputs only, where NNCF puts its FakeQuantize)."""
    import torch
    from restv2_edge.converters.base import get_converter

    from restv2_edge.export import export_graph
    from restv2_edge.factory import create_model

    if target not in SENSITIVITY_TARGETS:
        raise ExportError(
            f"sensitivity analysis is implemented for {', '.join(SENSITIVITY_TARGETS)}, "
            f"not {target}"
        )
    model = create_model(variant, calib.image_size, None, weights)
    calib.check_matches(model.preprocessing)
    if target == "onnx":
        graph = export_graph(model, "native", False)
        example = torch.from_numpy(calib.inputs[:1].copy())
        with tempfile.TemporaryDirectory(prefix="restv2-sensitivity-") as tmp:
            work = Path(tmp)
            fp32 = _fp32_onnx(graph, example, work)
            rows = rank_layers(OnnxQuantizer(fp32, calib.batches(), "minmax", work),
                               calib.inputs[:images])  # fmt: skip
        metric = "1 - mean cosine(logits fp32, logits with only this layer int8)"
    else:
        from restv2_edge.calibration.pt2e_guard import rank_modules

        graph = export_graph(model, get_converter(target).graph_form, False)
        outputs = target != "openvino"
        rows = rank_modules(graph, calib.inputs, calib.inputs[:images], outputs)
        metric = (
            "1 - mean cosine(logits fp32, logits with only this module fake-quantized in "
            "PyTorch: int8 per-channel weights, per-tensor min/max activations "
            f"({'input and output' if outputs else 'input'}))"
        )
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


def held_back_data(
    request: Any, pre: Any, limit: int = ACCURACY_LIMIT
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled images (default: CIFAR-10 test) minus the calibration images, preprocessed."""
    from restv2_edge.data import open_labelled, shared_data_root
    from restv2_edge.preprocess import preprocess_image

    path = request.quantization.get("accuracy_data") or shared_data_root() / "cifar10" / "test.tar"
    source = open_labelled(path)
    used = {entry.get("sha256") for entry in (request.calibration.sources or [])}
    source = source.subset(limit)
    images, labels = [], []
    for key, label, image in source.iter_images():
        if image is None or label < 0:
            continue
        if used and hashlib.sha256(source.read(key)).hexdigest() in used:
            continue
        images.append(preprocess_image(image, pre))
        labels.append(label)
    if not images:
        raise DataError(f"{path}: no labelled image for --max-drop")
    return np.stack(images), np.asarray(labels)


def max_drop_record(
    request: Any, limit: float, images: int, fp32_top1: float, int8_top1: float, trials: list
) -> dict[str, Any]:
    """The manifest's ``quantization.max_drop`` (shared by every target's guard)."""
    return {
        "limit_points": limit,
        "data": str(request.quantization.get("accuracy_data") or "cifar10/test.tar"),
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
    final.quantization = {
        key: value for key, value in request.quantization.items() if key != "max_drop"
    }
    final.quantization["keep_float"] = keep
    return final


def export_within_drop(
    target: str, model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """INT8 with the most sensitive layers kept float until the top-1 drop is <= max_drop."""
    from restv2_edge.calibration.dataset import model_preprocessing
    from restv2_edge.calibration.onnx import DEFAULT_METHOD, export_int8
    from restv2_edge.calibration.pt2e import regroup

    from restv2_edge.parity import torch_logits

    if target not in MAX_DROP_TARGETS:
        raise ExportError(
            f"--max-drop is implemented for {', '.join(MAX_DROP_TARGETS)}, not {target}"
        )
    if request.raw_input:
        raise ExportError("--max-drop needs a normalized-input export (no --raw-input)")
    if target == "openvino":  # NNCF's own accuracy control
        from restv2_edge.calibration.openvino import export_int8_within_drop

        return export_int8_within_drop(model, example, workdir, request, progress)
    from restv2_edge.calibration.pt2e_guard import PT2E_TARGETS
    from restv2_edge.calibration.pt2e_guard import export_within_drop as pt2e_within_drop

    if target in PT2E_TARGETS:
        if request.quantization.get("weights_only"):
            raise ExportError("--max-drop needs calibrated W8A8 int8, not --weights-only")
        return pt2e_within_drop(target, model, example, workdir, request, progress)
    limit = float(request.quantization["max_drop"])
    method = request.quantization.get("method", DEFAULT_METHOD)
    batches = regroup(calibration_batches(model, request), request.batch_size)
    images, labels = held_back_data(request, model_preprocessing(model))
    images = images[: len(images) - len(images) % request.batch_size]
    labels = labels[: len(images)]
    fp32_top1 = float((torch_logits(model, images).argmax(1) == labels).mean() * 100)
    progress("sensitivity")
    with tempfile.TemporaryDirectory(prefix="restv2-maxdrop-") as tmp:
        work = Path(tmp)
        quantizer = OnnxQuantizer(_fp32_onnx(model, example, work), batches, method, work)
        trials = []

        def top1(exclude: list[str]) -> float:
            path = quantizer.quantize(exclude=exclude)
            logits = quantizer.logits(quantizer.session(path), images)
            path.unlink(missing_ok=True)
            value = float((logits.argmax(1) == labels).mean() * 100)
            trials.append({"kept_float": len(exclude), "top1": value})
            return value

        keep, accuracy = keep_float_until_within(
            top1,
            lambda: rank_layers(quantizer, np.concatenate(batches)[:SENSITIVITY_IMAGES]),
            fp32_top1,
            limit,
        )
    final = final_request(request, keep)
    result = export_int8(model, example, workdir, final, progress)
    result.quantization = {
        **quantization_record(final, method),
        **{k: v for k, v in result.quantization.items() if k != "layers_kept_float"},
        "max_drop": max_drop_record(request, limit, len(images), fp32_top1, accuracy, trials),
    }
    return result
