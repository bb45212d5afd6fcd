"""ONNX: torch.onnx (dynamo exporter) -> model.onnx, run in onnxruntime.

Static input shape (or, with ``dynamic_batch``, a symbolic batch dimension named ``batch`` and
every other dimension static), opset 20, every weight inside the one file (no external data),
checked with ``onnx.checker.check_model(full_check=True)``. fp16 converts weights and
activations with onnx's float16 converter, keeping float32 graph inputs/outputs.

Devices are onnxruntime execution providers, spelled as ``onnxruntime.get_available_providers()``
reports them (``CPUExecutionProvider``; the short form ``CPU`` is read as the same). A provider
other than the CPU one runs with the CPU provider behind it for the nodes it does not take.
"""

from __future__ import annotations

import json
import tempfile
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
    half_precision,
)

from restv2_edge.errors import ExportError, ProfileError, first_line

# 20, not 18: from opset 20 GELU is one ONNX op; at 18 it is exported as Div/Erf/Add/Mul/Mul,
# which onnxruntime 1.32 does not fuse back (docs/graph-forms.md).
OPSET = 20
MODEL_FILE = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: the symbolic batch dimension of a dynamic-batch export
BATCH_DIM = "batch"
CPU_PROVIDER = "CPUExecutionProvider"
#: reported by onnxruntime's default build but calls a remote endpoint: not a local device
NOT_DEVICES = {"AzureExecutionProvider"}
PROVIDER_SUFFIX = "ExecutionProvider"


class OnnxRunner(Runner):
    def __init__(
        self,
        path: Path,
        batch_size: int,
        threads: int | None = None,
        dynamic_batch: bool = False,
        provider: str = CPU_PROVIDER,
    ) -> None:
        import onnxruntime as ort

        super().__init__(batch_size, dynamic_batch)
        self.path, self.threads = path, threads
        self.providers = [provider] + ([CPU_PROVIDER] if provider != CPU_PROVIDER else [])
        self.session = ort.InferenceSession(str(path), self._options(), providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.device = provider
        used = ", ".join(self.session.get_providers())
        self.description = f"onnxruntime {ort.__version__} ({used})"

    def _options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        return options

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the graph's order."""
        outputs = self.session.run(None, {self.input_name: x})
        return outputs[0] if len(outputs) == 1 else outputs

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """onnxruntime session profiling in a second session (same file, threads and
        providers): one warm-up run, then ``runs`` profiled ones; the ``Node`` events' ``dur``
        (µs) averaged per node. The runner's own session is not touched."""
        import onnxruntime as ort

        if runs < 1:
            raise ProfileError(f"profile needs at least one run (got {runs})")
        with tempfile.TemporaryDirectory(prefix="restv2-ort-profile-") as folder:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(folder) / "ort")
            session = ort.InferenceSession(str(self.path), options, providers=self.providers)
            feed = {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
            for _ in range(runs + 1):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        providers = session.get_providers()
        return OpProfile(
            profiler=f"onnxruntime {ort.__version__} session profiling",
            runs=runs,
            ops=node_times(events, runs, delegates=providers != [CPU_PROVIDER]),
            notes=(
                "per-node kernel time (Node events' dur); the first run is a warm-up, not "
                f"counted; providers: {', '.join(providers)}",
                f"a profiled model_run took {profiled_run_ms(events):.3f} ms on average: "
                "profiling adds a per-node cost, so small graphs run slower under it",
            ),
        )


def profiled_run_ms(events: list[dict[str, Any]]) -> float:
    """Mean ``model_run`` duration (ms) of the profiled runs (the warm-up left out)."""
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    return sum(dur for _, dur in runs) / max(len(runs), 1) / 1000.0


def node_times(events: list[dict[str, Any]], runs: int, delegates: bool) -> tuple[OpTime, ...]:
    """Mean ms per inference of every node's ``*_kernel_time`` events after the first
    ``model_run`` (the warm-up); ``delegated``: the node ran on a provider other than the CPU
    one (None where the CPU provider is the only one)."""
    starts = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    if len(starts) < 2:
        raise ProfileError("onnxruntime profile holds no profiled run")
    warm_end = starts[0]
    total: dict[str, float] = {}
    kinds: dict[str, tuple[str, bool | None]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if event["ts"] < warm_end:
            continue
        node = name.removesuffix("_kernel_time")
        args = event.get("args", {})
        provider = args.get("provider", CPU_PROVIDER)
        total[node] = total.get(node, 0.0) + float(event["dur"])
        kinds[node] = (args.get("op_name", "?"), provider != CPU_PROVIDER if delegates else None)
    return tuple(
        OpTime(node, kinds[node][0], micros / runs / 1000.0, kinds[node][1])
        for node, micros in total.items()
    )


class OnnxConverter(Converter):
    def graph_form_for(self, request: ExportRequest) -> str:
        """``native-pointwise`` for fp32: onnxruntime runs each block's MLP as two 1x1 convs
        through its NCHWc kernels faster than as two Gemms; ``native`` (the descriptor's form)
        for fp16 and for the int8 recipe, whose QGemm beats the quantized pointwise convs
        (docs/graph-forms.md)."""
        if request.precision == "fp32":
            return "native-pointwise"
        return self.graph_form

    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        import onnx
        import torch

        path = workdir / MODEL_FILE
        if request.precision == "fp16":
            model = half_precision(model)
        dynamic = {"dynamic_shapes": ({0: torch.export.Dim(BATCH_DIM)},)}
        try:
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(request.output_names),
                external_data=False,
                verbose=False,
                **(dynamic if request.dynamic_batch else {}),
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx export failed: {first_line(exc)}") from exc
        progress("convert")
        proto = program.model_proto
        proto.producer_name = "restv2-edge"
        fold_weight_unsqueezes(proto)
        onnx.checker.check_model(proto, full_check=True)
        check_static(proto, request.dynamic_batch)
        onnx.save_model(proto, str(path))
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=request.output_names[0],
            output_names=list(request.output_names),
            versions=_versions(),
            info={"opset": OPSET, "nodes": len(proto.graph.node)},
        )

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        provider = self.check_device(device, manifest)
        return OnnxRunner(
            folder / manifest.model_file,
            manifest.batch_size,
            threads,
            manifest.dynamic_batch,
            provider,
        )

    def available_devices(self, manifest: Any = None) -> list[str]:
        """onnxruntime's execution providers in this install, the CPU provider first."""
        self.check_installed()
        import onnxruntime as ort

        found = [p for p in ort.get_available_providers() if p not in NOT_DEVICES]
        return [CPU_PROVIDER] + [p for p in found if p != CPU_PROVIDER]

    def match_device(self, device: str, available: list[str]) -> str | None:
        """A provider name, or its short form without ``ExecutionProvider`` (any case)."""
        wanted = device.lower().removesuffix(PROVIDER_SUFFIX.lower())
        return next(
            (p for p in available if p.lower().removesuffix(PROVIDER_SUFFIX.lower()) == wanted),
            None,
        )


def fold_weight_unsqueezes(proto: Any) -> int:
    """Replace each ``Unsqueeze`` of a weight that nothing else reads (the pointwise form's
    linear weights viewed as 1x1 conv filters) by the unsqueezed weight itself, under the
    weight's own name: the convs then read plain initializers, as every other conv does.
    Returns how many were folded."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in proto.graph.initializer}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    renamed: dict[str, str] = {}
    axes_read: set[str] = set()
    kept = []
    for node in proto.graph.node:
        weight, axes = [*node.input, "", ""][:2]
        foldable = (
            node.op_type == "Unsqueeze"
            and weight in initializers
            and axes in initializers
            and readers[weight] == 1
        )
        if not foldable:
            kept.append(node)
            continue
        value = numpy_helper.to_array(initializers[weight])
        for axis in sorted(int(a) for a in numpy_helper.to_array(initializers[axes])):
            value = np.expand_dims(value, axis if axis >= 0 else value.ndim + 1 + axis)
        initializers[weight].CopyFrom(numpy_helper.from_array(value, weight))
        renamed[node.output[0]] = weight
        axes_read.add(axes)
    for node in kept:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    stale = set(renamed) | set(renamed.values())  # shapes recorded before the fold
    for info in [v for v in proto.graph.value_info if v.name in stale]:
        proto.graph.value_info.remove(info)
    still_read = {name for node in kept for name in node.input}
    for init in [i for i in proto.graph.initializer if i.name in axes_read - still_read]:
        proto.graph.initializer.remove(init)
    return len(renamed)


def check_static(proto: Any, dynamic_batch: bool = False) -> None:
    """No dynamic-shape ops, no value of rank > 4, and every dimension static (shape inference
    on the saved graph) but, for a dynamic-batch export, the leading ``batch`` dimension."""
    import onnx

    dynamic = {"Shape", "ConstantOfShape", "NonZero", "Range", "Expand"}
    found = sorted({node.op_type for node in proto.graph.node if node.op_type in dynamic})
    if found:
        raise ExportError(f"ONNX graph has dynamic-shape ops: {', '.join(found)}")
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    values = (
        list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    )
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 4:
            raise ExportError(f"ONNX value {value.name} has rank {len(dims)} > 4")
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value"):
                continue
            if not (dynamic_batch and index == 0 and dim.dim_param == BATCH_DIM):
                raise ExportError(f"ONNX value {value.name} has a symbolic dimension")
    if dynamic_batch:
        for value in (*inferred.graph.input, *inferred.graph.output):
            first = value.type.tensor_type.shape.dim[0]
            if first.dim_param != BATCH_DIM:
                raise ExportError(f"ONNX {value.name}: the batch dimension is not symbolic")


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript

    return {
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _plain_onnx(model: Any, example: np.ndarray, workdir: Path) -> Path:
    """``torch.onnx.export`` with its defaults: what a user gets without this project
    (``verbose=False`` only silences its progress lines)."""
    import torch

    path = Path(workdir) / "peer-fp32.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(example),), str(path), verbose=False)
    return path


def _session_runner(path: Path) -> Any:
    """``InferenceSession`` with default options: x -> the first output."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def peer_fp32(model: Any, example: np.ndarray, calibration: Any, workdir: Path) -> Any:
    """onnxruntime fp32: ``torch.onnx.export`` defaults, ``InferenceSession`` defaults."""
    return _session_runner(_plain_onnx(model, example, workdir))


def peer_int8(model: Any, example: np.ndarray, calibration: np.ndarray, workdir: Path) -> Any:
    """onnxruntime int8: ``quantize_static`` with its defaults (QDQ, per-tensor, MinMax)
    on the plain fp32 export, calibrated one image per batch (the export's batch of 1)."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    class Images(CalibrationDataReader):
        def __init__(self, name: str) -> None:
            self.name, self.batches = name, iter(np.asarray(calibration, np.float32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.batches, None)
            return None if image is None else {self.name: image[None]}

    import onnx

    fp32 = _plain_onnx(model, example, workdir)
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    int8 = Path(workdir) / "peer-int8.onnx"
    quantize_static(str(fp32), str(int8), Images(name))
    return _session_runner(int8)


PEERS = (
    PeerPipeline(
        "onnxruntime fp32: torch.onnx.export + InferenceSession defaults", "fp32", peer_fp32
    ),
    PeerPipeline(
        "onnxruntime int8: quantize_static defaults (QDQ, per-tensor, MinMax)", "int8", peer_int8
    ),
)

CONVERTER = OnnxConverter()
DESCRIPTOR = TargetDescriptor(
    name="onnx",
    extra="onnx",
    packages=("onnx", "onnxruntime", "onnxscript"),
    precisions=("fp32", "fp16"),
    default_precision="fp32",
    # onnxruntime fuses native LayerNorm and 4-D MatMul (docs/graph-forms.md)
    graph_form="native",
    suffix=".onnx",
    converter=CONVERTER,
    manifest_fields=("opset", "nodes"),
    order=10,
    dynamic_batch=True,
    peers=PEERS,
)
