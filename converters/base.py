"""The one interface every target implements: export -> artifact folder, load -> runner."""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.errors import BackendMissingError, ExportError

Progress = Callable[[str], None]


@dataclass
class ExportRequest:
    """What to build. ``options`` carries target-specific flags (e.g. Core ML's target OS)."""

    precision: str = "fp32"
    raw_input: bool = False
    batch_size: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    # INT8: a CalibrationSet (calibration/) and the quantization settings.
    calibration: Any = None
    quantization: dict[str, Any] = field(default_factory=dict)


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
    """One target: its pip extra, its precisions, its export and its runner."""

    name: str = ""
    extra: str = ""
    #: import names that must be present; the first missing one is named in the error
    packages: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32",)
    default_precision: str = "fp32"
    #: the model graph form this target exports best (restv2_edge.model.GraphForm)
    graph_form: str = "native"
    #: model file extension, for messages
    suffix: str = ""

    def check_installed(self) -> None:
        for package in self.packages:
            try:
                importlib.import_module(package)
            except ImportError:
                raise BackendMissingError(package, self.extra) from None

    def supported_precisions(self) -> tuple[str, ...]:
        """Float precisions of this converter, plus int8 where calibration/ has a recipe."""
        from restv2_edge.calibration.recipes import has_int8_recipe

        return self.precisions + (("int8",) if has_int8_recipe(self.name) else ())

    def check_request(self, request: ExportRequest) -> None:
        if request.precision not in self.supported_precisions():
            raise ExportError(
                f"{self.name} cannot export precision {request.precision}; "
                f"choose {', '.join(self.supported_precisions())}"
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


TARGETS: dict[str, str] = {
    "onnx": "restv2_edge.converters.onnx",
    "openvino": "restv2_edge.converters.openvino",
    "executorch": "restv2_edge.converters.executorch",
    "coreml": "restv2_edge.converters.coreml",
}


def get_converter(target: str) -> Converter:
    """The converter for a target name (imports only that module, never its backend)."""
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[target]).CONVERTER


def installed_targets() -> list[str]:
    available = []
    for target in TARGETS:
        try:
            get_converter(target).check_installed()
        except BackendMissingError:
            continue
        available.append(target)
    return available


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
