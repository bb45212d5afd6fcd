"""ExecuTorch: torch.export -> XNNPACK-lowered program (model.pte), run by executorch.runtime.

Lowering is ``to_edge_transform_and_lower`` with the XNNPACK partitioner on the model's
"decomposed" graph form (docs/graph-forms.md): LayerNorm as linears, per-head 3-D bmm,
rank-4 pixel shuffle. XNNPACK has no ``repeat``; the decomposed pixel shuffle repeats the
reduced V map r*r times along channels, so before lowering every ``aten.repeat`` is
rewritten as a broadcast multiply by ones (exact; XNNPACK takes it).
The whole network then lands in one delegate.

The export records the delegation in ``ExportResult.info["delegation"]`` and refuses
(ExportError) a program whose compute-heavy ops (conv, linear, matmul, softmax, norms...)
are not all inside the delegate: those would run on slow portable kernels.

One module for the one target (a little over 600 lines): export, runner, its ETDump profile
and its two peer pipelines all speak the same lowering and runtime calls.

fp16 is not offered: see docs/graph-forms.md. The batch is static (``--batch N``); the
program is not exported with a symbolic batch.

Devices: the CPU, also named by the backend the artifact was lowered to
(``export.backend``, ``XnnpackBackend``), when this executorch build has that backend.

Profile (``ExecuTorchRunner.profile``): ETDump from a separate program loaded with
``enable_etdump``, read by the devtools Inspector; every XNNPACK operator of the delegate is
a delegated node, every portable-kernel call outside it a fallback node.

Peers (``PEERS``, the yardstick ``bench peers`` times the artifacts against): the
official-structure graph through ``torch.export.export`` + ``to_edge_transform_and_lower``
with the XNNPACK partitioner, fp32; and PT2E with ExecuTorch's XNNPACKQuantizer at
``get_symmetric_quantization_config()``'s defaults, calibrated on the given images, lowered
the same way. Neither gets this project's graph rewrites or its shape-op qparam sharing.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
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

MODEL_FILE = "model.pte"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BACKEND = "XnnpackBackend"
#: how an export names its load of the lowered program (before model.pte is written)
LOAD_CHECK = "executorch export: the lowered program does not load"
#: ops that must never run outside the delegate (edge op names without the overload)
HEAVY_OPS = frozenset(
    {
        "aten.convolution",
        "aten.linear",
        "aten.addmm",
        "aten.mm",
        "aten.bmm",
        "aten.matmul",
        "aten._softmax",
        "aten.softmax",
        "aten.native_layer_norm",
        "aten.layer_norm",
        "aten._native_batch_norm_legit_no_training",
        "aten.gelu",
        "aten.pixel_shuffle",
        "aten.mean",
        "aten.sum",
    }
)
_BOOKKEEPING = {"getitem", "executorch_call_delegate"}
#: the profiler ``ExecuTorchRunner.profile`` reads
PROFILER = "ExecuTorch ETDump (devtools Inspector)"


class ExecuTorchRunner(Runner):
    """Runs model.pte through the executorch.runtime Python bindings.

    ``threads`` resizes the bindings' one process-wide XNNPACK threadpool
    (``_unsafe_reset_threadpool``): it applies to every ExecuTorch program in the process.
    """

    def __init__(
        self, path: Path, batch_size: int, threads: int | None = None, device: str = "CPU"
    ) -> None:
        import executorch

        super().__init__(batch_size)
        self.device = device
        if threads:
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(int(threads))
        self.path = path
        self.program, self.method = load_forward(path)
        version = getattr(executorch, "__version__", None) or executorch_version()
        self.description = (
            f"ExecuTorch {version} (XNNPACK delegate on the CPU, executorch.runtime"
            + (f", device {device})" if device != "CPU" else ")")
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the program's order."""
        import torch

        try:
            outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(x))])
        except RuntimeError as exc:
            raise ArtifactError(f"ExecuTorch forward failed: {first_line(exc)}") from exc
        arrays = [output.numpy() for output in outputs]
        return arrays[0] if len(arrays) == 1 else arrays

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """``x`` run ``runs`` times (after one settling run) by a second copy of the program
        loaded with ETDump on; the runner's own program is left as it is."""
        if runs < 1:
            raise ProfileError(f"profile needs at least one run (got {runs})")
        if x.shape[0] != self.batch_size:
            raise ProfileError(f"profile takes one batch of {self.batch_size} (got {x.shape[0]})")
        return etdump_profile(etdump_events(self.path, x, runs), runs)


def load_forward(
    program: Path | bytes, error: type[Exception] = ArtifactError, where: str | None = None
) -> tuple[Any, Any]:
    """(program, its forward method) loaded by executorch.runtime.

    A failure raises ``error`` as one line naming ``where`` (default: the file), the step,
    the exception and the reason the runtime logged: XNNPACK says why it refuses a program
    only in the log ("Failed to create squeeze node ... xnn_status_invalid_parameter"), the
    exception just says "Failed to load method forward".
    """
    from executorch.runtime import Runtime

    label = where or (str(program) if isinstance(program, Path) else "program")
    runtime = Runtime.get()
    if not runtime.backend_registry.is_available(BACKEND):
        raise error(f"{label}: this executorch build has no {BACKEND}")
    step = "load_program"
    try:
        with runtime_log() as log:
            loaded = runtime.load_program(program)
            step = "load_method forward"
            method = loaded.load_method("forward")
    except Exception as exc:
        reason = logged_failure(log)
        raise error(
            f"{label}: ExecuTorch {step} failed: {type(exc).__name__}: {first_line(exc)}"
            + (f" (runtime log: {reason})" if reason else "")
        ) from exc
    if method is None:
        raise error(f"{label}: no forward method")
    return loaded, method


@contextlib.contextmanager
def runtime_log() -> Iterator[list[str]]:
    """Collects the runtime's log lines written inside the block into the yielded list.

    The executorch bindings write their log (XNNPACK's reasons included) to ``sys.stderr``;
    after a block that succeeded it is written on there unchanged.
    """
    lines: list[str] = []
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        try:
            yield lines
        finally:
            lines.extend(buffer.getvalue().splitlines())
    sys.stderr.write(buffer.getvalue())


def logged_failure(lines: list[str]) -> str:
    """The first failure the runtime logged, without its source location: "Failed to create
    squeeze node 6 with code: xnn_status_invalid_parameter" ("" if none)."""
    for line in lines:
        location, _, text = line.strip().partition("] ")
        if not location.startswith("[") or "cpuinfo" in location:  # cpuinfo: probing noise
            continue
        if "fail" in text.lower():
            return text
    return ""


class ExecuTorchConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        program, summary = lower(model, example)
        progress("lower")
        check_delegation(summary)
        load_forward(program.buffer, ExportError, LOAD_CHECK)
        (workdir / MODEL_FILE).write_bytes(program.buffer)
        return ExportResult(
            model_file=MODEL_FILE,
            input_name=INPUT_NAME,
            output_name=request.output_names[0],
            output_names=list(request.output_names),
            versions={"executorch": executorch_version()},
            info={"backend": BACKEND, "delegation": summary},
        )

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        device = self.check_device(device, manifest)
        path = folder / manifest.model_file
        if not path.is_file():
            raise ArtifactError(f"{folder}: missing {manifest.model_file}")
        return ExecuTorchRunner(path, manifest.batch_size, threads, device)

    def available_devices(self, manifest: Any = None) -> list[str]:
        """CPU, and the artifact's backend (the manifest's ``export.backend``) where this
        executorch build registers it: both name the same run, XNNPACK on the CPU."""
        from executorch.runtime import Runtime

        backend = (manifest.export.get("backend") if manifest is not None else None) or BACKEND
        registry = Runtime.get().backend_registry
        return ["CPU", *([backend] if registry.is_available(backend) else [])]


def lower(model: Any, example: Any) -> tuple[Any, dict[str, Any]]:
    """torch.export + XNNPACK lowering -> (ExecutorchProgramManager, delegation summary)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        with torch.no_grad():
            exported = torch.export.export(model, (example,), strict=False)
        exported = repeat_as_broadcast(exported)
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        summary = delegation_summary(edge.exported_program())
        program = edge.to_executorch()
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"executorch lowering failed: {first_line(exc)}") from exc
    return program, summary


def repeat_as_broadcast(program: Any) -> Any:
    """Rewrite every ``aten.repeat`` of ``program`` (in place) as a broadcast multiply.

    XNNPACK has no repeat, and its partitioner rejects ``cat([x, x])`` (one distinct input).
    Repeating dim d n times is ``(x.unsqueeze(d) * ones).flatten(d, d + 1)`` (views) with ``ones``
    of size n at d and 1 elsewhere, done in x's memory order (permutes around it when x is
    not contiguous): exact, and every op runs inside XNNPACK. The ones are added as lifted
    constants of the program (ExecuTorch's backend-transform helper).
    """
    import torch
    from executorch.backends.transforms.utils import create_constant_placeholder
    from torch.export.graph_signature import InputKind

    aten = torch.ops.aten
    graph = program.graph
    nodes = [n for n in graph.nodes if n.op == "call_function" and n.target is aten.repeat.default]
    if not nodes:
        return program
    first_user_input = next(
        node
        for node, spec in zip(
            graph.find_nodes(op="placeholder"), program.graph_signature.input_specs
        )
        if spec.kind == InputKind.USER_INPUT
    )
    for node in nodes:
        x, repeats = node.args[0], [int(r) for r in node.args[1]]
        value = x.meta["val"]
        if len(repeats) != value.dim():
            raise ExportError(
                f"executorch: unsupported repeat {repeats} of a {value.dim()}-D value"
            )
        # Work in x's memory order (a free permute), so the multiply's output is contiguous
        # and merging the broadcast dim into its neighbour stays a view.
        order = [int(d) for d in value.dim_order()]
        inverse = [order.index(d) for d in range(len(order))]
        with graph.inserting_before(node):
            result = x
            if order != sorted(order):
                result = _call(graph, aten.permute.default, result, order)
        for position, dim in enumerate(order):
            count = repeats[dim]
            if count == 1:
                continue
            shape = [1] * (value.dim() + 1)
            shape[position] = count
            name = f"repeat_ones_{str(value.dtype)[6:]}_" + "x".join(map(str, shape))
            with graph.inserting_before(first_user_input):
                ones = create_constant_placeholder(
                    program,
                    graph,
                    name,
                    InputKind.CONSTANT_TENSOR,
                    torch.ones(shape, dtype=value.dtype),
                )
            with graph.inserting_before(node):
                expanded = list(result.meta["val"].shape)
                expanded.insert(position, 1)
                result = _call(graph, aten.view.default, result, expanded)
                result = _call(graph, aten.mul.Tensor, result, ones)
                merged = list(result.meta["val"].shape)
                merged[position : position + 2] = [merged[position] * merged[position + 1]]
                result = _call(graph, aten.view.default, result, merged)
        if order != sorted(order):
            with graph.inserting_before(node):
                result = _call(graph, aten.permute.default, result, inverse)
        node.replace_all_uses_with(result)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program


def _call(graph: Any, op: Any, *args: Any) -> Any:
    """A new graph node with its fake-tensor metadata."""
    import torch

    node = graph.call_function(op, args)
    values = [a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args]
    node.meta["val"] = op(*values)
    return node


def _op_name(node: Any) -> str:
    target = node.target
    name = getattr(target, "__name__", None) or str(target)
    if hasattr(target, "_op"):  # EdgeOpOverload -> "aten.bmm.default"
        name = str(target._op)
    return name


def _base_name(op: str) -> str:
    """aten.bmm.default -> aten.bmm"""
    parts = op.split(".")
    return ".".join(parts[:2]) if len(parts) >= 3 else op


def delegation_summary(program: Any) -> dict[str, Any]:
    """How much of the lowered graph runs inside XNNPACK delegates."""
    graph_module = program.graph_module
    delegated = 0
    segments = 0
    outside: Counter[str] = Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name == "executorch_call_delegate":
            segments += 1
            lowered = getattr(graph_module, node.args[0].target)
            inner = lowered.original_module.graph_module.graph
            delegated += sum(
                1
                for n in inner.nodes
                if n.op == "call_function" and _op_name(n) not in _BOOKKEEPING
            )
        elif name not in _BOOKKEEPING:
            outside[name] += 1
    total = delegated + sum(outside.values())
    return {
        "delegate_segments": segments,
        "delegated_ops": delegated,
        "total_ops": total,
        "delegated_share": round(delegated / total, 6) if total else 0.0,
        "not_delegated": dict(sorted(outside.items())),
    }


def check_delegation(summary: dict[str, Any]) -> None:
    """Raise if a compute-heavy op would run outside the XNNPACK delegate."""
    heavy = sorted(op for op in summary["not_delegated"] if _base_name(op) in HEAVY_OPS)
    if heavy:
        raise ExportError(
            "executorch: compute-heavy ops left outside the XNNPACK delegate: " + ", ".join(heavy)
        )
    if summary["delegate_segments"] == 0:
        raise ExportError("executorch: nothing was delegated to XNNPACK")


def executorch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "unknown"


# -- profile -----------------------------------------------------------------------------------


def etdump_events(path: Path, x: np.ndarray, runs: int) -> list[Any]:
    """The Inspector's events of ``runs + 1`` forward calls of the program at ``path``, loaded
    again with ETDump on (ProfileError, one line, where this build records none)."""
    import torch
    from executorch.devtools import Inspector
    from executorch.runtime import Runtime

    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    try:
        program = Runtime.get().load_program(path, enable_etdump=True)
        method = program.load_method("forward")
        for _ in range(runs + 1):
            method.execute([tensor])
        with tempfile.TemporaryDirectory(prefix="restv2-edge-etdump-") as folder:
            etdump = Path(folder) / "run.etdp"
            program.write_etdump_result_to_file(str(etdump), str(Path(folder) / "debug.bin"))
            with warnings.catch_warnings():  # "Output Buffer not found": no tensor data asked
                warnings.simplefilter("ignore")
                inspector = Inspector(etdump_path=str(etdump))
    except Exception as exc:
        raise ProfileError(f"ExecuTorch ETDump profiling failed: {first_line(exc)}") from exc
    blocks = [block for block in inspector.event_blocks if block.name == "Execute"]
    events = [event for block in blocks for event in block.events]
    if not any(e.perf_data for e in events):
        raise ProfileError(
            "this executorch build records no ETDump execute events "
            "(it needs EXECUTORCH_ENABLE_EVENT_TRACER)"
        )
    return events


def etdump_profile(events: list[Any], runs: int) -> OpProfile:
    """Per-node mean times from ETDump events.

    Delegated nodes: the XNNPACK operators the delegate times (``is_delegated_op``). Fallback
    nodes: each ``OPERATOR_CALL`` (a portable kernel call outside the delegate, named by the
    ``native_call_<kernel>`` event of the same instruction). ``DELEGATE_CALL`` and
    ``Method::execute`` span those nodes and are read only for the notes.
    """
    kernels = {
        _instruction(e): e.name.removeprefix("native_call_")
        for e in events
        if e.name.startswith("native_call_")
    }
    ops: list[OpTime] = []
    spans: Counter[str] = Counter()
    for event in events:
        if not event.perf_data:
            continue
        ms = _mean_ms(event, runs)
        where = _instruction(event)
        if event.is_delegated_op:
            kind = re.sub(r" #\d+$", "", event.name)
            ops.append(OpTime(f"{where}:{event.name}", kind, ms, delegated=True))
        elif event.name == "OPERATOR_CALL":
            kernel = kernels.get(where, "operator")
            ops.append(OpTime(f"{where}:{kernel}", kernel, ms, delegated=False))
        elif event.name in ("DELEGATE_CALL", "Method::execute"):
            spans[event.name] += ms
    inside = sum(op.ms for op in ops if op.delegated)
    notes = (
        f"one settling run before the {runs} profiled ones is left out",
        f"Method::execute {spans['Method::execute']:.3f} ms per inference; XNNPACK delegate "
        f"calls {spans['DELEGATE_CALL']:.3f} ms, their operators {inside:.3f} ms: the rest "
        "(delegate entry, input/output copies, what whole-microsecond operator times leave "
        "out) is in no node",
        "XNNPACK times its operators in whole microseconds: sub-microsecond ones read 0",
        "recording costs a little per node: a program of many microsecond nodes runs slower "
        "under ETDump than in a normal call",
        "names are the runtime's (XNNPACK operators, portable kernels) prefixed with the "
        "instruction index: the artifact carries no ETRecord to map them to source ops",
    )
    return OpProfile(profiler=PROFILER, runs=runs, ops=tuple(ops), notes=notes)


def _instruction(event: Any) -> int | None:
    """The event's instruction index (the Inspector keeps it only as ``_instruction_id``)."""
    return getattr(event, "_instruction_id", None)


def _mean_ms(event: Any, runs: int) -> float:
    """Mean of the event's per-run times (ms) without the settling run."""
    raw = list(event.perf_data.raw)
    timed = raw[1:] if len(raw) > runs else raw
    return float(np.mean(timed)) if timed else 0.0


# -- peers -------------------------------------------------------------------------------------

PeerRun = Callable[[np.ndarray], np.ndarray]
#: the program file each peer writes into its work folder, per precision
PEER_FILES = {"fp32": "peer-fp32.pte", "int8": "peer-int8.pte"}


def build_peer_fp32(model: Any, example: Any, calibration: Any, workdir: Path) -> PeerRun:
    """The official-structure graph: plain torch.export + XNNPACK lowering, fp32."""
    import torch

    where = "executorch peer fp32"
    try:
        with torch.no_grad():
            exported = torch.export.export(model, (torch.from_numpy(example),))
    except Exception as exc:
        raise ExportError(f"{where}: torch.export failed: {first_line(exc)}") from exc
    return _peer_run(exported, where, workdir / PEER_FILES["fp32"])


def build_peer_int8(model: Any, example: Any, calibration: Any, workdir: Path) -> PeerRun:
    """PT2E with XNNPACKQuantizer at ``get_symmetric_quantization_config()``, calibrated on
    ``calibration`` in batches of the example's size, then the same lowering."""
    import torch

    where = "executorch peer int8"
    batch = example.shape[0]
    if calibration is None or len(calibration) < batch:
        raise ExportError(f"{where}: needs at least {batch} calibration image(s)")
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
        with torch.no_grad():
            graph = torch.export.export(model, (torch.from_numpy(example),)).module()
            prepared = prepare_pt2e(graph, quantizer)
            for start in range(0, len(calibration) - batch + 1, batch):
                prepared(torch.from_numpy(np.ascontiguousarray(calibration[start : start + batch])))
            converted = convert_pt2e(prepared)
            exported = torch.export.export(converted, (torch.from_numpy(example),))
    except Exception as exc:
        raise ExportError(f"{where}: PT2E quantization failed: {first_line(exc)}") from exc
    return _peer_run(exported, where, workdir / PEER_FILES["int8"])


def _peer_run(exported: Any, where: str, path: Path) -> PeerRun:
    """``exported`` lowered to XNNPACK as the toolchain does by default, written to ``path``
    (for a look or a profile) and loaded by executorch.runtime (ExportError, one line, if the
    lowered program does not load, with XNNPACK's logged reason: the plain int8 graph can
    hold requantizing shape ops)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        program = edge.to_executorch()
    except Exception as exc:
        raise ExportError(f"{where}: XNNPACK lowering failed: {first_line(exc)}") from exc
    path.write_bytes(program.buffer)
    loaded, method = load_forward(program.buffer, ExportError, f"{where}: the lowered program")
    return PeerProgram(loaded, method)


class PeerProgram:
    """A peer's loaded program: x -> its first output as float32 (what ``bench peers`` times)."""

    def __init__(self, program: Any, method: Any) -> None:
        self.program = program  # owns the buffer the method runs from
        self.method = method

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return self.method.execute([tensor])[0].numpy()


PEERS = (
    PeerPipeline(
        label="ExecuTorch fp32: torch.export + to_edge_transform_and_lower(XnnpackPartitioner)",
        precision="fp32",
        build=build_peer_fp32,
    ),
    PeerPipeline(
        label="ExecuTorch int8: PT2E XNNPACKQuantizer(get_symmetric_quantization_config()) "
        "+ XNNPACK lowering",
        precision="int8",
        build=build_peer_int8,
    ),
)


CONVERTER = ExecuTorchConverter()
DESCRIPTOR = TargetDescriptor(
    name="executorch",
    extra="executorch",
    packages=("executorch",),
    precisions=("fp32",),
    default_precision="fp32",
    # Measured (docs/graph-forms.md): one XNNPACK delegate, faster than the native form.
    graph_form="decomposed",
    suffix=".pte",
    converter=CONVERTER,
    manifest_fields=("backend", "delegation"),
    order=30,
    peers=PEERS,
)
