"""OpenVINO: ``ov.convert_model`` on the PyTorch module -> IR (model.xml + model.bin) for CPU.

Static input shape, or with ``dynamic_batch`` a dynamic batch dimension (``-1``; every other
dimension static). fp32 keeps float32 weights (``compress_to_fp16=False``); fp16 stores the
weights as float16 (OpenVINO's weight compression on save), activations stay the plugin's.

Runtime precision: the CPU plugin runs bf16 by default on CPUs with AVX-512 BF16 / AMX, which
moves logits by ~1e-2. fp32 artifacts therefore compile with ``INFERENCE_PRECISION_HINT=f32``;
fp16 artifacts compile with the hint recorded in their manifest (``export.inference_precision``).

Reproducibility: OpenVINO names unnamed nodes from a process-wide counter
(``Multiply_17907``), so two exports in one process would differ; every such name is
rewritten from the node's position in the graph before saving, which makes the files
byte-identical for identical weights.

Devices are OpenVINO's device names as ``ov.Core().available_devices`` reports them (CPU, GPU,
GPU.1, NPU...), and the virtual devices AUTO, MULTI:<devices>, HETERO:<devices> over them.
"""

from __future__ import annotations

import re
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

from restv2_edge.errors import ArtifactError, ExportError, first_line

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MODEL_NAME = "restv2_edge"
#: inference precision hint per artifact precision. fp16 runs with f32 activations: the
#: CPU default (bf16 here) misses the fp16 parity gate (cosine >= 0.9995) on ResTv2-T.
INFERENCE_PRECISION = {"fp32": "f32", "fp16": "f32"}
_AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")
#: virtual devices that schedule onto real ones (AUTO alone: any real device)
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


class OpenVinoRunner(Runner):
    def __init__(
        self,
        path: Path,
        batch_size: int,
        hint: str | None,
        threads: int | None = None,
        dynamic_batch: bool = False,
        device: str = "CPU",
    ) -> None:
        import openvino as ov

        super().__init__(batch_size, dynamic_batch)
        config: dict[str, Any] = {}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), device, config)
        self.request = self.compiled.create_infer_request()
        self.device = device
        self.description = (
            f"OpenVINO {ov.__version__.split('-')[0]} ({_placement(self.compiled, device)})"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the graph's order."""
        result = self.request.infer({0: x})
        outputs = [np.array(result[port], dtype=np.float32) for port in self.compiled.outputs]
        return outputs[0] if len(outputs) == 1 else outputs


def _placement(compiled: Any, device: str) -> str:
    """``CPU, INFERENCE_PRECISION_HINT=f32``, or for a virtual device what it runs on:
    ``AUTO on CPU`` (AUTO answers no precision hint of its own)."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    except RuntimeError:
        hint = None
    try:
        used = ", ".join(compiled.get_property("EXECUTION_DEVICES"))
    except RuntimeError:
        used = device
    where = device if used == device else f"{device} on {used}"
    return where + (f", INFERENCE_PRECISION_HINT={hint}" if hint else "")


class OpenVinoConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        import openvino as ov
        import torch

        shape = [int(d) for d in example.shape]
        if request.dynamic_batch:
            shape[0] = -1
        try:
            with torch.no_grad():
                converted = ov.convert_model(
                    model, example_input=example, input=[ov.PartialShape(shape)]
                )
        except Exception as exc:
            raise ExportError(f"openvino convert_model failed: {first_line(exc)}") from exc
        progress("convert")
        names = list(request.output_names)
        if len(converted.inputs) != 1 or len(converted.outputs) != len(names):
            raise ExportError(
                f"openvino model must have exactly one input and {len(names)} output(s)"
            )
        check_shapes(converted, request.dynamic_batch)
        converted.inputs[0].get_tensor().set_names({INPUT_NAME})
        for port, name in zip(converted.outputs, names):
            port.get_tensor().set_names({name})
        canonical_names(converted)
        compress = request.precision == "fp16"
        ov.save_model(converted, str(workdir / MODEL_FILE), compress_to_fp16=compress)
        ops: dict[str, int] = {}
        for op in converted.get_ordered_ops():
            ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=names[0],
            output_names=names,
            versions={"openvino": ov.__version__.split("-")[0]},
            info={
                "weights_file": WEIGHTS_FILE,
                "weights": "float16" if compress else "float32",
                "inference_precision": INFERENCE_PRECISION[request.precision],
                "device": "CPU",
                "nodes": sum(ops.values()),
            },
        )

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        device = self.check_device(device, manifest)
        path = folder / manifest.model_file
        if not (path.is_file() and path.with_suffix(".bin").is_file()):
            raise ArtifactError(f"{folder}: OpenVINO IR needs {path.name} and its .bin")
        hint = manifest.export.get("inference_precision", INFERENCE_PRECISION["fp32"])
        return OpenVinoRunner(
            path, manifest.batch_size, hint, threads, manifest.dynamic_batch, device
        )

    def available_devices(self, manifest: Any = None) -> list[str]:
        """The real devices OpenVINO finds here (CPU first), then AUTO over them."""
        self.check_installed()
        import openvino as ov

        real = sorted(ov.Core().available_devices, key=lambda name: (name != "CPU", name))
        return [*real, "AUTO"] if real else []

    def match_device(self, device: str, available: list[str]) -> str | None:
        """A real device (``GPU`` also names ``GPU.0``), AUTO, or ``AUTO|MULTI|HETERO|BATCH:
        A,B`` whose every listed device is real and here; names in upper case."""
        name = device.strip().upper()
        real = [d for d in available if d not in VIRTUAL_DEVICES]
        kind, colon, listed = name.partition(":")
        if kind in VIRTUAL_DEVICES:
            parts = [p.strip() for p in listed.split(",")] if colon else []
            if (not colon and kind == "AUTO") or (parts and all(_real(p, real) for p in parts)):
                return name
            return None
        return name if _real(name, real) else None


def _real(name: str, real: list[str]) -> bool:
    """Whether ``name`` is one of the real devices, or the type of one (GPU for GPU.0)."""
    return name in real or any(device.split(".")[0] == name for device in real)


def check_shapes(model: Any, dynamic_batch: bool) -> None:
    """The input and output are static but for a dynamic batch (dimension 0) when asked."""
    ports = [("input", model.inputs[0])] + [("output", port) for port in model.outputs]
    for kind, value in ports:
        shape = value.get_partial_shape()
        if shape.rank.is_dynamic:
            raise ExportError(f"openvino model has a dynamic {kind} rank")
        dims = list(shape)
        if any(dim.is_dynamic for dim in dims[1:]):
            raise ExportError(f"openvino model has a dynamic {kind} shape {shape}")
        if dims[0].is_dynamic != dynamic_batch:
            state = "static" if dynamic_batch else "dynamic"
            raise ExportError(f"openvino model has a {state} {kind} batch {shape}")


def canonical_names(model: Any) -> None:
    """Replace counter-generated node names (``Multiply_17907``) by graph positions."""
    model.set_friendly_name(MODEL_NAME)
    for index, op in enumerate(model.get_ordered_ops()):
        if _AUTO_NAME.match(op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}_{index}")


CONVERTER = OpenVinoConverter()
DESCRIPTOR = TargetDescriptor(
    name="openvino",
    extra="openvino",
    packages=("openvino", "nncf"),
    precisions=("fp32", "fp16"),
    default_precision="fp32",
    # Measured (docs/graph-forms.md): OpenVINO fuses native LayerNorm (MVN) and 4-D MatMul.
    graph_form="native",
    suffix=".xml",
    converter=CONVERTER,
    manifest_fields=("weights_file", "weights", "inference_precision", "device", "nodes"),
    order=20,
    dynamic_batch=True,
)
