"""The one interface every target implements: export -> artifact folder, load -> runner.

Also the request a target is asked to build (``ExportRequest``, with its
``QuantizationSettings``) and the registry's public names (``target_names``,
``get_descriptor``, ``get_converter``, ``installed_targets``; converters/registry.py).
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from restv2_edge.converters.registry import (
    TargetDescriptor,
    get_converter,
    get_descriptor,
    installed_targets,
    target_names,
)

from restv2_edge.errors import ExportError

if TYPE_CHECKING:
    from restv2_edge.config import ModelConfig
    from restv2_edge.preprocess import Preprocessing

Progress = Callable[[str], None]
#: the precision that calibration/ recipes build (every other one is a converter's own)
INT8 = "int8"

__all__ = [
    "INT8",
    "Converter",
    "ExportRequest",
    "ExportResult",
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
    ``QuantizationSettings``.
    """

    precision: str = "fp32"
    raw_input: bool = False
    batch_size: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    # INT8: a CalibrationSet (calibration/) and the quantization settings.
    calibration: Any = None
    quantization: QuantizationSettings = field(default_factory=QuantizationSettings)
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None
    model_config: ModelConfig | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "quantization" and isinstance(value, Mapping):
            value = QuantizationSettings.from_dict(value)
        super().__setattr__(name, value)

    def for_model(self, model: Any) -> ExportRequest:
        """A copy that carries ``model``'s preprocessing, class names (numbered when it has
        none, as in the manifest) and config."""
        config = model.config
        names = model.class_names or [str(i) for i in range(config.num_classes)]
        return replace(
            self, preprocessing=model.preprocessing, class_names=list(names), model_config=config
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


class Runner(abc.ABC):
    """Maps a float32 NCHW batch to float32 logits in the target runtime."""

    #: human-readable runtime name, recorded in parity reports
    description: str = ""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    @abc.abstractmethod
    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """Exactly ``batch_size`` inputs (float32 NCHW) -> logits."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Any number of inputs: chunked (and the last chunk padded) to the static batch."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        outputs = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            count = chunk.shape[0]
            if count < self.batch_size:
                pad = np.zeros((self.batch_size - count, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            outputs.append(np.asarray(self.run_batch(chunk), dtype=np.float32)[:count])
        return np.concatenate(outputs)


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

    def graph_form_for(self, request: ExportRequest) -> str:
        """The graph form to export for this request (measured per target; docs/)."""
        return self.graph_form

    @abc.abstractmethod
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        """Convert ``model`` (already in this target's graph form, eval, fp32) into ``workdir``."""

    @abc.abstractmethod
    def load(self, folder: Path, manifest: Any, threads: int | None = None) -> Runner:
        """A runner for the artifact in ``folder``."""


def half_precision(model: Any) -> Any:
    """The model in float16 between a float32 input cast and a float32 output cast."""
    import copy

    import torch

    class HalfPrecision(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = copy.deepcopy(inner).half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return HalfPrecision(model).eval()
