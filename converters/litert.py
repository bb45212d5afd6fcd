"""LiteRT (TFLite): litert-torch -> model.tflite, run by ai-edge-litert's Interpreter (XNNPACK).

Static input shape, one signature (``serving_default``) whose input and output are named
``input`` and ``logits``, float32 input and output at every precision, builtin ops only (no
custom or Flex ops a phone's stock runtime would lack). fp16 stores the weights of every
linear and convolution as float16 with a DEQUANTIZE op in front (ai-edge-quantizer's float
casting, LiteRT's fp16 weight scheme): half the file; on a CPU the runtime dequantizes once at
load and computes in float32, GPU delegates can run it in fp16.

The batch is static (``--batch N``). Devices: the CPU (the XNNPACK delegate) only; GPU and NPU
delegates are not offered.

The native graph form measured faster in LiteRT than the decomposed one (docs/graph-forms.md).
The export records how the XNNPACK delegate takes the graph (``export.delegation``).

Profile: ai-edge-litert's Python Interpreter exposes no per-op timings (its
``experimental_force_delegate_node_profiling`` switch has no reader in the bindings), so
``LiteRTRunner.profile`` samples the kernels the calls run with Linux perf
(``restv2_edge.kernel_samples``: XNNPACK microkernel families, TFLite's own kernels for what
the delegate left out). Without perf it raises ProfileError naming perf and TFLite's
``benchmark_model`` binary (``--enable_op_profiling=true``), which has per-node times.

Peer (``PEERS``): the official-structure graph through ``litert_torch.convert(model,
(example,))`` (its defaults, no signature names), run by the Interpreter with its defaults but
the thread count, which is set to the usable cores as this module's runner does (the
Interpreter's own default is one thread).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
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
    PeerPipeline,
    Progress,
    Runner,
    TargetDescriptor,
)

from restv2_edge.errors import (
    ArtifactError,
    BackendMissingError,
    ExportError,
    ProfileError,
    first_line,
)

MODEL_FILE = "model.tflite"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
SIGNATURE = "serving_default"
#: the .tflite the peer writes into its work folder
PEER_FILE = "peer-fp32.tflite"
#: where per-node times come from when ``LiteRTRunner.profile`` cannot sample kernels
NO_PROFILER = (
    "ai-edge-litert's Python Interpreter exposes no per-op profiler; per-node times come from "
    "TFLite's benchmark_model binary (--graph=model.tflite --enable_op_profiling=true)"
)
#: ``export.weights`` per precision (int8: the int8 recipe, calibration/litert.py)
WEIGHT_TYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8"}
#: ai-edge-quantizer recipe: float16 weights for the ops that have weights, float32 compute
FP16_WEIGHTS_RECIPE = [
    {
        "regex": ".*",
        "operation": "*",
        "algorithm_key": "float_casting",
        "op_config": {
            "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
            "compute_precision": "FLOAT",
            "explicit_dequantize": True,
        },
    }
]


class LiteRTRunner(Runner):
    """The .tflite in ai-edge-litert's Interpreter; its default XNNPACK delegate runs it."""

    def __init__(
        self,
        path: Path,
        batch_size: int,
        threads: int | None = None,
        output_names: tuple[str, ...] | list[str] = (OUTPUT_NAME,),
    ) -> None:
        from ai_edge_litert import __version__ as version
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(batch_size)
        # The Interpreter's default is one thread (num_threads=None -> 1), unlike the other
        # runtimes' "all cores": use the cores this process may run on.
        self.threads = threads or _usable_cores()
        self.interpreter = Interpreter(model_path=str(path), num_threads=self.threads)
        self.interpreter.allocate_tensors()
        signature = self.interpreter.get_signature_runner(SIGNATURE)
        inputs, outputs = signature.get_input_details(), signature.get_output_details()
        names = list(output_names)
        if INPUT_NAME not in inputs or not set(names) <= set(outputs):
            raise ArtifactError(
                f"{path.name}: signature {SIGNATURE} has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}, expected {INPUT_NAME!r} and {', '.join(map(repr, names))}"
            )
        self.input_index = inputs[INPUT_NAME]["index"]
        self.output_indices = [outputs[name]["index"] for name in names]
        self.description = (
            f"ai-edge-litert {version} Interpreter (XNNPACK delegate on the CPU, "
            f"{self.threads} threads)"
        )

    def run_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The logits; a features artifact: every output, in the manifest's order."""
        self.interpreter.set_tensor(self.input_index, x)
        self.interpreter.invoke()
        arrays = [self.interpreter.get_tensor(index).copy() for index in self.output_indices]
        return arrays[0] if len(arrays) == 1 else arrays

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        """The kernels ``runs`` calls run, sampled by Linux perf after one warm-up call
        (these bindings have no per-op timings); ProfileError without perf."""
        from restv2_edge.kernel_samples import sample_calls

        self.run_batch(x)
        try:
            return sample_calls(lambda: self.run_batch(x), runs, self.threads, "LiteRT")
        except ProfileError as exc:
            raise ProfileError(f"{exc}; {NO_PROFILER}") from None


class LiteRTConverter(Converter):
    def export(
        self, model: Any, example: Any, workdir: Path, request: ExportRequest, progress: Progress
    ) -> ExportResult:
        names = request.output_names
        data = convert_float(model, example, names)
        if request.precision == "fp16":
            progress("fp16 weights")
            data = fp16_weights(data)
        progress("check")
        return write_model(data, workdir, list(example.shape), request.precision, names)

    def load(
        self, folder: Path, manifest: Any, threads: int | None = None, device: str | None = None
    ) -> Runner:
        self.check_installed()
        self.check_device(device, manifest)  # the CPU only (Converter.available_devices)
        return LiteRTRunner(
            folder / manifest.model_file, manifest.batch_size, threads, manifest.output_names
        )


def convert_float(
    model: Any, example: Any, output_names: tuple[str, ...] = (OUTPUT_NAME,)
) -> bytes:
    """The float32 .tflite of ``model`` at the static shape of ``example`` (litert-torch), the
    step every precision starts from (fp16 and the int8 recipe rewrite its bytes); its
    signature outputs are ``output_names``."""
    # litert-torch is needed only here (the descriptor checks the runtime, which is all
    # that running an artifact needs: importing litert-torch takes seconds).
    if importlib.util.find_spec("litert_torch") is None:
        raise BackendMissingError("litert_torch", DESCRIPTOR.extra)
    import litert_torch

    with _quiet_progress():
        try:
            edge = litert_torch.convert(
                with_signature_names(model, output_names), sample_kwargs={INPUT_NAME: example}
            )
            return bytes(edge.model_content())
        except Exception as exc:
            raise ExportError(f"litert-torch conversion failed: {first_line(exc)}") from exc


def write_model(
    data: bytes,
    workdir: Path,
    input_shape: list[int],
    precision: str,
    output_names: tuple[str, ...] = (OUTPUT_NAME,),
) -> ExportResult:
    """Check the final .tflite bytes (``check_model``), write them as ``MODEL_FILE`` and
    describe them for the manifest (op census, weight type, XNNPACK delegation)."""
    census = inspect_model(data)
    check_model(census, input_shape, precision, len(output_names))
    path = workdir / MODEL_FILE
    path.write_bytes(data)
    info = {
        "signature": SIGNATURE,
        "ops": sum(census["op_types"].values()),
        "op_types": census["op_types"],
        "weights": WEIGHT_TYPES.get(precision, "float32"),
        "float16_tensors": census["tensor_types"].get("FLOAT16", 0),
        "delegation": delegation(path),
    }
    return ExportResult(
        model_file=MODEL_FILE,
        input_name=INPUT_NAME,
        output_name=output_names[0],
        output_names=list(output_names),
        versions=_versions(precision),
        info=info,
    )


def with_signature_names(model: Any, output_names: tuple[str, ...] = (OUTPUT_NAME,)) -> Any:
    """``model`` wrapped so the .tflite signature reads ``input`` -> ``logits`` (a features
    model: ``stage1``..``stage4``): litert-torch names signature inputs after keyword
    arguments and outputs after dict keys."""
    import torch

    class SignatureNames(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
            result = self.inner(input)
            parts = result if isinstance(result, (tuple, list)) else (result,)
            return dict(zip(output_names, parts, strict=True))

    return SignatureNames(model).eval()


def fp16_weights(data: bytes) -> bytes:
    """The float .tflite with linear/conv weights stored as float16 (float32 I/O, compute)."""
    from ai_edge_quantizer import quantizer

    try:
        edit = quantizer.Quantizer(bytearray(data))
        edit.load_quantization_recipe(FP16_WEIGHTS_RECIPE)
        # its model rewrite draws a progress bar on stderr whatever the flag says
        with contextlib.redirect_stderr(io.StringIO()):
            result = edit.quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as exc:
        raise ExportError(f"ai-edge-quantizer fp16 weights failed: {first_line(exc)}") from exc
    return bytes(result.quantized_model)


def inspect_model(data: bytes) -> dict[str, Any]:
    """Op and tensor-type counts, I/O shapes and types of the flatbuffer's one subgraph."""
    from ai_edge_litert import schema_py_generated as schema

    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ExportError(f"LiteRT model has {model.SubgraphsLength()} subgraphs, expected 1")
    graph = model.Subgraphs(0)
    codes = []
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        # builtin codes past 127 live in BuiltinCode; older ones in the deprecated byte
        codes.append(op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    ops = Counter(codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength()))
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]

    def describe(index: int) -> dict[str, Any]:
        tensor = tensors[index]
        signature = tensor.ShapeSignatureAsNumpy() if tensor.ShapeSignatureLength() else None
        return {
            "shape": tensor.ShapeAsNumpy().tolist(),
            "signature": None if signature is None else signature.tolist(),
            "type": type_names[tensor.Type()],
        }

    return {
        "op_types": dict(sorted(ops.items())),
        "tensor_types": dict(sorted(Counter(type_names[t.Type()] for t in tensors).items())),
        "inputs": [describe(int(i)) for i in graph.InputsAsNumpy()],
        "outputs": [describe(int(i)) for i in graph.OutputsAsNumpy()],
    }


def check_model(
    census: dict[str, Any], input_shape: list[int], precision: str, output_count: int = 1
) -> None:
    """One static float32 input of ``input_shape``, ``output_count`` float32 outputs, builtin
    ops only, and float16 weights exactly when fp16 was asked for."""
    inputs, outputs = census["inputs"], census["outputs"]
    if len(inputs) != 1 or len(outputs) != output_count:
        raise ExportError(f"LiteRT model has {len(inputs)} inputs and {len(outputs)} outputs")
    for kind, value in [("input", inputs[0])] + [("output", value) for value in outputs]:
        if value["type"] != "FLOAT32":
            raise ExportError(f"LiteRT {kind} is {value['type']}, expected FLOAT32")
        if value["signature"] is not None and any(d < 0 for d in value["signature"]):
            raise ExportError(f"LiteRT {kind} has a dynamic shape {value['signature']}")
    if inputs[0]["shape"] != input_shape:
        raise ExportError(f"LiteRT input shape {inputs[0]['shape']}, expected {input_shape}")
    custom = sorted(op for op in census["op_types"] if op in {"CUSTOM", "DELEGATE"})
    if custom:
        raise ExportError(f"LiteRT model needs non-builtin ops: {', '.join(custom)}")
    halves = census["tensor_types"].get("FLOAT16", 0)
    if (precision == "fp16") != (halves > 0):
        raise ExportError(f"LiteRT {precision} model has {halves} float16 tensors")


def delegation(path: Path) -> dict[str, Any]:
    """How the default XNNPACK delegate partitions the model, from the interpreter's nodes.

    After delegation the node list holds the original ops and one DELEGATE node per
    partition. An op ran outside every partition when none of its outputs is a partition's
    output and each of them feeds a partition, the graph's output or another such op.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # the only view of delegation the bindings give
    partitions = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    partition_outputs = {int(t) for n in partitions for t in n["outputs"]}
    visible = {int(t) for n in partitions for t in n["inputs"]}
    visible |= {d["index"] for d in interpreter.get_output_details()}
    candidates = [n for n in ops if not partition_outputs & {int(t) for t in n["outputs"]}]
    outside: dict[int, str] = {}
    changed = True
    while changed:
        changed = False
        for node in candidates:
            if node["index"] in outside or not {int(t) for t in node["outputs"]} <= visible:
                continue
            outside[node["index"]] = node["op_name"]
            visible |= {int(t) for t in node["inputs"]}
            changed = True
    outside_ops = Counter(outside.values())
    return {
        "delegate": "XNNPACK (default)",
        "partitions": len(partitions),
        "total_ops": len(ops),
        "delegated_ops": len(ops) - len(outside),
        "not_delegated": dict(sorted(outside_ops.items())),
    }


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """litert-torch draws its own progress display; the CLI owns the terminal."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _versions(precision: str) -> dict[str, str]:
    from importlib.metadata import version

    names = ["litert-torch", "ai-edge-litert"] + (
        ["ai-edge-quantizer"] if precision != "fp32" else []
    )
    return {name.replace("-", "_"): version(name) for name in names}


# -- peer --------------------------------------------------------------------------------------


def build_peer_fp32(
    model: Any, example: Any, calibration: Any, workdir: Path
) -> Callable[[np.ndarray], np.ndarray]:
    """``litert_torch.convert(model, (example,))`` (written to ``workdir``/``PEER_FILE``) run
    by the Interpreter on the usable cores."""
    if importlib.util.find_spec("litert_torch") is None:
        raise BackendMissingError("litert_torch", DESCRIPTOR.extra)
    import litert_torch
    import torch
    from ai_edge_litert.interpreter import Interpreter

    where = "litert peer fp32"
    with _quiet_progress():
        try:
            data = bytes(litert_torch.convert(model, (torch.from_numpy(example),)).model_content())
        except Exception as exc:
            raise ExportError(
                f"{where}: litert-torch conversion failed: {first_line(exc)}"
            ) from exc
    (workdir / PEER_FILE).write_bytes(data)
    try:
        interpreter = Interpreter(model_content=data, num_threads=_usable_cores())
        interpreter.allocate_tensors()
    except Exception as exc:
        raise ExportError(f"{where}: the Interpreter cannot load it: {first_line(exc)}") from exc
    return PeerInterpreter(interpreter)


class PeerInterpreter:
    """The peer's Interpreter: x -> its first output (what ``bench peers`` times)."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.input_index = interpreter.get_input_details()[0]["index"]
        self.output_index = interpreter.get_output_details()[0]["index"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input_index, np.ascontiguousarray(x, dtype=np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()


PEERS = (
    PeerPipeline(
        label="LiteRT fp32: litert_torch.convert + Interpreter defaults (XNNPACK), "
        "threads = usable cores",
        precision="fp32",
        build=build_peer_fp32,
    ),
)


CONVERTER = LiteRTConverter()
DESCRIPTOR = TargetDescriptor(
    name="litert",
    extra="litert",
    # the runtime only: running an artifact needs no converter (export checks litert_torch)
    packages=("ai_edge_litert",),
    precisions=("fp32", "fp16"),
    default_precision="fp32",
    # Measured (docs/graph-forms.md): native 0.94-0.96 of decomposed's latency in LiteRT;
    # the one-head attention batched leaves no op outside XNNPACK.
    graph_form="native-onehead-batched",
    suffix=".tflite",
    converter=CONVERTER,
    manifest_fields=("signature", "ops", "op_types", "weights", "float16_tensors", "delegation"),
    order=50,
    peers=PEERS,
)
