"""The registry of targets: every module ``converters/<name>.py`` that defines ``DESCRIPTOR``.

A target's facts live in its one ``TargetDescriptor``; the CLI's choices, the export
pipeline, bench tables and contract tests read them here. Nothing else lists target names,
so adding a target is adding its module (docs/adding-a-target.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restv2_edge.errors import BackendMissingError, ExportError

if TYPE_CHECKING:
    from restv2_edge.converters.base import Converter


#: builds a peer pipeline: (model, example batch, calibration images, work folder) -> a
#: callable mapping a float32 NCHW batch (the example's shape) to float32 logits
PeerBuild = Callable[[Any, Any, Any, Path], Callable[[Any], Any]]


@dataclass(frozen=True)
class PeerPipeline:
    """A toolchain's plain pipeline for the same model, through that toolchain's defaults and
    none of the project's graph work: the yardstick a target's artifacts are timed against
    (``restv2_edge.bench.peers``). The model handed to ``build`` is the independent
    official-structure network; the calibration images are the project's calibration set."""

    #: the row's label, naming the toolchain call and its settings
    label: str
    #: the artifact precision it is compared with: ``fp32``, ``half`` (the runtime's CPU
    #: default or fp16/bf16 setting) or ``int8``
    precision: str
    build: PeerBuild


@dataclass(frozen=True)
class TargetDescriptor:
    """Everything the product knows about one target, declared once in its module."""

    #: the target's name on the command line and in manifests
    name: str
    #: the pip extra that installs its backend: ``pip install 'restv2-edge[<extra>]'``
    extra: str
    #: import names that must be present; the first missing one is named in the error
    packages: tuple[str, ...]
    #: float precisions the converter exports (int8 comes from a calibration recipe)
    precisions: tuple[str, ...]
    default_precision: str
    #: the model graph form this target exports best (``restv2_edge.model.GraphForm``)
    graph_form: str
    #: model file suffix (``.onnx``, ``.mlpackage``...), for messages and docs
    suffix: str
    #: the float export and the runner load
    converter: Converter
    #: the keys this target adds to the manifest's ``export`` record
    manifest_fields: tuple[str, ...]
    #: position in listings (CLI choices, docs tables): lower first, then by name
    order: int = 100
    #: target-specific export options it reads (``ExportRequest.options`` keys, which are
    #: CLI option names, e.g. ``deployment_target``): the CLI refuses them elsewhere
    options: tuple[str, ...] = ()
    #: the target can export a symbolic batch dimension (``ExportRequest.dynamic_batch``;
    #: Core ML: a flexible or enumerated one); the CLI refuses ``--dynamic-batch`` elsewhere
    dynamic_batch: bool = False
    #: the toolchain's plain pipelines (``PeerPipeline``) its artifacts are benchmarked against
    peers: tuple[PeerPipeline, ...] = ()

    def __post_init__(self) -> None:
        if self.default_precision not in self.precisions:
            raise ExportError(
                f"target {self.name}: default precision {self.default_precision} is not one "
                f"of {', '.join(self.precisions)}"
            )

    def check_installed(self) -> None:
        """Raise BackendMissingError naming the first missing package and the extra."""
        for package in self.packages:
            try:
                importlib.import_module(package)
            except ImportError:
                raise BackendMissingError(package, self.extra) from None


@lru_cache(maxsize=1)
def _discovered() -> dict[str, TargetDescriptor]:
    """Import each module of the converters package once and keep those with a DESCRIPTOR
    (target modules import their backend inside functions, so this imports no backend)."""
    import restv2_edge.converters as package

    found: dict[str, TargetDescriptor] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        descriptor = getattr(module, "DESCRIPTOR", None)
        if descriptor is None:
            continue
        if not isinstance(descriptor, TargetDescriptor):
            raise ExportError(f"{module.__name__}.DESCRIPTOR is not a TargetDescriptor")
        if descriptor.name in found:
            raise ExportError(f"two converter modules declare the target {descriptor.name!r}")
        found[descriptor.name] = descriptor
    ordered = sorted(found.values(), key=lambda d: (d.order, d.name))
    return {descriptor.name: descriptor for descriptor in ordered}


def target_names() -> list[str]:
    """Every registered target, in declared order (``TargetDescriptor.order``)."""
    return list(_discovered())


def get_descriptor(name: str) -> TargetDescriptor:
    """The descriptor of target ``name``; ExportError naming the choices otherwise."""
    targets = _discovered()
    if name not in targets:
        raise ExportError(f"unknown target {name!r}; choose one of {', '.join(targets)}")
    return targets[name]


def get_converter(name: str) -> Converter:
    """The converter of target ``name`` (imports its module, never its backend)."""
    return get_descriptor(name).converter


def installed_targets() -> list[str]:
    """The targets whose backend packages are importable here."""
    available = []
    for descriptor in _discovered().values():
        try:
            descriptor.check_installed()
        except BackendMissingError:
            continue
        available.append(descriptor.name)
    return available
