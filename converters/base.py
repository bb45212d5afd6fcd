"""The one interface every target implements: export -> artifact folder, load -> runner.

Also the request a target is asked to build (``ExportRequest``, with its
``QuantizationSettings``) and the registry's public names (``target_names``,
``get_descriptor``, ``get_converter``, ``installed_targets``; converters/registry.py).
"""

from __future__ import annotations

import abc
import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from restv2_edge.converters.registry import (
    PeerPipeline,
    TargetDescriptor,
    get_converter,
    get_descriptor,
    installed_targets,
    target_names,
)

from restv2_edge.errors import ExportError, ProfileError, RunnerUnavailableError

if TYPE_CHECKING:
    from restv2_edge.config import ModelConfig
    from restv2_edge.preprocess import Preprocessing

Progress = Callable[[str], None]
#: the precision that calibration/ recipes build (every other one is a converter's own)
INT8 = "int8"
#: the most inputs a dynamic-batch runner sends to its runtime in one call
MAX_DYNAMIC_CHUNK = 64
#: the device every runner can use here (runners run on the CPU unless told otherwise)
CPU = "CPU"

__all__ = [
    "CPU",
    "INT8",
    "MAX_DYNAMIC_CHUNK",
    "Converter",
    "ExportRequest",
    "ExportResult",
    "OpProfile",
    "OpTime",
    "PeerPipeline",
    "Progress",
    "QuantizationSettings",
    "Runner",
    "TargetDescriptor",
    "get_converter",
    "get_descriptor",
    "half_precision",
    "installed_targets",
    "target_names",
]


@dataclass(frozen=True)
class QuantizationSettings:
    """How an INT8 export quantizes (``ExportRequest.quantization``); every recipe reads these.

    ``method``: the range estimator where the recipe offers a choice (None: the recipe's
    default). ``weights_only``: int8 weights, float activations, no calibration (where the
    recipe has that scheme). ``max_drop``: the accuracy guard's limit in top-1 points, measured
    on ``accuracy_data`` (labelled, held back from calibration). ``keep_float``: layer names
    left in float (set by the guard, or by hand from ``calibrate --sensitivity``).
    """

    method: str | None = None
    weights_only: bool = False
    max_drop: float | None = None
    accuracy_data: str | None = None
    keep_float: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> QuantizationSettings:
        """Settings from the keys of the older plain-dict form."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ExportError(
                f"unknown quantization setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        settings = dict(values)
        if "keep_float" in settings:
            settings["keep_float"] = tuple(settings["keep_float"] or ())
        return cls(**settings)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style read, for callers written against the plain-dict form."""
        value = getattr(self, key, None)
        return default if value is None else value


@dataclass
class ExportRequest:
    """What to build. ``options`` carries target-specific flags (e.g. Core ML's target OS).

    ``preprocessing``, ``class_names`` and ``model_config`` describe the model being exported
    (``for_model``): recipes and converters read them here rather than from the graph.
    ``quantization`` may be given as a dict (older callers); it is read as
    ``QuantizationSettings``. ``batch_size`` is the batch the artifact is exported with;
    ``dynamic_batch`` makes that dimension symbolic (targets whose descriptor declares it),
    the batch size then being only the nominal one recorded in the manifest.
    """

    precision: str = "fp32"
    raw_input: bool = False
    batch_size: int = 1
    dynamic_batch: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # INT8: a CalibrationSet (calibration/) and the quantization settings.
    calibration: Any = None
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None
    model_config: ModelConfig | None = None
    #: "classifier" (one ``logits`` output) or "features" (``stage1..stage4``; docs/backbone.md)
    head: str = "classifier"
    #: the graph's output names, in order (``for_model``: the model's ``output_specs``)
    output_names: tuple[str, ...] = ("logits",)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "quantization" and isinstance(value, Mapping):
            value = QuantizationSettings.from_dict(value)
        super().__setattr__(name, value)

    def for_model(self, model: Any) -> ExportRequest:
        """A copy that carries ``model``'s preprocessing, class names (numbered when it has
        none, as in the manifest; none for a features head), config, head and output names."""
        config = model.config
        head = getattr(model, "head_type", "classifier")
        names = model.class_names or [str(i) for i in range(config.num_classes)]
        specs = getattr(model, "output_specs", None)
        outputs = tuple(spec.name for spec in specs(self.batch_size)) if specs else ("logits",)
        return replace(
            self,
            preprocessing=model.preprocessing,
            class_names=list(names) if head == "classifier" else [],
            model_config=config,
            head=head,
            output_names=outputs,
        )


@dataclass
class ExportResult:
    """What a converter wrote into the work folder."""

    model_file: str
    input_name: str
    output_name: str
    layout: str = "NCHW"
    versions: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None
    #: every output name, in order, where the graph has several (features head)
    output_names: list[str] | None = None


@dataclass(frozen=True)
class OpTime:
    """One node's share of an inference, as the runtime's own profiler reports it."""

    #: the node's name in the runtime's graph
    name: str
    #: the runtime's op type (``MatMul``, ``FullyConnected``, ``XNNPACK delegate``...)
    op_type: str
    #: mean milliseconds per inference over the profiled runs
    ms: float
    #: True for a node a delegate/accelerated backend ran, False for a fallback kernel, None
    #: where the runtime has no delegates
    delegated: bool | None = None


@dataclass(frozen=True)
class OpProfile:
    """Per-node times from one runtime's profiler (``Runner.profile``)."""

    #: the profiler used, e.g. ``onnxruntime session profiling``
    profiler: str
    #: profiled inferences the times are averaged over
    runs: int
    ops: tuple[OpTime, ...]
    #: what the profiler could not attribute or how its numbers are to be read
    notes: tuple[str, ...] = ()
    #: what one entry of ``ops`` is: a graph ``node``, or a sampled ``kernel`` symbol
    unit: str = "node"


class Runner(abc.ABC):
    """Maps a float32 NCHW batch to float32 logits in the target runtime.

    A static runner takes exactly the exported batch; a dynamic one (``dynamic_batch``) any
    count, which ``__call__`` sends unpadded in chunks of at most ``MAX_DYNAMIC_CHUNK``.
    A features artifact's runner returns a list of arrays (``stage1..stage4``, in the
    manifest's ``outputs`` order) from ``run_batch`` and ``__call__`` alike; a classifier's
    returns the one logits array.
    """

    #: human-readable runtime name (and the device it runs on), recorded in parity reports
    description: str = ""
    #: the device it runs on, as ``Converter.check_device`` names it
    device: str = CPU
    #: the float type the runtime reports computing in (``fp32``, ``fp16``, ``bf16``) where it
    #: may differ from the artifact's precision (an fp16 IR run at bf16); None: not reported
    executes: str | None = None

    def __init__(self, batch_size: int, dynamic_batch: bool = False) -> None:
        self.batch_size = batch_size
        self.dynamic_batch = dynamic_batch

    @abc.abstractmethod
    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """``batch_size`` inputs (float32 NCHW; dynamic: 1..MAX_DYNAMIC_CHUNK) -> logits
        (a features artifact: the list of its outputs)."""

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """Run ``x`` (one batch of ``batch_size``) ``runs`` times under the runtime's own
        profiler; the runtimes that have one override this."""
        raise ProfileError(f"{self.description or type(self).__name__}: no per-op profiler")

    def __call__(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Any number of inputs: chunked (and the last chunk padded) to the static batch, or
        sent as they are in chunks of at most ``MAX_DYNAMIC_CHUNK`` by a dynamic runner."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.dynamic_batch:
            return _joined(
                [
                    _as_outputs(self.run_batch(x[start : start + MAX_DYNAMIC_CHUNK]))
                    for start in range(0, x.shape[0], MAX_DYNAMIC_CHUNK)
                ]
            )
        outputs = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            count = chunk.shape[0]
            if count < self.batch_size:
                pad = np.zeros((self.batch_size - count, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            outputs.append(_as_outputs(self.run_batch(chunk), count))
        return _joined(outputs)


def _as_outputs(result: Any, count: int | None = None) -> np.ndarray | list[np.ndarray]:
    """A run_batch result as float32 (the first ``count`` rows): one array, or a list."""
    if isinstance(result, (list, tuple)):
        return [np.asarray(part, dtype=np.float32)[:count] for part in result]
    return np.asarray(result, dtype=np.float32)[:count]


def _joined(chunks: list[Any]) -> np.ndarray | list[np.ndarray]:
    """Chunks concatenated along the batch: per output where each chunk is a list."""
    if chunks and isinstance(chunks[0], list):
        return [np.concatenate(parts) for parts in zip(*chunks)]
    return np.concatenate(chunks)


class Converter(abc.ABC):
    """One target's float export and runner. Its facts (name, extra, precisions, graph form)
    are the ``DESCRIPTOR`` of the module that defines it."""

    @property
    def descriptor(self) -> TargetDescriptor:
        return importlib.import_module(type(self).__module__).DESCRIPTOR

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def extra(self) -> str:
        return self.descriptor.extra

    @property
    def packages(self) -> tuple[str, ...]:
        return self.descriptor.packages

    @property
    def precisions(self) -> tuple[str, ...]:
        """Float precisions (int8 availability: ``calibration.recipes.supported_precisions``)."""
        return self.descriptor.precisions

    @property
    def default_precision(self) -> str:
        return self.descriptor.default_precision

    @property
    def graph_form(self) -> str:
        return self.descriptor.graph_form

    @property
    def suffix(self) -> str:
        return self.descriptor.suffix

    def check_installed(self) -> None:
        self.descriptor.check_installed()

    def check_request(self, request: ExportRequest) -> None:
        """Refuse what this target cannot build. int8 is judged by its calibration recipe."""
        if request.precision != INT8 and request.precision not in self.precisions:
            raise ExportError(
                f"{self.name} cannot export precision {request.precision}; "
                f"choose {', '.join(self.precisions)}"
            )
        if not (isinstance(request.batch_size, int) and request.batch_size >= 1):
            raise ExportError(f"batch size must be a positive integer (got {request.batch_size!r})")
        if request.dynamic_batch and not self.descriptor.dynamic_batch:
            able = [name for name in target_names() if get_descriptor(name).dynamic_batch]
            raise ExportError(
                f"{self.name} cannot export a dynamic batch (targets that can: "
                f"{', '.join(able) or 'none'}); give a static batch size"
            )

    # -- devices ------------------------------------------------------------------------

    def available_devices(self, manifest: Any = None) -> list[str]:
        """The devices this target's runner can use on this machine, the default first.

        ``manifest``: the artifact to run, for targets where the answer depends on it
        (ExecuTorch: the delegate it was lowered to).
        """
        return [CPU]

    def match_device(self, device: str, available: list[str]) -> str | None:
        """``device`` as spelled in ``available`` (case-insensitive), or None."""
        return next((name for name in available if name.lower() == device.lower()), None)

    def check_device(self, device: str | None, manifest: Any = None) -> str:
        """The canonical name of ``device`` (None: the default, the first available).

        RunnerUnavailableError, one line listing what is available, when it is not here.
        """
        available = self.available_devices(manifest)
        if not available:
            raise RunnerUnavailableError(f"{self.name}: its runtime reports no device here")
        if device is None:
            return available[0]
        name = self.match_device(str(device), available)
        if name is None:
            raise RunnerUnavailableError(
                f"device {device} is not available for {self.name} here; available: "
                + ", ".join(available)
            )
        return name

    def open_runner(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        """``load`` on ``device`` (checked first); a ``load`` written before devices existed
        (no ``device`` parameter) is called without it, on the checked default."""
        self.check_installed()
        if "device" in inspect.signature(self.load).parameters:
            return self.load(folder, manifest, threads, device=device)
        name = self.check_device(device, manifest)
        runner = self.load(folder, manifest, threads)
        runner.device = name
        return runner

    def graph_form_for(self, request: ExportRequest) -> str:
        """The graph form to export for this request (measured per target; docs/)."""
        return self.graph_form

    @abc.abstractmethod
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        """Convert ``model`` (already in this target's graph form, eval, fp32) into ``workdir``."""

    @abc.abstractmethod
    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        """A runner for the artifact in ``folder`` on ``device`` (None: the default; an
        unavailable one raises RunnerUnavailableError, see ``check_device``)."""


def half_precision(model: Any) -> Any:
    """The model in float16 between a float32 input cast and a float32 output cast."""
    import copy

    import torch

    class HalfPrecision(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = copy.deepcopy(inner).half()

        def forward(self, x: torch.Tensor) -> Any:
            result = self.inner(x.half())
            if isinstance(result, tuple):
                return tuple(part.float() for part in result)
            return result.float()

    return HalfPrecision(model).eval()
