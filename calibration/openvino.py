"""OpenVINO INT8: NNCF post-training quantization of the OpenVINO model (TRANSFORMER preset).

The fp32 IR comes from converters/openvino.py (same names, same canonical node names); NNCF
``quantize`` with ``model_type=TRANSFORMER`` (transformer-aware ignored patterns), the
performance preset (symmetric int8 activations: 8-11 % faster than the mixed preset's
asymmetric ones on the Intel AMX CPU, on par on AMD Zen 5, same accuracy; docs/int8.md)
and SmoothQuant off inserts FakeQuantize nodes, and the CPU plugin runs the int8 kernels.
Non-quantized ops run at the inference precision recorded in the manifest.

Statistics collection: NNCF compiles the model with every intermediate tensor added as an
output. With the CPU plugin's snippets on (its default), that compile segfaults when a
ScaledDotProductAttention feeds an Add that is also an output (the one-head stage-1 blocks;
OpenVINO 2026.4, docs/int8.md). NNCF takes no compile options, so ``snippets_disabled``
adds ``SNIPPETS_MODE=DISABLE`` to its compiles for the duration of ``nncf.quantize``; the
artifact itself compiles normally.

Batch: NNCF calibrates on batches of the artifact's batch size, and the accuracy checks of
``--max-drop`` run one image at a time; a static batch above 1 is therefore quantized as a
dynamic-batch model and reshaped to its static batch afterwards (``static_batch``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from restv2_edge.calibration.dataset import calibration_batches, quantization_record
from restv2_edge.calibration.pt2e import regroup
from restv2_edge.calibration.pt2e_guard import rank_simulated
from restv2_edge.calibration.recipes import Int8Recipe
from restv2_edge.calibration.sensitivity import held_back_data, max_drop_record, top1_percent

from restv2_edge.errors import ExportError

#: CPU plugin precision for the ops NNCF leaves in float (f32: the parity gate; docs/int8.md)
INFERENCE_PRECISION = "f32"
#: symmetric activations and weights; measured against the mixed preset in docs/int8.md
PRESET = "performance"
#: SmoothQuant off (-1). Measured on the CIFAR-10 fixture, 500 test images, logits cosine vs
#: fp32: 0.954 with the TRANSFORMER default, 0.993 at alpha 0.5, 0.997 at 0.25, 0.997 off.
SMOOTH_QUANT_ALPHA = -1.0


@contextlib.contextmanager
def snippets_disabled() -> Iterator[None]:
    """Every ``openvino.Core.compile_model`` inside the block runs with snippets disabled."""
    from unittest import mock

    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self: Any, model: Any, device_name: Any = None, config: Any = None) -> Any:
        return original(self, model, device_name, {**(config or {}), "SNIPPETS_MODE": "DISABLE"})

    with mock.patch.object(ov.Core, "compile_model", compile_model):
        yield


def export_int8(model: Any, example: Any, workdir: Path, request: Any, progress: Any) -> Any:
    """converters/openvino.py fp32 IR -> nncf.quantize -> model.xml/.bin (float32 storage)."""
    return _export(model, example, workdir, request, progress, None)


def export_int8_within_drop(
    model: Any, example: Any, workdir: Path, request: Any, progress: Any
) -> Any:
    """``--max-drop``: NNCF's own accuracy control (``quantize_with_accuracy_control``) reverts
    the layers that cost the most top-1 to float until the drop on held-back labelled images
    is within the limit; skipped when plain quantization is already within it."""
    from restv2_edge.parity import torch_logits

    images, labels = held_back_data(request)
    fp32_top1 = top1_percent(torch_logits(model, images), labels)
    return _export(model, example, workdir, request, progress, (images, labels, fp32_top1))


def _top1(compiled: Any, images: Any, labels: Any) -> list[float]:
    return [float(compiled(images[i : i + 1])[0].argmax() == labels[i]) for i in range(len(images))]


def _float_weight_ops(model: Any) -> set[str]:
    """MatMul/convolutions with a constant weight that no FakeQuantize feeds."""
    names = set()
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("MatMul", "Convolution", "GroupConvolution"):
            continue
        producers = [value.get_node() for value in op.input_values()]
        if any(p.get_type_name() == "FakeQuantize" for p in producers):
            continue
        if any(p.get_type_name() in ("Constant", "Convert") for p in producers):
            names.add(op.get_friendly_name())
    return names


def nncf_settings(subset_size: int, keep_float: Any = ()) -> tuple[dict[str, Any], Any]:
    """The recipe's ``nncf.quantize`` keyword arguments (TRANSFORMER model type, the preset,
    ``keep_float`` node names ignored) and its advanced parameters (SmoothQuant off)."""
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    keep = list(keep_float)
    settings: dict[str, Any] = {
        "model_type": nncf.ModelType.TRANSFORMER,
        "preset": nncf.QuantizationPreset(PRESET),
        "subset_size": subset_size,
        "ignored_scope": nncf.IgnoredScope(names=keep) if keep else None,
    }
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=SMOOTH_QUANT_ALPHA)
    )
    return settings, advanced


def _export(
    model: Any, example: Any, workdir: Path, request: Any, progress: Any, accuracy: Any
) -> Any:
    import nncf
    import openvino as ov
    from restv2_edge.converters.openvino import CONVERTER, MODEL_FILE, canonical_names

    batches = regroup(calibration_batches(model, request), request.batch_size)
    fp32_request = copy.copy(request)
    fp32_request.precision = "fp32"
    fp32_request.dynamic_batch = request.dynamic_batch or request.batch_size > 1
    staging = workdir / "fp32"
    staging.mkdir()
    settings, advanced = nncf_settings(len(batches), request.quantization.keep_float)
    max_drop: dict[str, Any] | None = None
    try:
        result = CONVERTER.export(model, example, staging, fp32_request, progress)
        progress("calibrate")
        fp32 = ov.Core().read_model(str(staging / MODEL_FILE))
        try:
            with snippets_disabled():
                quantized = nncf.quantize(
                    fp32, nncf.Dataset(batches), advanced_parameters=advanced, **settings
                )
                if accuracy is not None:
                    quantized, max_drop = _restore_accuracy(
                        fp32, quantized, batches, accuracy, request, settings, advanced, progress
                    )
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"nncf.quantize failed: {exc}") from exc
        if not request.dynamic_batch:
            static_batch(quantized, example.shape)
        canonical_names(quantized)
        ov.save_model(quantized, str(workdir / MODEL_FILE), compress_to_fp16=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fake_quantize = sum(
        1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
    )
    result.versions = {**result.versions, "nncf": nncf.__version__}
    result.info = {
        **result.info,
        "weights": "int8",
        "inference_precision": INFERENCE_PRECISION,
        "nodes": len(quantized.get_ordered_ops()),
    }
    record = copy.copy(request)
    if max_drop is not None:
        kept = tuple(max_drop.pop("kept_float"))
        record.quantization = dataclasses.replace(request.quantization, keep_float=kept)
    result.quantization = quantization_record(
        record,
        "minmax",
        tool=f"nncf.quantize (model_type=TRANSFORMER, {PRESET} preset, SmoothQuant off)"
        + (" + quantize_with_accuracy_control" if max_drop else ""),
        activations="int8 symmetric per-tensor static (NNCF performance preset)",
        weights="int8 symmetric per-channel",
        fake_quantize_nodes=fake_quantize,
        **({"max_drop": max_drop} if max_drop is not None else {}),
    )
    return result


def static_batch(model: Any, shape: Any) -> None:
    """Fix the input of ``model`` (in place) to ``shape`` (its static batch), checked static."""
    from restv2_edge.converters.openvino import check_shapes

    if model.inputs[0].get_partial_shape().is_dynamic:
        model.reshape({0: [int(d) for d in shape]})
    check_shapes(model, dynamic_batch=False)


def _restore_accuracy(
    fp32: Any,
    quantized: Any,
    batches: list[Any],
    accuracy: Any,
    request: Any,
    settings: dict[str, Any],
    advanced: Any,
    progress: Any,
) -> tuple[Any, dict[str, Any]]:
    """Accuracy control when plain quantization loses more than the limit."""
    import nncf
    import numpy as np
    import openvino as ov

    images, labels, fp32_top1 = accuracy
    limit = float(request.quantization.max_drop)

    def top1(model: Any) -> float:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return float(np.mean(_top1(compiled, images, labels)) * 100)

    progress("accuracy")
    trials = [{"kept_float": 0, "top1": top1(quantized)}]
    baseline_float = _float_weight_ops(quantized)
    if fp32_top1 - trials[0]["top1"] > limit:

        def validate(compiled: Any, items: Any) -> tuple[float, list[float]]:
            items = list(items)
            hits = _top1(compiled, np.stack([i[0] for i in items]), [i[1] for i in items])
            return float(np.mean(hits)), hits

        quantized = nncf.quantize_with_accuracy_control(
            fp32,
            nncf.Dataset(batches),
            nncf.Dataset(list(zip(images, labels)), lambda item: item[0][None]),
            validate,
            max_drop=limit / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=advanced,
            **settings,
        )
        kept = sorted(_float_weight_ops(quantized) - baseline_float)
        trials.append({"kept_float": len(kept), "top1": top1(quantized)})
    else:
        kept = []
    record = max_drop_record(request, limit, len(images), fp32_top1, trials[-1]["top1"], trials)
    return quantized, {**record, "kept_float": kept}


def rank_sensitivity(graph: Any, calib: Any, images: int) -> tuple[list[dict[str, Any]], str]:
    """``calibrate --sensitivity``: NNCF's int8 scheme simulated in PyTorch on weights and
    inputs only, where NNCF puts its FakeQuantize (calibration/pt2e_guard.py)."""
    return rank_simulated(graph, calib, images, outputs=False)


RECIPE = Int8Recipe(
    target="openvino",
    export=export_int8,
    max_drop=export_int8_within_drop,
    sensitivity=rank_sensitivity,
)
