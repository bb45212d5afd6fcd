"""OpenVINO: ``ov.convert_model`` on the PyTorch module -> IR (model.xml + model.bin) for CPU.

Static input shape, or with ``dynamic_batch`` a dynamic batch dimension (``-1``; every other
dimension static). fp32 keeps float32 weights (``compress_to_fp16=False``); fp16 stores the
weights as float16 (OpenVINO's weight compression on save), activations stay the plugin's.

Runtime precision (docs/precision.md): fp32 artifacts compile with
``INFERENCE_PRECISION_HINT=f32`` (the CPU plugin's default is bf16 on CPUs with AVX-512 BF16 /
AMX). fp16 artifacts compile with no hint: the device's native half type (bf16 on such CPUs,
f16 where the device computes in f16, f32 on a CPU with neither). bf16 artifacts compile with
``bf16``; their export is refused on a CPU whose plugin reports no BF16 capability (the gate
could not measure bf16 there). The manifest records the hint (``export.inference_precision``,
null: the device's default) and what the compiled model reported at export
(``export.execution_precision``); runners read the hint, so an older fp16 artifact recorded
with ``f32`` still runs at f32.

Reproducibility: OpenVINO names unnamed nodes from a process-wide counter
(``Multiply_17907``), so two exports in one process would differ; every such name is
rewritten from the node's position in the graph before saving, which makes the files
byte-identical for identical weights.

Devices are OpenVINO's device names as ``ov.Core().available_devices`` reports them (CPU, GPU,
GPU.1, NPU...), and the virtual devices AUTO, MULTI:<devices>, HETERO:<devices> over them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.converters.base import (
    Converter,
    ExportRequest,
    ExportResult,
    OpProfile,
    OpTime,
    PeerPipeline,
    Progress,
    Runner,
    TargetDescriptor,
)

from restv2_edge.errors import ArtifactError, ExportError, ProfileError, first_line

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MODEL_NAME = "restv2_edge"
#: INFERENCE_PRECISION_HINT per artifact precision; None: none given, the device's default
#: (its native half type: bf16 on AVX-512 BF16 / AMX CPUs). Measured gates: docs/precision.md.
INFERENCE_PRECISION: dict[str, str | None] = {"fp32": "f32", "fp16": None, "bf16": "bf16"}
#: OpenVINO's element type names -> the project's precision names (``Runner.executes``)
EXECUTED_TYPE = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}
#: the CPU plugin's OPTIMIZATION_CAPABILITIES entry that says it computes in bf16
BF16_CAPABILITY = "BF16"
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
        self.path = path
        self.config: dict[str, Any] = {}
        if hint:
            self.config["INFERENCE_PRECISION_HINT"] = hint
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), device, self.config)
        self.request = self.compiled.create_infer_request()
        self.device = device
        self.executes = EXECUTED_TYPE.get(_compiled_hint(self.compiled) or "")
        self.description = (
            f"OpenVINO {ov.__version__.split('-')[0]} ({_placement(self.compiled, device)})"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the graph's order."""
        result = self.request.infer({0: x})
        outputs = [np.array(result[port], dtype=np.float32) for port in self.compiled.outputs]
        return outputs[0] if len(outputs) == 1 else outputs

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """OpenVINO performance counters (``PERF_COUNT``) on a second compile of the same IR
        (same device and config): one warm-up inference, then ``runs`` profiled ones, each
        read back by ``get_profiling_info`` (the last inference's counters); nodes that did
        not execute (fused or optimized out) are left out."""
        import openvino as ov

        if runs < 1:
            raise ProfileError(f"profile needs at least one run (got {runs})")
        core = ov.Core()
        try:
            compiled = core.compile_model(
                core.read_model(str(self.path)), self.device, {**self.config, "PERF_COUNT": True}
            )
        except RuntimeError as exc:
            raise ProfileError(f"OpenVINO PERF_COUNT compile failed: {first_line(exc)}") from exc
        request = compiled.create_infer_request()
        feed = {0: np.ascontiguousarray(x, dtype=np.float32)}
        request.infer(feed)
        total: dict[str, float] = {}
        kinds: dict[str, tuple[str, str]] = {}
        for _ in range(runs):
            request.infer(feed)
            for info in request.get_profiling_info():
                if info.status != ov.ProfilingInfo.Status.EXECUTED:
                    continue
                ms = info.real_time.total_seconds() * 1000.0
                total[info.node_name] = total.get(info.node_name, 0.0) + ms
                kinds[info.node_name] = (info.node_type, info.exec_type)
        ops = tuple(OpTime(name, kinds[name][0], ms / runs) for name, ms in total.items())
        return OpProfile(
            profiler=f"OpenVINO {ov.__version__.split('-')[0]} performance counters (PERF_COUNT)",
            runs=runs,
            ops=ops,
            notes=(
                f"{_placement(compiled, self.device)}; real_time of EXECUTED nodes; the first "
                "inference is a warm-up, not counted",
                "kernels by exec_type precision: " + _exec_precisions(kinds.values()),
            ),
        )


def _exec_precisions(kinds: Any) -> str:
    """How many executed nodes ran kernels of each precision (the exec_type's suffix, e.g.
    ``brgemm_avx512_amx_BF16`` -> BF16): shows what the device computed in."""
    counts: dict[str, int] = {}
    for _, exec_type in kinds:
        suffix = exec_type.rsplit("_", 1)[-1] if "_" in exec_type else exec_type
        counts[suffix] = counts.get(suffix, 0) + 1
    return ", ".join(f"{key} {count}" for key, count in sorted(counts.items())) or "none"


def execution_precision(path: Path, hint: str | None, device: str = "CPU") -> str | None:
    """The INFERENCE_PRECISION_HINT the compiled model reports (``f32``, ``bf16``, ``f16``):
    the precision the device runs the IR at with ``hint``; None where the device answers
    none (virtual devices)."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": hint} if hint else {}
    return _compiled_hint(core.compile_model(core.read_model(str(path)), device, config))


def _compiled_hint(compiled: Any) -> str | None:
    """A compiled model's INFERENCE_PRECISION_HINT; None where the device answers none."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    except RuntimeError:
        return None


def native_bf16(device: str = "CPU") -> bool:
    """Whether the OpenVINO device lists BF16 among its OPTIMIZATION_CAPABILITIES."""
    import openvino as ov

    return BF16_CAPABILITY in ov.Core().get_property(device, "OPTIMIZATION_CAPABILITIES")


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


#: precisions that run at the CPU's half type, where the V upsampling is a depthwise conv
HALF_PRECISIONS = ("fp16", "bf16")


class OpenVinoConverter(Converter):
    def graph_form_for(self, request: ExportRequest) -> str:
        """``native-convtranspose`` (the descriptor's form) for fp32 and int8: the CPU plugin
        runs the V upsampling as one depthwise deconvolution faster than grouped conv plus
        depth-to-space; ``native-depthwise`` for fp16/bf16, where that deconvolution and the
        grouped conv take generic bf16 kernels at ~3x their f32 time and a depthwise conv
        its fast depthwise kernel (docs/graph-forms.md)."""
        if request.precision in HALF_PRECISIONS:
            return "native-depthwise"
        return self.graph_form

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
        compress = request.precision != "fp32"
        ov.save_model(converted, str(workdir / MODEL_FILE), compress_to_fp16=compress)
        hint = INFERENCE_PRECISION[request.precision]
        progress("compile")
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
                "inference_precision": hint,
                "execution_precision": execution_precision(workdir / MODEL_FILE, hint),
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
        export = manifest.export
        hint = export.get("inference_precision", "f32")
        return OpenVinoRunner(
            path, manifest.batch_size, hint, threads, manifest.dynamic_batch, device
        )

    def check_request(self, request: ExportRequest) -> None:
        """Also refuse bf16 where the CPU plugin has no native bf16: OpenVINO would run it in
        f32 and the parity gate would not measure bf16 (fp16 runs the device's half type)."""
        super().check_request(request)
        if request.precision == "bf16" and not native_bf16():
            raise ExportError(
                "openvino bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX; OpenVINO "
                "reports no BF16 capability here); --precision fp16 stores the same half-size "
                "IR and runs at the device's native half type (f32 on this CPU)"
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


def _plain_ir(model: Any, example: np.ndarray) -> Any:
    """``ov.convert_model`` of the PyTorch module with only an example input (its defaults)."""
    import openvino as ov
    import torch

    with torch.no_grad():
        return ov.convert_model(model, example_input=torch.from_numpy(example))


def _compiled_runner(ir: Any, config: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``compile_model`` on CPU with ``config``: x -> the first output (a copy)."""
    import openvino as ov

    compiled = ov.Core().compile_model(ir, "CPU", config)
    request, output = compiled.create_infer_request(), compiled.output(0)
    return lambda x: np.array(request.infer({0: x})[output], dtype=np.float32)


def peer_f32(model: Any, example: np.ndarray, calibration: Any, workdir: Path) -> Any:
    """OpenVINO fp32: ``convert_model`` defaults, compiled with INFERENCE_PRECISION_HINT f32."""
    return _compiled_runner(_plain_ir(model, example), {"INFERENCE_PRECISION_HINT": "f32"})


def peer_default(model: Any, example: np.ndarray, calibration: Any, workdir: Path) -> Any:
    """OpenVINO at the CPU plugin's default precision (bf16 on AVX-512 BF16 / AMX CPUs)."""
    return _compiled_runner(_plain_ir(model, example), {})


def peer_nncf(model: Any, example: np.ndarray, calibration: np.ndarray, workdir: Path) -> Any:
    """OpenVINO int8: ``nncf.quantize`` with ``model_type=TRANSFORMER`` (its defaults
    otherwise) on the plain IR, calibrated one image per batch, compiled with CPU defaults."""
    import nncf

    images = [image[None] for image in np.asarray(calibration, np.float32)]
    quantized = nncf.quantize(
        _plain_ir(model, example), nncf.Dataset(images), model_type=nncf.ModelType.TRANSFORMER
    )
    return _compiled_runner(quantized, {})


PEERS = (
    PeerPipeline("OpenVINO fp32: convert_model + INFERENCE_PRECISION_HINT f32", "fp32", peer_f32),
    PeerPipeline(
        "OpenVINO CPU default precision: convert_model + compile defaults", "half", peer_default
    ),
    PeerPipeline("OpenVINO int8: NNCF quantize, model_type TRANSFORMER", "int8", peer_nncf),
)

CONVERTER = OpenVinoConverter()
DESCRIPTOR = TargetDescriptor(
    name="openvino",
    extra="openvino",
    packages=("openvino", "nncf"),
    # fp16: the device's native half type; bf16: bf16 pinned (docs/precision.md)
    precisions=("fp32", "fp16", "bf16"),
    default_precision="fp32",
    # Measured (docs/graph-forms.md): OpenVINO fuses native LayerNorm (MVN) and 4-D MatMul,
    # and runs the V upsampling fastest as one depthwise deconvolution.
    graph_form="native-convtranspose",
    suffix=".xml",
    converter=CONVERTER,
    manifest_fields=(
        "weights_file",
        "weights",
        "inference_precision",
        "execution_precision",
        "device",
        "nodes",
    ),
    order=20,
    dynamic_batch=True,
    peers=PEERS,
)
