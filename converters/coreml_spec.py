"""What a Core ML artifact is made of, apart from converting and running it: tensor names,
labels (made unique), batch sizes, compute units, the image classifier and the model's metadata.

``converters/coreml.py`` (the target's converter and runners) and ``calibration/coreml.py``
build on these; nothing here imports coremltools or torch at import time.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from restv2_edge.converters.base import ExportRequest

from restv2_edge.errors import ExportError, first_line

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

#: the classifier's outputs (coremltools names the dictionary after the label)
CLASS_LABEL = "classLabel"
CLASS_PROBABILITIES = CLASS_LABEL + "_probs"
#: the softmax the classify op reads (replaced by the two outputs above)
PROBABILITIES = "probabilities"

METADATA_PREFIX = "restv2_edge."
PREVIEW_TYPE_KEY = "com.apple.coreml.model.preview.type"
#: ``coremltools.ComputeUnit`` names, as MLModelConfiguration.computeUnits spells them in Swift
#: (.all, .cpuOnly, .cpuAndGPU, .cpuAndNeuralEngine)
COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
#: a dynamic batch is enumerated: these sizes (and the requested batch size)
ENUMERATED_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)

LICENSE = (
    "Apache-2.0 (restv2-edge; the ResTv2 architecture: github.com/wofmanaf/ResT). "
    "The weights carry the license of the checkpoint they came from."
)


def unique_labels(names: Sequence[str]) -> list[str]:
    """Class labels with repeats made unique, for a Core ML classifier (its probability
    dictionary is keyed by label).

    The first occurrence keeps its name; a later one gets `` (k)``, k = 2, 3, ... the first
    number that is neither taken nor another class's name: ImageNet's classes 134 and 517 are
    "crane" and "crane (2)", 638 and 639 "maillot" and "maillot (2)".
    """
    originals = set(names)
    used: set[str] = set()
    result = []
    for name in names:
        label = name
        k = 2
        while label in used or (label != name and label in originals):
            label = f"{name} ({k})"
            k += 1
        used.add(label)
        result.append(label)
    return result


def batch_sizes(request: ExportRequest) -> list[int]:
    """The batch sizes the exported input takes: the requested one, plus the enumerated
    sizes for a dynamic batch."""
    if not request.dynamic_batch:
        return [request.batch_size]
    return sorted({*ENUMERATED_BATCH_SIZES, request.batch_size})


def default_compute_units(precision: str) -> str:
    """ALL (GPU and Neural Engine compute in fp16), CPU_ONLY for fp32 (computes in fp32)."""
    return "CPU_ONLY" if precision == "fp32" else "ALL"


def compute_units(request: ExportRequest) -> str:
    """The request's compute units (``options["compute_units"]``, any case), checked."""
    value = request.options.get("compute_units")
    if value is None:
        return default_compute_units(request.precision)
    name = match_compute_units(str(value))
    if name is None:
        raise ExportError(
            f"unknown Core ML compute units {value!r}; choose {', '.join(COMPUTE_UNITS)}"
        )
    return name


def match_compute_units(name: str) -> str | None:
    """``name`` as a COMPUTE_UNITS member (any case; ``CPU`` means CPU_ONLY), or None."""
    wanted = name.strip().upper()
    if wanted == "CPU":
        return "CPU_ONLY"
    return wanted if wanted in COMPUTE_UNITS else None


def image_classifier_graph(graph: Any) -> tuple[Any, float, list[float]]:
    """(module, ImageType scale, ImageType bias) of the image classifier form of ``graph``.

    A float ``RawInput`` graph (pixels * gain + offset, per channel) is split: the ImageType
    applies scale 1/255 and bias -mean, the module multiplies by 1/std (= 255 * gain), then
    runs the model. Any other graph (a quantized one, calibrated on raw pixels) keeps its whole
    normalization: scale 1, bias 0. The module returns (logits, softmax(logits)).
    """
    import torch

    from restv2_edge.model import RawInput

    classifier = _classifier_class()
    if isinstance(graph, RawInput):
        inv_std = graph.gain * 255.0
        bias = (graph.offset / inv_std).reshape(-1)
        module, scale, bias = classifier(graph.model, inv_std), 1.0 / 255.0, bias.tolist()
    else:
        module, scale, bias = classifier(graph, torch.ones(1, 3, 1, 1)), 1.0, [0.0, 0.0, 0.0]
    module.training = False  # not .eval(): a PT2E graph refuses train()/eval()
    return module, scale, bias


@functools.lru_cache(maxsize=1)
def _classifier_class() -> type:
    """The classifier module (defined on first use: this module imports no torch at import)."""
    import torch

    class Classifier(torch.nn.Module):
        """x * inv_std -> model -> (logits, probabilities)."""

        def __init__(self, model: torch.nn.Module, inv_std: torch.Tensor) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("inv_std", inv_std.detach().clone(), persistent=False)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.model(x * self.inv_std)
            return logits, torch.softmax(logits, dim=-1)

    return Classifier


def make_classifier(mlmodel: Any, labels: Sequence[str], target: Any) -> Any:
    """The image model of ``convert`` (outputs ``logits``, ``probabilities``) as a Core ML
    classifier: ``ClassifierConfig`` on ``probabilities`` (outputs ``classLabel`` and
    ``classLabel_probs``), ``logits`` kept, labels made unique (``unique_labels``).

    A second ``ct.convert`` of the converted program, with no main pass
    (``PassPipeline.EMPTY``: it is optimized and typed already). One ``ct.convert`` cannot keep
    ``logits`` beside the classifier outputs: coremltools 9 then indexes the user's output types
    by the program's outputs, which the classify op made one more (IndexError), so the output
    types are cleared first. The image input's scale and bias are ops of the program already;
    its input type is set again (weight quantization drops it) with scale 1 and bias 0, so that
    the backend does not insert them twice.
    """
    import coremltools as ct

    config = ct.ClassifierConfig(
        unique_labels(labels),
        predicted_feature_name=CLASS_LABEL,
        predicted_probabilities_output=PROBABILITIES,
    )
    program = mlmodel._mil_program
    main = program.functions["main"]
    main.set_output_types(None)
    shape = tuple(main.inputs[INPUT_NAME].shape)
    main.set_input_types(
        (ct.ImageType(INPUT_NAME, shape, channel_first=True, color_layout=ct.colorlayout.RGB),)
    )
    try:
        with quiet():
            return ct.convert(
                program,
                convert_to="mlprogram",
                classifier_config=config,
                pass_pipeline=ct.PassPipeline.EMPTY,
                minimum_deployment_target=target,
                skip_model_load=True,
            )
    except Exception as exc:
        raise ExportError(f"coremltools classifier conversion failed: {first_line(exc)}") from exc


def classifier_record(path: Path) -> dict[str, Any]:
    """What the manifest says about a saved classifier: its outputs and the labels' rule."""
    from restv2_edge.converters.mil import read_package

    package = read_package(path)
    if not package.is_classifier:
        raise ExportError("the Core ML image classifier has no classifier outputs")
    return {
        "label_output": package.predicted_feature,
        "probabilities_output": package.predicted_probabilities,
        "labels": "the manifest's labels, repeats suffixed ' (2)', ' (3)'... (docs/coreml.md)",
    }


def describe(mlmodel: Any, request: ExportRequest, target: str) -> None:
    """Author, license, version, descriptions, Xcode's preview type (classifier) and the
    restv2-edge metadata (labels, preprocessing, config, precision, compute units), from what
    the request says about the model (``ExportRequest.for_model``)."""
    from restv2_edge import __version__

    labels = request.class_names
    config = request.model_config
    pre = request.preprocessing
    count = len(labels) if labels else "the"
    mlmodel.author = "restv2-edge"
    mlmodel.license = LICENSE
    mlmodel.version = __version__
    meta = mlmodel.user_defined_metadata
    if request.raw_input:
        mlmodel.short_description = (
            f"ResTv2 image classifier over {count} classes: {CLASS_LABEL}, "
            f"{CLASS_PROBABILITIES} and {OUTPUT_NAME}"
        )
        mlmodel.input_description[INPUT_NAME] = (
            "RGB image at the model's size (resize and center-crop per metadata "
            f"{METADATA_PREFIX}preprocessing); normalization is inside the model"
        )
        mlmodel.output_description[CLASS_LABEL] = "the most probable class"
        mlmodel.output_description[CLASS_PROBABILITIES] = "probability of each class"
        meta[PREVIEW_TYPE_KEY] = "imageClassifier"
    elif request.head == "features":
        _describe_features(mlmodel, request)
    else:
        mlmodel.short_description = (
            f"ResTv2 image classifier: logits over {count} classes "
            f"(labels in metadata {METADATA_PREFIX}labels)"
        )
        mlmodel.input_description[INPUT_NAME] = (
            "float32 NCHW RGB, (rgb/255 - mean) / std per channel (see metadata)"
        )
    if request.head == "classifier":
        mlmodel.output_description[OUTPUT_NAME] = "class logits (softmax for probabilities)"
    meta[METADATA_PREFIX + "version"] = __version__
    meta[METADATA_PREFIX + "precision"] = request.precision
    meta[METADATA_PREFIX + "deployment_target"] = target
    meta[METADATA_PREFIX + "raw_input"] = json.dumps(bool(request.raw_input))
    meta[METADATA_PREFIX + "compute_units"] = compute_units(request)
    meta[METADATA_PREFIX + "batch_sizes"] = json.dumps(batch_sizes(request))
    if labels is not None and request.head == "classifier":
        meta[METADATA_PREFIX + "labels"] = json.dumps(list(labels))
    if config is not None:
        meta[METADATA_PREFIX + "config"] = json.dumps(config.to_dict())
    if pre is not None:
        meta[METADATA_PREFIX + "preprocessing"] = json.dumps(
            pre.raw().to_dict() if request.raw_input else pre.to_dict()
        )
        if request.raw_input:
            meta[METADATA_PREFIX + "normalization"] = json.dumps(pre.to_dict())


def _describe_features(mlmodel: Any, request: ExportRequest) -> None:
    """A features (backbone) model's descriptions: its maps, stride by stride."""
    names = list(request.output_names)
    mlmodel.short_description = (
        f"ResTv2 backbone: feature maps {', '.join(names)} (NCHW, strides 4, 8, 16, 32)"
    )
    mlmodel.input_description[INPUT_NAME] = (
        "float32 NCHW RGB, (rgb/255 - mean) / std per channel (see metadata)"
    )
    for index, name in enumerate(names):
        mlmodel.output_description[name] = f"stage {index + 1} feature map, stride {4 << index}"
    mlmodel.user_defined_metadata[METADATA_PREFIX + "head"] = request.head


@contextlib.contextmanager
def quiet() -> Any:
    """coremltools draws tqdm bars on stderr; the CLI owns progress display."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield
