"""Core ML: torch.export -> coremltools ML program (.mlpackage), run in Core ML or in numpy.

- ML program (``convert_to="mlprogram"``), minimum deployment target iOS17 unless
  ``options["deployment_target"]`` says otherwise (iOS16, iOS18, macOS14, ...).
- fp16 compute precision by default (what GPU / Neural Engine run), fp32 on request. int8 is
  calibration/coreml.py's: it quantizes (PT2E W8A8 before ``convert``, or weights after it)
  and builds the artifact with this module's public steps: ``requested_target``,
  ``convert``, ``fold_scalar_dequantize`` and ``save``.
- float32 tensor input ``input`` (N, 3, S, S) and output ``logits``; with ``raw_input`` the
  input is an RGB ImageType (scale 1, bias 0) and the per-channel normalization lives in the
  graph (ImageType has no per-channel std).
- Class labels, preprocessing, config and precision (from the ``ExportRequest``) in the
  model's user-defined metadata (no classifier output: ImageNet names repeat, and runners
  need the logits).
- Native graph form: Core ML has native layer_norm, 4-D matmul and pixel_shuffle, and the
  decomposed form does not convert (coremltools' fuse_linear_bias pass fails on it).
- No tensor of rank > 4 anywhere in the saved program (checked, ExportError otherwise).

Runner: Core ML itself (``MLModel.predict``) on macOS with the framework; elsewhere the
restv2-edge MIL reference interpreter (``restv2_edge.converters.mil``), fp16-rounding where the
program is fp16. ``RESTV2_EDGE_COREML_RUNNER`` = auto | coreml | interpreter forces one;
``RESTV2_EDGE_COREML_COMPUTE_UNITS`` picks Core ML compute units (default ALL, CPU_ONLY for
fp32 artifacts so fp32 is really fp32).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import (
    Converter,
    ExportRequest,
    ExportResult,
    Progress,
    Runner,
    TargetDescriptor,
)

from restv2_edge.errors import ExportError, RunnerUnavailableError, first_line

MODEL_FILE = "model.mlpackage"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_TARGET = "iOS17"
MAX_RANK = 4
RUNNER_ENV = "RESTV2_EDGE_COREML_RUNNER"
UNITS_ENV = "RESTV2_EDGE_COREML_COMPUTE_UNITS"
METADATA_PREFIX = "restv2_edge."


# -- runners ------------------------------------------------------------------------------------


def coreml_framework_available() -> bool:
    """True on macOS with coremltools' native bindings (MLModel.predict works)."""
    if platform.system() != "Darwin":
        return False
    try:
        return importlib.util.find_spec("coremltools.libcoremlpython") is not None
    except ImportError:
        return False


def _to_pixels(x: np.ndarray) -> np.ndarray:
    """Float NCHW 0..255 -> the uint8 values an RGB ImageType receives."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class CoreMLRunner(Runner):
    """The Core ML framework (macOS) through coremltools' MLModel."""

    def __init__(self, path: Path, batch_size: int, image_input: bool, compute_units: str) -> None:
        import coremltools as ct

        super().__init__(batch_size)
        if compute_units not in ct.ComputeUnit.__members__:
            raise RunnerUnavailableError(
                f"unknown Core ML compute units {compute_units!r}; "
                f"choose {', '.join(ct.ComputeUnit.__members__)}"
            )
        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[compute_units])
        except Exception as exc:
            raise RunnerUnavailableError(f"Core ML cannot load {path.name}: {exc}") from exc
        self.image_input = image_input
        self.description = (
            f"coremltools {ct.__version__} MLModel (Core ML framework, {compute_units})"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if not self.image_input:
            return np.asarray(self.model.predict({INPUT_NAME: x})[OUTPUT_NAME], np.float32)
        from PIL import Image

        outputs = []
        for pixels in _to_pixels(x):
            image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
            outputs.append(np.asarray(self.model.predict({INPUT_NAME: image})[OUTPUT_NAME]))
        return np.concatenate(outputs).astype(np.float32)


class InterpreterRunner(Runner):
    """The restv2-edge MIL reference interpreter (numpy), fp16-rounding where typed fp16."""

    def __init__(self, path: Path, batch_size: int) -> None:
        from restv2_edge.converters.mil import Program

        super().__init__(batch_size)
        self.program = Program.load(path)
        features = {f.name: f for f in self.program.package.inputs}
        self.image_input = getattr(features.get(INPUT_NAME), "kind", "") == "image"
        self.fp16 = any(t.dtype == "fp16" for t in self.program.types.values())
        mode = "fp16 rounding" if self.fp16 else "fp32"
        self.description = f"restv2-edge MIL reference interpreter (numpy, {mode})"

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        if self.image_input:
            x = _to_pixels(x).astype(np.float32)
        outputs = self.program.run({INPUT_NAME: x}, fp16=self.fp16)
        return outputs[OUTPUT_NAME].astype(np.float32)


# -- converter ---------------------------------------------------------------------------------


class CoreMLConverter(Converter):
    def check_request(self, request: ExportRequest) -> None:
        super().check_request(request)
        deployment_target(request.options.get("deployment_target", DEFAULT_TARGET))
        if request.raw_input and request.batch_size != 1:
            raise ExportError(
                "Core ML image inputs take one image: use batch size 1 with raw input"
            )

    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        self.check_request(request)
        if request.precision not in self.precisions:  # int8 is built by its recipe
            raise ExportError(
                f"the {self.name} converter exports {', '.join(self.precisions)}; "
                f"int8 comes from its calibration recipe (export --int8)"
            )
        target_name, target = requested_target(request)
        mlmodel = convert(model, example, request, target, progress)
        return save(mlmodel, workdir, request, target_name, progress)

    def load(self, folder: Path, manifest: Any, threads: int | None = None) -> Runner:
        self.check_installed()
        path = Path(folder) / manifest.model_file
        choice = os.environ.get(RUNNER_ENV, "auto").strip().lower() or "auto"
        if choice not in ("auto", "coreml", "interpreter"):
            raise RunnerUnavailableError(
                f"{RUNNER_ENV}={choice!r}: choose auto, coreml or interpreter"
            )
        if choice in ("auto", "coreml") and coreml_framework_available():
            units = os.environ.get(UNITS_ENV) or (
                "CPU_ONLY" if manifest.precision == "fp32" else "ALL"
            )
            return CoreMLRunner(path, manifest.batch_size, manifest.raw_input, units)
        if choice == "coreml":
            raise RunnerUnavailableError(
                f"the Core ML framework is not available here (needs macOS); "
                f"{RUNNER_ENV}=coreml rules out the MIL interpreter"
            )
        try:
            return InterpreterRunner(path, manifest.batch_size)
        except ImportError as exc:
            raise RunnerUnavailableError(f"the MIL interpreter cannot start: {exc}") from exc


# -- export helpers -----------------------------------------------------------------------------


def deployment_target(name: str) -> tuple[str, Any]:
    """(canonical name, ct.target member) for iOS16 / ios17 / macOS14 / ...; ML programs only."""
    import coremltools as ct

    members = ct.target.__members__
    lookup = {key.lower(): key for key in members}
    key = lookup.get(str(name).strip().lower())
    if key is None:
        raise ExportError(
            f"unknown Core ML deployment target {name!r}; "
            f"choose e.g. iOS16, iOS17, iOS18, macOS13, macOS14, macOS15"
        )
    target = members[key]
    if target < ct.target.iOS15:
        raise ExportError(f"ML programs need iOS15 / macOS12 or newer, got {key}")
    return key, target


def requested_target(
    request: ExportRequest, minimum: str = "iOS15", what: str = ""
) -> tuple[str, Any]:
    """(name, ct.target) of the request's deployment target; ExportError when it is older
    than ``minimum`` (int8 weights need iOS16, W8A8 iOS17; ``what`` names the scheme)."""
    import coremltools as ct

    name, target = deployment_target(request.options.get("deployment_target", DEFAULT_TARGET))
    if target < ct.target.__members__[minimum]:
        raise ExportError(
            f"Core ML {what or request.precision} needs a deployment target of at least "
            f"{minimum}, got {name}"
        )
    return name, target


def convert(
    graph: Any, example: Any, request: ExportRequest, target: Any, progress: Progress
) -> Any:
    """torch.export + ``ct.convert`` of ``graph`` into an ML program (not saved yet).

    ``graph`` is float, or a PT2E graph with quantize/dequantize ops (calibration/coreml.py,
    after ``fold_scalar_dequantize``); compute precision fp32 for fp32 requests, else fp16.
    """
    import coremltools as ct
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations
            program = torch.export.export(graph, (example,)).run_decompositions({})
    except Exception as exc:
        raise ExportError(f"torch.export failed: {first_line(exc)}") from exc
    progress("convert")
    if request.raw_input:
        inputs = [
            ct.ImageType(
                name=INPUT_NAME,
                shape=tuple(example.shape),
                color_layout=ct.colorlayout.RGB,
                scale=1.0,
                bias=[0.0, 0.0, 0.0],
            )
        ]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape), dtype=np.float32)]
    precision = ct.precision.FLOAT32 if request.precision == "fp32" else ct.precision.FLOAT16
    try:
        with quiet():
            return ct.convert(
                program,
                inputs=inputs,
                outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
                skip_model_load=True,
            )
    except Exception as exc:
        raise ExportError(f"coremltools conversion failed: {first_line(exc)}") from exc


def save(
    mlmodel: Any, workdir: Path, request: ExportRequest, target_name: str, progress: Progress
) -> ExportResult:
    """Describe ``mlmodel`` (metadata from the request), save it into ``workdir`` and check the
    saved program; the ExportResult of a Core ML artifact."""
    describe(mlmodel, request, target_name)
    path = workdir / MODEL_FILE
    mlmodel.save(str(path))
    progress("check")
    info = check_program(path)
    info.update(
        {
            "deployment_target": target_name,
            "compute_precision": "fp32" if request.precision == "fp32" else "fp16",
            "input_type": "image (RGB, 0-255)" if request.raw_input else "tensor float32",
        }
    )
    return ExportResult(
        model_file=MODEL_FILE,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        versions=_versions(),
        info=info,
    )


def fold_scalar_dequantize(graph_module: Any) -> int:
    """Replace dequantized rank-0 constants (e.g. attention's q-scale) by their float value.

    coremltools 9 folds ``dequantize_per_tensor`` of a constant scalar as
    ``scale * (q - zero_point)`` in int8 numpy arithmetic, which wraps around (q=127,
    zero_point=-128 gives -1 instead of 255): the attention scale 0.25 became -0.00098.
    The MIL interpreter's parity check caught it. Returns how many were folded.
    """
    import torch

    folded = 0
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or "dequantize_per_tensor" not in str(node.target):
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "get_attr":
            continue
        value = _get_attr(graph_module, source.target)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            continue
        args = [
            _get_attr(graph_module, a.target) if isinstance(a, torch.fx.Node) else a
            for a in node.args
        ]
        number = float(node.target(*args, **node.kwargs))
        for user in list(node.users):
            user.args = tuple(number if a is node else a for a in user.args)
        graph.erase_node(node)
        folded += 1
    if folded:
        graph.eliminate_dead_code()
        graph_module.recompile()
    return folded


def _get_attr(module: Any, target: str) -> Any:
    for part in target.split("."):
        module = getattr(module, part)
    return module


def describe(mlmodel: Any, request: ExportRequest, target: str) -> None:
    """Author, descriptions and restv2-edge metadata (labels, preprocessing, config,
    precision), from what the request says about the model (``ExportRequest.for_model``)."""
    from restv2_edge import __version__

    labels = request.class_names
    config = request.model_config
    pre = request.preprocessing
    mlmodel.author = "restv2-edge"
    mlmodel.version = __version__
    mlmodel.short_description = (
        "ResTv2 image classifier: logits over "
        f"{len(labels) if labels else 'the'} classes (labels in metadata {METADATA_PREFIX}labels)"
    )
    if request.raw_input:
        mlmodel.input_description[INPUT_NAME] = "RGB image; normalization is inside the model"
    else:
        mlmodel.input_description[INPUT_NAME] = (
            "float32 NCHW RGB, (rgb/255 - mean) / std per channel (see metadata)"
        )
    mlmodel.output_description[OUTPUT_NAME] = "class logits (softmax for probabilities)"
    meta = mlmodel.user_defined_metadata
    meta[METADATA_PREFIX + "version"] = __version__
    meta[METADATA_PREFIX + "precision"] = request.precision
    meta[METADATA_PREFIX + "deployment_target"] = target
    meta[METADATA_PREFIX + "raw_input"] = json.dumps(bool(request.raw_input))
    if labels is not None:
        meta[METADATA_PREFIX + "labels"] = json.dumps(list(labels))
    if config is not None:
        meta[METADATA_PREFIX + "config"] = json.dumps(config.to_dict())
    if pre is not None:
        meta[METADATA_PREFIX + "preprocessing"] = json.dumps(
            pre.raw().to_dict() if request.raw_input else pre.to_dict()
        )


def check_program(path: Path) -> dict[str, Any]:
    """Read the saved program back: no tensor of rank > 4; op counts for the manifest."""
    from restv2_edge.converters.mil import op_counts, read_spec, tensor_ranks

    spec = read_spec(path)
    for name, rank in tensor_ranks(spec):
        if rank > MAX_RANK:
            raise ExportError(f"Core ML program value {name!r} has rank {rank} > {MAX_RANK}")
    counts = op_counts(spec)
    fn = spec.mlProgram.functions["main"]
    return {
        "opset": fn.opset,
        "specification_version": int(spec.specificationVersion),
        "ops": sum(n for op, n in counts.items() if op != "const"),
        "op_types": {op: n for op, n in counts.items() if op != "const"},
    }


@contextlib.contextmanager
def quiet() -> Any:
    """coremltools draws tqdm bars on stderr; the CLI owns progress display."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _versions() -> dict[str, str]:
    import coremltools

    return {"coremltools": coremltools.__version__}


CONVERTER = CoreMLConverter()
DESCRIPTOR = TargetDescriptor(
    name="coreml",
    extra="coreml",
    packages=("coremltools",),
    precisions=("fp16", "fp32"),
    default_precision="fp16",
    # native layer_norm, 4-D matmul and pixel_shuffle; the decomposed form does not convert
    graph_form="native",
    suffix=".mlpackage",
    converter=CONVERTER,
    manifest_fields=(
        "opset",
        "specification_version",
        "ops",
        "op_types",
        "deployment_target",
        "compute_precision",
        "input_type",
    ),
    order=40,
    options=("deployment_target",),
)
