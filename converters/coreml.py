"""Core ML: torch.export -> coremltools ML program (.mlpackage), run in Core ML or in numpy.

- ML program (``convert_to="mlprogram"``), minimum deployment target iOS17 unless
  ``options["deployment_target"]`` says otherwise (iOS16, iOS18, macOS14, ...).
- fp16 compute precision by default (what GPU / Neural Engine run), fp32 on request. int8 is
  calibration/coreml.py's: it quantizes (PT2E W8A8 before ``convert``, or weights after it)
  and builds the artifact with this module's public steps: ``requested_target``,
  ``convert``, ``fold_scalar_dequantize`` and ``save``.
- Tensor input (default): float32 ``input`` (N, 3, S, S), normalized by the caller, and output
  ``logits``. ``batch_size`` N is static; ``dynamic_batch`` makes it an enumerated batch
  (``ct.EnumeratedShapes``: ``batch_sizes``, runnable on the Neural Engine, which a ranged
  batch is only at its default size); runners pad a chunk to the next enumerated size.
- Image classifier (``raw_input``): an RGB ``ImageType`` input ``input`` whose scale (1/255)
  and per-channel bias (-mean) Core ML applies, the per-channel 1/std in the graph (ImageType
  has no per-channel scale), and coremltools' ``ClassifierConfig`` outputs ``classLabel``
  (String) and ``classLabel_probs`` (class -> probability), beside ``logits``, which runners
  and parity read. Labels are made unique (``unique_labels``: ImageNet has two "crane" and two
  "maillot"). Image inputs take one image: batch 1, no dynamic batch.
- Metadata: author, license, version, short description; the labels, preprocessing, config,
  precision and compute units as user-defined metadata (``restv2_edge.*``), and Xcode's
  ``imageClassifier`` preview type for the classifier.
- Compute units (``options["compute_units"]``: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE; default
  ALL, CPU_ONLY for fp32 so that fp32 really runs in fp32) are recorded in the manifest's
  ``export.compute_units``; apps and the runner's default device read them there.
- Native graph form: Core ML has native layer_norm, 4-D matmul and pixel_shuffle, and the
  decomposed form does not convert (coremltools' fuse_linear_bias pass fails on it).
- No tensor of rank > 4 anywhere in the saved program (checked, ExportError otherwise).

Runner: Core ML itself (``MLModel.predict``) on macOS with the framework, on the compute
units asked for (``load(device=...)``); elsewhere the restv2-edge MIL reference interpreter
(``restv2_edge.converters.mil``), fp16-rounding where the program is fp16, which runs on the
CPU whatever the compute units (its description says so). ``RESTV2_EDGE_COREML_RUNNER`` =
auto | coreml | interpreter forces one; ``RESTV2_EDGE_COREML_COMPUTE_UNITS`` overrides the
manifest's compute units when no device is given.

Profile and peers: none here. Core ML's per-op view (Xcode Instruments' Core ML template;
``MLComputePlan``'s per-op device and estimated cost) needs macOS, and the MIL interpreter is
a numerical reference, not a performance model: both runners' ``profile`` raise ProfileError
naming those tools (``NO_PROFILER``; on macOS ``NO_FRAMEWORK_PROFILER``, not run on Linux).
A peer pipeline would have to run in Core ML, which Linux lacks, so the descriptor declares
none.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import (
    Converter,
    ExportRequest,
    ExportResult,
    OpProfile,
    Progress,
    Runner,
    TargetDescriptor,
)
from restv2_edge.converters.coreml_spec import (
    COMPUTE_UNITS,
    INPUT_NAME,
    OUTPUT_NAME,
    PROBABILITIES,
    batch_sizes,
    classifier_record,
    compute_units,
    default_compute_units,
    describe,
    image_classifier_graph,
    make_classifier,
    match_compute_units,
    quiet,
)

from restv2_edge.errors import ExportError, ProfileError, RunnerUnavailableError, first_line

MODEL_FILE = "model.mlpackage"
DEFAULT_TARGET = "iOS17"
MAX_RANK = 4
RUNNER_ENV = "RESTV2_EDGE_COREML_RUNNER"
UNITS_ENV = "RESTV2_EDGE_COREML_COMPUTE_UNITS"
#: why the MIL interpreter's runner does not profile, and where a Core ML profile comes from
NO_PROFILER = (
    "Core ML profiles need macOS (Xcode Instruments' Core ML template, MLComputePlan); the MIL "
    "interpreter that runs the program here is a numerical reference, not a performance model"
)
#: why the Core ML framework's runner does not profile either
NO_FRAMEWORK_PROFILER = (
    "coremltools' MLModel reports no per-op times: profile the .mlpackage in Xcode Instruments "
    "(Core ML template) or read MLComputePlan's per-op estimates"
)


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


def run_padded(
    x: np.ndarray, sizes: Sequence[int], run: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``run`` on ``x`` zero-padded to the smallest enumerated batch size that holds it (an
    enumerated input takes only those sizes); the padding's rows are dropped again."""
    count = x.shape[0]
    fits = [n for n in sizes if n >= count]
    if not fits:
        raise RunnerUnavailableError(f"a batch of {count} exceeds the model's sizes {list(sizes)}")
    size = min(fits)
    if size > count:
        x = np.concatenate([x, np.zeros((size - count, *x.shape[1:]), x.dtype)])
    result = run(x)
    if isinstance(result, list):
        return [np.asarray(part, np.float32)[:count] for part in result]
    return np.asarray(result, np.float32)[:count]


def _picked(outputs: dict[str, Any], names: Sequence[str]) -> np.ndarray | list[np.ndarray]:
    """The named outputs as float32: the one array (classifier), or the list (features)."""
    arrays = [np.asarray(outputs[name], np.float32) for name in names]
    return arrays[0] if len(arrays) == 1 else arrays


def _input_feature(features: Sequence[Any]) -> Any:
    """The model description's ``input`` feature (MILError, an ArtifactError, if missing)."""
    from restv2_edge.converters.mil import MILError

    for feature in features:
        if feature.name == INPUT_NAME:
            return feature
    raise MILError(f"the Core ML model has no input named {INPUT_NAME!r}")


class CoreMLRunner(Runner):
    """The Core ML framework (macOS) through coremltools' MLModel, on ``units``."""

    def __init__(self, path: Path, manifest: Any, units: str) -> None:
        import coremltools as ct
        from restv2_edge.converters.mil import read_package

        super().__init__(manifest.batch_size, manifest.dynamic_batch)
        try:
            self.model = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[units])
        except Exception as exc:
            raise RunnerUnavailableError(f"Core ML cannot load {path.name}: {exc}") from exc
        feature = _input_feature(read_package(path).inputs)
        self.image_input = feature.kind == "image"
        self.sizes = feature.batch_sizes
        self.output_names = manifest.output_names or [OUTPUT_NAME]
        self.device = units
        self.description = f"coremltools {ct.__version__} MLModel (Core ML framework, {units})"

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the manifest's order."""
        if self.image_input:
            return self._run_images(x)
        if self.dynamic_batch and self.sizes:
            return run_padded(x, self.sizes, self._predict)
        return self._predict(x)

    def _predict(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        return _picked(self.model.predict({INPUT_NAME: x}), self.output_names)

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """coremltools' MLModel times no ops: ProfileError naming the tools that do."""
        raise ProfileError(NO_FRAMEWORK_PROFILER)

    def _run_images(self, x: np.ndarray) -> np.ndarray:
        from PIL import Image

        outputs = []
        for pixels in _to_pixels(x):
            image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
            outputs.append(np.asarray(self.model.predict({INPUT_NAME: image})[OUTPUT_NAME]))
        return np.concatenate(outputs).astype(np.float32)


class InterpreterRunner(Runner):
    """The restv2-edge MIL reference interpreter (numpy), fp16-rounding where typed fp16.

    It runs on this machine's CPU whatever compute units it is asked for: ``units`` is only
    named in its description, as not exercised.
    """

    def __init__(self, path: Path, manifest: Any, units: str) -> None:
        from restv2_edge.converters.mil import Program

        super().__init__(manifest.batch_size, manifest.dynamic_batch)
        self.program = Program.load(path)
        feature = _input_feature(self.program.package.inputs)
        self.image_input = feature.kind == "image"
        self.sizes = feature.batch_sizes
        self.fp16 = any(t.dtype == "fp16" for t in self.program.types.values())
        self.output_names = manifest.output_names or [OUTPUT_NAME]
        self.device = units
        mode = "fp16 rounding" if self.fp16 else "fp32"
        self.description = (
            f"restv2-edge MIL reference interpreter (numpy, {mode}; on the CPU: "
            f"compute units {units} not exercised)"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the manifest's order."""
        if self.image_input:
            x = _to_pixels(x).astype(np.float32)
        if self.dynamic_batch and self.sizes:
            return run_padded(x, self.sizes, self._run)
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        return _picked(self.program.run({INPUT_NAME: x}, fp16=self.fp16), self.output_names)

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """numpy's op times say nothing of Core ML's: ProfileError naming the macOS tools."""
        raise ProfileError(NO_PROFILER)


# -- converter ---------------------------------------------------------------------------------


class CoreMLConverter(Converter):
    def check_request(self, request: ExportRequest) -> None:
        super().check_request(request)
        deployment_target(request.options.get("deployment_target", DEFAULT_TARGET))
        compute_units(request)
        if request.raw_input and request.head != "classifier":
            raise ExportError(
                "a Core ML image input (--raw-input) makes an image classifier; a features "
                "export takes the normalized tensor input"
            )
        if request.raw_input and (request.batch_size != 1 or request.dynamic_batch):
            raise ExportError(
                "a Core ML image input (--raw-input) takes one image: export it with batch 1 "
                "and no dynamic batch, or use the tensor input for batches"
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

    def available_devices(self, manifest: Any = None) -> list[str]:
        """The Core ML compute units, the artifact's own (``export.compute_units``) first.

        Every one is accepted here; where Core ML itself is missing (Linux), the MIL
        interpreter runs on the CPU and says that the compute units were not exercised.
        """
        own = manifest_compute_units(manifest)
        return [own, *(units for units in COMPUTE_UNITS if units != own)]

    def match_device(self, device: str, available: list[str]) -> str | None:
        name = match_compute_units(device)
        return name if name in available else None

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        if device is None and os.environ.get(UNITS_ENV):
            device = os.environ[UNITS_ENV]
        units = self.check_device(device, manifest)
        path = Path(folder) / manifest.model_file
        choice = os.environ.get(RUNNER_ENV, "auto").strip().lower() or "auto"
        if choice not in ("auto", "coreml", "interpreter"):
            raise RunnerUnavailableError(
                f"{RUNNER_ENV}={choice!r}: choose auto, coreml or interpreter"
            )
        if choice in ("auto", "coreml") and coreml_framework_available():
            return CoreMLRunner(path, manifest, units)
        if choice == "coreml":
            raise RunnerUnavailableError(
                f"the Core ML framework is not available here (needs macOS); "
                f"{RUNNER_ENV}=coreml rules out the MIL interpreter"
            )
        try:
            return InterpreterRunner(path, manifest, units)
        except ImportError as exc:
            raise RunnerUnavailableError(f"the MIL interpreter cannot start: {exc}") from exc


def manifest_compute_units(manifest: Any) -> str:
    """The compute units an artifact was exported for (manifests before they were recorded:
    the precision's default)."""
    if manifest is None:
        return "ALL"
    recorded = match_compute_units(str((manifest.export or {}).get("compute_units", "")))
    return recorded or default_compute_units(manifest.precision)


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
    ``raw_input``: the image input of the classifier (``image_classifier_graph``), with outputs
    ``logits`` and ``probabilities``; ``save`` makes it a classifier (after any weight
    quantization, which cannot re-serialize a classifier's label list).
    """
    import coremltools as ct

    outputs = [ct.TensorType(name=name, dtype=np.float32) for name in request.output_names]
    if request.raw_input:
        module, scale, bias = image_classifier_graph(graph)
        program = _torch_export(module, example, None)
        inputs = [
            ct.ImageType(
                name=INPUT_NAME,
                shape=tuple(example.shape),
                color_layout=ct.colorlayout.RGB,
                scale=scale,
                bias=bias,
            )
        ]
        outputs.append(ct.TensorType(name=PROBABILITIES, dtype=np.float32))
    else:
        sizes = batch_sizes(request)
        program = _torch_export(graph, example, max(sizes) if request.dynamic_batch else None)
        shape = _input_shape(example, request)
        inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
    progress("convert")
    precision = ct.precision.FLOAT32 if request.precision == "fp32" else ct.precision.FLOAT16
    try:
        with quiet():
            return ct.convert(
                program,
                inputs=inputs,
                outputs=outputs,
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
                skip_model_load=True,
            )
    except Exception as exc:
        raise ExportError(f"coremltools conversion failed: {first_line(exc)}") from exc


def _torch_export(graph: Any, example: Any, max_batch: int | None) -> Any:
    """torch.export of ``graph`` on ``example``; the batch dimension symbolic up to
    ``max_batch`` when given (the model never reshapes the batch)."""
    import torch

    dynamic = None
    if max_batch is not None:
        dynamic = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal deprecations
            exported = torch.export.export(graph, (example,), dynamic_shapes=dynamic)
            return exported.run_decompositions({})
    except Exception as exc:
        raise ExportError(f"torch.export failed: {first_line(exc)}") from exc


def _input_shape(example: Any, request: ExportRequest) -> Any:
    """The tensor input's shape: static (N, 3, S, S), or enumerated batch sizes (default N)."""
    import coremltools as ct

    rest = tuple(example.shape[1:])
    if not request.dynamic_batch:
        return (request.batch_size, *rest)
    shapes = [(n, *rest) for n in batch_sizes(request)]
    return ct.EnumeratedShapes(shapes=shapes, default=(request.batch_size, *rest))


def _class_names(request: ExportRequest, mlmodel: Any) -> list[str]:
    """The request's class names, or "0".."C-1" (C from the logits output's shape)."""
    if request.class_names is not None:
        return list(request.class_names)
    logits = {o.name: o for o in mlmodel.get_spec().description.output}[OUTPUT_NAME]
    return [str(i) for i in range(int(logits.type.multiArrayType.shape[-1]))]


def save(
    mlmodel: Any, workdir: Path, request: ExportRequest, target_name: str, progress: Progress
) -> ExportResult:
    """Describe ``mlmodel`` (metadata from the request; a ``raw_input`` model made a classifier
    first, ``make_classifier``), save it into ``workdir`` and check the saved program; the
    ExportResult of a Core ML artifact."""
    if request.raw_input:
        mlmodel = make_classifier(
            mlmodel, _class_names(request, mlmodel), deployment_target(target_name)[1]
        )
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
            "compute_units": compute_units(request),
            "batch_sizes": batch_sizes(request),
            "classifier": classifier_record(path) if request.raw_input else None,
        }
    )
    return ExportResult(
        model_file=MODEL_FILE,
        input_name=INPUT_NAME,
        output_name=request.output_names[0],
        output_names=list(request.output_names),
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
        "compute_units",
        "batch_sizes",
        "classifier",
    ),
    order=40,
    options=("deployment_target", "compute_units"),
    dynamic_batch=True,
)
