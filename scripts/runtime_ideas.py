"""Runtime options and graph ideas tried against the T@224 artifacts, each a subcommand.

Every number under "Tried and dropped" in docs/graph-forms.md comes from one of these. They
take the artifacts of a peers work folder (``scripts/bench_peers.py --work W --phase build``)
and time through onnxruntime / OpenVINO directly, round-robin in one process
(``restv2_edge.bench.timing``; blocks of 5 after a settling call), except where a setting
only exists per process (``hugepages``), which alternates fresh processes.

    A=W/artifacts
    python scripts/runtime_ideas.py drift $A/onnx-fp32/model.onnx
    python scripts/runtime_ideas.py ort-options $A/onnx-fp32/model.onnx $A/onnx-int8/model.onnx
    python scripts/runtime_ideas.py ov-options $A/openvino-fp32/model.xml $A/openvino-fp16/model.xml
    python scripts/runtime_ideas.py ov-precision-marks $A/openvino-fp16/model.xml
    python scripts/runtime_ideas.py ov-int8-hint $A/openvino-int8/model.xml
    python scripts/runtime_ideas.py ov-kernels $A/openvino-int8/model.xml --runs 20
    python scripts/runtime_ideas.py ov-int8-scheme $A/openvino-fp32/model.xml \\
        --calibration W/calibration/inputs.npy
    python scripts/runtime_ideas.py ov-weight-int8 $A/openvino-fp32/model.xml \\
        $A/openvino-int8/model.xml --calibration W/calibration/inputs.npy
    python scripts/runtime_ideas.py hugepages $A/onnx-fp32/model.onnx
    python scripts/runtime_ideas.py onnx-int8 --weights W/weights-seed1.pth \\
        --calibration W/calibration/inputs.npy [--variant "Transpose QDQ, forced" ...]
    python scripts/runtime_ideas.py onnx-shuffle $A/onnx-fp32/model.onnx $A/onnx-int8/model.onnx
    python scripts/runtime_ideas.py ort-fusions $A/onnx-fp32/model.onnx \\
        --calibration W/calibration/inputs.npy
    python scripts/runtime_ideas.py upsample
    python scripts/runtime_ideas.py litert-runtime $A/litert-fp32/model.tflite
    python scripts/runtime_ideas.py litert-kernels $A/litert-fp32/model.tflite \\
        W/peers/litert-7/peer-fp32.tflite --runs 20
    python scripts/runtime_ideas.py litert-int8-float $A/litert-fp32/model.tflite \\
        --calibration W/calibration/inputs.npy [--out DIR]
    python scripts/runtime_ideas.py gemm
    python scripts/runtime_ideas.py conv
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from restv2_edge.calibration.sensitivity import cosine

from restv2_edge.bench.machine import describe_machine, machine_info
from restv2_edge.bench.timing import BLOCK, per_round_ratio, summarize, time_round_robin
from restv2_edge.script_args import OneLineParser, existing_file_arg, timed_runs_arg

THREADS = 2
SIZE = 224
#: node kinds ``onnx-int8`` counts in each variant's optimized graph
INT8_OPS_SHOWN = ("QuantizeLinear", "DequantizeLinear", "Transpose", "QGemm", "Gemm")
#: the recipe variants ``onnx-int8`` can time (``--variant``)
ONNX_INT8_VARIANTS = (
    "recipe",
    "attention matmuls float",
    "depthwise convs int8 out",
    "+ DepthToSpace/Transpose QDQ",
    "int8 symmetric activations (S8S8)",
    "Transpose QDQ, forced",
    "DepthToSpace/Transpose QDQ, forced",
    "QOperator format",
    "+ Add QDQ",
)


def linear_macs(variant: str = "T", size: int = SIZE) -> int:
    """The MACs of the model's linear layers (restv2_edge.complexity)."""
    from restv2_edge.complexity import count_macs_by_op
    from restv2_edge.factory import create_model

    return count_macs_by_op(create_model(variant=variant, image_size=size))["linear"]


def machine_line() -> str:
    """The first line of every report: the CPU and its load average."""
    machine = machine_info()
    load = ", ".join(f"{value:.2f}" for value in machine["load_avg"] or [])
    return f"Machine: {describe_machine(machine)}; load average {load}"


def runner_hint(path: str) -> dict[str, str]:
    """The precision hint the project's runner compiles an IR with: fp32 and int8 IRs pinned
    to f32, the half-precision ones at the CPU default."""
    pinned = "fp32" in path or "int8" in path
    return {"INFERENCE_PRECISION_HINT": "f32"} if pinned else {}


def worst_cosine(expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    """The lowest per-image logits cosine of two runs over the same images."""
    pairs = zip(expected, got, strict=True)
    return min(cosine(a.reshape(1, -1), b.reshape(1, -1)) for a, b in pairs)


def example(channels: int = 3, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, channels, size, size)).astype(np.float32)


def report(calls: dict[str, Callable[[], Any]], runs: int, baseline: str | None = None) -> None:
    """Time ``calls`` interleaved; medians, and each one's per-round ratio to ``baseline``."""
    times = time_round_robin(calls, warmup=3, runs=runs, progress=lambda s: None, block=BLOCK)
    base = baseline or next(iter(calls))
    for name, seconds in times.items():
        stats = summarize(seconds, 1)
        print(
            f"{name:34s} median {stats['median_ms']:7.2f} ms  min {stats['min_ms']:7.2f} ms  "
            f"/ {base}: {per_round_ratio(times, base, name):.3f} (per-round median)"
        )


def ort_session(path: str, entries: dict[str, str] | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    for key, value in (entries or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def optimized_op_counts(path: Path) -> dict[str, int]:
    """Op types of onnxruntime's optimized graph of ``path`` (CPU provider, all levels)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    optimized = path.with_suffix(".optimized.onnx")
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return dict(Counter(node.op_type for node in onnx.load(str(optimized)).graph.node))


def ort_call(session: Any, x: np.ndarray) -> Callable[[], Any]:
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: x})


def ov_call(model: Any, config: dict[str, Any], x: np.ndarray) -> Callable[[], Any]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS, **config})
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


def both_runtimes(module: Any, x: Any, path: Path, label: str) -> dict[str, Callable[[], Any]]:
    """A small torch module exported to ONNX (run by onnxruntime) and converted by OpenVINO
    (run at f32), as two timing calls on ``x``."""
    import openvino as ov
    import torch

    torch.onnx.export(module.eval(), (x,), str(path), dynamo=True, external_data=False)
    converted = ov.convert_model(module.eval(), example_input=x, input=[list(x.shape)])
    return {
        f"onnxruntime {label}": ort_call(ort_session(str(path)), x.numpy()),
        f"openvino {label}": ov_call(converted, {"INFERENCE_PRECISION_HINT": "f32"}, x.numpy()),
    }


# -- subcommands -----------------------------------------------------------------------------


def drift(args: argparse.Namespace) -> None:
    """Two sessions of one model, alternating blocks of 10 calls: if they move together the
    machine's speed is what changes, not a session's state."""
    x = example()
    sessions = [ort_session(args.model), ort_session(args.model)]
    for session in sessions:
        for _ in range(3):
            session.run(None, {"input": x})
    for block in range(args.blocks):
        row = []
        for session in sessions:
            seconds = []
            for _ in range(10):
                start = time.perf_counter()
                session.run(None, {"input": x})
                seconds.append(time.perf_counter() - start)
            row.append(round(statistics.median(seconds) * 1e3, 1))
        print(f"block {block}: session A {row[0]} ms, session B {row[1]} ms")


def ort_options(args: argparse.Namespace) -> None:
    """onnxruntime session options, each on the fp32 and the int8 graph."""
    x = example()
    options = {
        "default": {},
        "allow_spinning=0": {"session.intra_op.allow_spinning": "0"},
        "dynamic_block_base=4": {"session.dynamic_block_base": "4"},
        "set_denormal_as_zero=1": {"session.set_denormal_as_zero": "1"},
        # the worker thread pinned to the second CPU (1-based ids; the caller's thread is
        # never pinned by onnxruntime)
        "intra_op_thread_affinities=2": {"session.intra_op_thread_affinities": "2"},
    }
    for path in args.models:
        print(Path(path).parent.name)
        report({k: ort_call(ort_session(path, v), x) for k, v in options.items()}, args.runs)


def ov_options(args: argparse.Namespace) -> None:
    """OpenVINO CPU properties on each IR (fp32 and int8 IRs pinned to f32 as their runner
    does, the others at the CPU default)."""
    import openvino as ov

    x = example()
    for path in args.models:
        hint = runner_hint(path)
        variants = {
            "default": hint,
            "PERFORMANCE_HINT=LATENCY": {**hint, "PERFORMANCE_HINT": "LATENCY"},
            "ENABLE_CPU_PINNING=True": {**hint, "ENABLE_CPU_PINNING": True},
            "ENABLE_CPU_PINNING=False": {**hint, "ENABLE_CPU_PINNING": False},
            "SNIPPETS_MODE=DISABLE": {**hint, "SNIPPETS_MODE": "DISABLE"},
        }
        print(Path(path).parent.name)
        model = ov.Core().read_model(path)
        report({k: ov_call(model, v, x) for k, v in variants.items()}, args.runs)


def ov_int8_hint(args: argparse.Namespace) -> None:
    """OpenVINO int8 IRs with their float ops (LayerNorm, GELU, softmax, the depthwise and
    transposed convs) at f32, bf16 or the CPU default, and how far bf16 moves the logits."""
    import openvino as ov

    x = example()
    for path in args.models:
        model = ov.Core().read_model(path)
        calls = {
            f"{Path(path).parent.name} {name}": ov_call(model, config, x)
            for name, config in (
                ("f32", {"INFERENCE_PRECISION_HINT": "f32"}),
                ("bf16", {"INFERENCE_PRECISION_HINT": "bf16"}),
                ("default", {}),
            )
        }
        f32, bf16 = ([np.asarray(next(iter(c().values())))] for c in list(calls.values())[:2])
        cos = worst_cosine(f32, bf16)
        print(f"{Path(path).parent.name}: logits cosine bf16 vs f32 {cos:.6f}")
        report(calls, args.runs)


def ov_weight_int8(args: argparse.Namespace) -> None:
    """The fp32 IR with int8 weights only (``nncf.compress_weights``, INT8_ASYM per channel) and
    the CPU plugin's dynamic activation quantization of its FullyConnected inputs at several
    group sizes (0 = off), against the static int8 IR the recipe builds; f32 float ops."""
    import nncf
    import openvino as ov

    core = ov.Core()
    images = np.load(args.calibration)[:8]
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    fp32 = core.read_model(args.fp32)
    reference = core.compile_model(fp32, "CPU", f32)
    expected = [reference(images[i : i + 1])[0] for i in range(len(images))]
    # compress_weights rewrites the model it is given: a second read keeps fp32 intact
    compressed = nncf.compress_weights(
        core.read_model(args.fp32), mode=nncf.CompressWeightsMode.INT8_ASYM
    )
    calls = {"fp32": ov_call(fp32, f32, images[:1])}
    calls["int8 (recipe, static)"] = ov_call(core.read_model(args.int8), f32, images[:1])
    for group in (0, 32, 128):
        config = {**f32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": group}
        compiled = core.compile_model(compressed, "CPU", config)
        got = [compiled(images[i : i + 1])[0] for i in range(len(images))]
        worst = worst_cosine(expected, got)
        print(f"weights int8, dynamic group {group}: worst cosine to fp32 {worst:.6f}")
        calls[f"weights int8, dynamic group {group}"] = ov_call(compressed, config, images[:1])
    report(calls, args.runs, baseline="int8 (recipe, static)")


def ov_int8_scheme(args: argparse.Namespace) -> None:
    """NNCF settings against the mixed preset (model_type TRANSFORMER, SmoothQuant off as in
    calibration/openvino.py, which takes the performance preset) on the same fp32 IR and
    calibration images; latency and the worst logits cosine to the fp32 IR on 8 images."""
    import nncf
    import openvino as ov
    from restv2_edge.calibration.openvino import nncf_settings, snippets_disabled

    inputs = np.load(args.calibration)
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    core = ov.Core()
    fp32 = core.read_model(args.model)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    _, advanced = nncf_settings(len(batches))  # SmoothQuant off, as in the recipe
    variants = {
        "TRANSFORMER, mixed preset": {"model_type": nncf.ModelType.TRANSFORMER},
        "TRANSFORMER, performance (recipe)": {
            "model_type": nncf.ModelType.TRANSFORMER,
            "preset": nncf.QuantizationPreset.PERFORMANCE,
        },
        "no model_type (CNN defaults)": {},
        "performance, target_device CPU_SPR": {
            "model_type": nncf.ModelType.TRANSFORMER,
            "preset": nncf.QuantizationPreset.PERFORMANCE,
            "target_device": nncf.TargetDevice.CPU_SPR,
        },
    }
    reference = core.compile_model(fp32, "CPU", {"INFERENCE_NUM_THREADS": THREADS, **f32})
    expected = [np.asarray(reference(batch)[0]) for batch in batches[:8]]
    calls = {"fp32": ov_call(fp32, f32, example())}
    for name, settings in variants.items():
        with snippets_disabled():
            quantized = nncf.quantize(
                fp32, nncf.Dataset(batches), subset_size=len(batches),
                advanced_parameters=advanced, **settings,
            )  # fmt: skip
        compiled = core.compile_model(quantized, "CPU", {"INFERENCE_NUM_THREADS": THREADS, **f32})
        worst = worst_cosine(expected, [np.asarray(compiled(x)[0]) for x in batches[:8]])
        quantizers = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
        print(f"{name}: {quantizers} FakeQuantize, worst cosine to fp32 {worst:.6f}")
        calls[name] = ov_call(quantized, f32, example())
    report(calls, args.runs, baseline="TRANSFORMER, mixed preset")


def ov_kernels(args: argparse.Namespace) -> None:
    """OpenVINO performance counters by node type and the kernel the CPU plugin picked
    (exec_type: brgemm_avx512_amx_I8, jit_avx512_f32...), and the slowest nodes; the IR
    compiled as its runner does (fp32 and int8 pinned to f32)."""
    import collections

    import openvino as ov

    x = example()
    config = {"INFERENCE_NUM_THREADS": THREADS, "PERF_COUNT": True, **runner_hint(args.model)}
    compiled = ov.Core().compile_model(ov.Core().read_model(args.model), "CPU", config)
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer({0: x})
    by_kernel: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
    by_node: dict[tuple[str, str], float] = collections.defaultdict(float)
    for _ in range(args.runs):
        request.infer({0: x})
        for info in request.profiling_info:
            if info.status.name != "EXECUTED":
                continue
            ms = info.real_time.total_seconds() * 1e3 / args.runs
            entry = by_kernel[(info.node_type, info.exec_type)]
            entry[0] += ms
            entry[1] += 1 / args.runs
            by_node[(info.node_name, info.exec_type)] += ms
    print(f"{Path(args.model).parent.name}: {sum(v[0] for v in by_kernel.values()):.2f} ms in all")
    for (kind, kernel), (ms, count) in sorted(by_kernel.items(), key=lambda kv: -kv[1][0]):
        print(f"  {kind:30s} {kernel:28s} x{round(count):<4d} {ms:7.3f} ms")
    linear_ms = sum(v[0] for (kind, _), v in by_kernel.items() if kind.startswith("FullyConn"))
    macs = linear_macs()
    print(
        f"FullyConnected: {macs / 1e9:.2f} G MACs (T@{SIZE}'s linear layers) in {linear_ms:.2f} ms"
        f" = {2 * macs / linear_ms / 1e9:.2f} TOP/s"
    )
    runtime = {
        op.get_friendly_name(): op.get_rt_info()
        for op in compiled.get_runtime_model().get_ordered_ops()
    }
    print("slowest nodes (output precision; the original layers the plugin fused into them):")
    for (name, kernel), ms in sorted(by_node.items(), key=lambda kv: -kv[1])[: args.top]:
        info = runtime.get(name, {})
        output = info["outputPrecisions"].astype(str) if "outputPrecisions" in info else "?"
        fused = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        print(f"  {ms:6.3f} ms  {kernel:28s} out {output:5s} {name}")
        print(f"      fused: {fused}")


def ov_precision_marks(args: argparse.Namespace) -> None:
    """``disable_fp16_compression`` run-time info on the grouped convs of an fp16 IR: which
    precision the CPU plugin then runs them in (at its default, bf16 on a BF16 CPU)."""
    import openvino as ov

    core = ov.Core()
    for marked in (False, True):
        model = core.read_model(args.model)
        count = 0
        for op in model.get_ops():
            if marked and op.get_type_name() == "GroupConvolution":
                op.get_rt_info()["disable_fp16_compression_0"] = ""
                count += 1
        compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS})
        found: dict[str, int] = {}
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) == "Convolution":
                precision = info["runtimePrecision"].astype(str)
                found[precision] = found.get(precision, 0) + 1
        print(f"{count} grouped convs marked: runtime convolutions by precision {found}")


def hugepages(args: argparse.Namespace) -> None:
    """glibc's ``glibc.malloc.hugetlb=1`` tunable (transparent huge pages for malloc) in
    fresh processes, alternating with plain ones; median ms and AnonHugePages per process."""
    if args.child:
        session = ort_session(args.model)
        call = ort_call(session, example())
        for _ in range(3):
            call()
        seconds = []
        for _ in range(25):
            start = time.perf_counter()
            call()
            seconds.append(time.perf_counter() - start)
        with open("/proc/self/smaps_rollup") as smaps:
            huge = next(line for line in smaps if line.startswith("AnonHugePages")).split()[1]
        print(json.dumps([statistics.median(seconds) * 1e3, int(huge) // 1024]))
        return
    found: dict[str, list[Any]] = {"plain": [], "glibc.malloc.hugetlb=1": []}
    for _ in range(args.processes):
        for name in found:
            env = dict(os.environ)
            if name != "plain":
                env["GLIBC_TUNABLES"] = name
            command = [sys.executable, __file__, "hugepages", args.model, "--child"]
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            found[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name, rows in found.items():
        ms = sorted(round(row[0], 1) for row in rows)
        print(f"{name}: median ms per process {ms}; AnonHugePages MB {[r[1] for r in rows]}")


def recipe_fp32_onnx(model: Any, x: np.ndarray, work: Path) -> Path:
    """The fp32 ONNX file the onnx INT8 recipe quantizes, built as its export does: the
    converter's graph form for int8 (not the fp32 artifact's), exported by the converter."""
    import torch
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.converters.onnx import CONVERTER, MODEL_FILE

    from restv2_edge.export import export_graph

    form = CONVERTER.graph_form_for(ExportRequest(precision="int8"))
    folder = work / f"fp32-{form}"
    folder.mkdir()
    graph = export_graph(model, form, raw_input=False)
    CONVERTER.export(graph, torch.from_numpy(x), folder, ExportRequest(), lambda step: None)
    print(f"recipe input: fp32 in the {form!r} form")
    return folder / MODEL_FILE


def onnx_int8(args: argparse.Namespace) -> None:
    """Variants of the onnx INT8 recipe (calibration/onnx.py) on the recipe's own fp32 graph
    (exported from ``--weights``) and the same calibration images; latency and the worst
    cosine to the fp32 logits on 8 images."""
    import onnx
    import onnxruntime.quantization as quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from restv2_edge.calibration import onnx as recipe

    from restv2_edge.factory import create_model

    inputs = np.load(args.calibration)
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    work = args.work
    model = create_model("T", image_size=SIZE, weights=str(args.weights))
    fp32_path = recipe_fp32_onnx(model, example(), work)
    quant_pre_process(str(fp32_path), str(work / "prepared.onnx"), skip_symbolic_shape=True)
    prepared = onnx.load(str(work / "prepared.onnx"))
    constants = {init.name for init in prepared.graph.initializer}
    attention = [
        node.name
        for node in prepared.graph.node
        if node.op_type == "MatMul" and node.input[1] not in constants
    ]
    recipe_ops = list(recipe.OP_TYPES)
    variants: dict[str, dict[str, Any]] = {
        "recipe": {},
        "attention matmuls float": {"exclude": attention},
        "depthwise convs int8 out": {"ops": recipe_ops, "outputs_float": ["MatMul", "Gemm"]},
        "+ DepthToSpace/Transpose QDQ": {
            "ops": [*recipe_ops, "DepthToSpace", "Transpose"],
            "outputs_float": ["MatMul", "Gemm"],
        },
        "int8 symmetric activations (S8S8)": {"symmetric_activations": True},
        "Transpose QDQ, forced": {
            "ops": [*recipe_ops, "Transpose"],
            "outputs_float": recipe_ops,
            "force": True,
            "recipe_excludes": True,
        },
        "DepthToSpace/Transpose QDQ, forced": {
            "ops": [*recipe_ops, "DepthToSpace", "Transpose"],
            "outputs_float": recipe_ops,
            "force": True,
            "recipe_excludes": True,
        },
        "QOperator format": {"quant_format": "QOperator"},
        "+ Add QDQ": {
            "ops": [*recipe_ops, "Add"],
            "outputs_float": recipe_ops,
            "recipe_excludes": True,
        },
    }
    assert tuple(variants) == ONNX_INT8_VARIANTS
    chosen = {"recipe", *(args.variant or variants)}
    real = quantization.quantize_static
    paths = {}
    for name, change in variants.items():
        if name not in chosen:
            continue

        def patched(*a: Any, change: dict[str, Any] = change, **kw: Any) -> Any:
            if "ops" in change:
                kw["op_types_to_quantize"] = change["ops"]
                if not change.get("recipe_excludes"):
                    kw["nodes_to_exclude"] = []  # the float depthwise convs quantized too
                extra = {**kw["extra_options"]}
                extra["OpTypesToExcludeOutputQuantization"] = change["outputs_float"]
                # data-movement ops on float inputs get Q before / DQ after them, so they
                # move int8 data where a quantized op follows
                extra["ForceQuantizeNoInputCheck"] = change.get("force", False)
                kw["extra_options"] = extra
            if "quant_format" in change:
                kw["quant_format"] = quantization.QuantFormat[change["quant_format"]]
            if change.get("symmetric_activations"):
                kw["activation_type"] = quantization.QuantType.QInt8
                kw["extra_options"] = {**kw["extra_options"], "ActivationSymmetric": True}
            return real(*a, **kw)

        # one calibration pass per set of quantized op types
        ops = change.get("ops", recipe_ops)
        cache = work / f"cache-{'-'.join(sorted(ops))}.json"
        path = work / f"{len(paths)}.onnx"
        quantization.quantize_static = patched
        try:
            recipe.quantize_onnx_file(
                fp32_path, path, batches, "input", recipe.DEFAULT_METHOD,
                change.get("exclude"), cache=cache,
            )  # fmt: skip
        finally:
            quantization.quantize_static = real
        paths[name] = str(path)
    images = inputs[:8]
    fp32 = ort_session(str(fp32_path))
    reference = np.concatenate([fp32.run(None, {"input": img[None]})[0] for img in images])
    calls = {"fp32": ort_call(fp32, images[:1])}
    for name, path in paths.items():
        session = ort_session(path)
        logits = np.concatenate([session.run(None, {"input": img[None]})[0] for img in images])
        worst = worst_cosine(list(reference), list(logits))
        ops = optimized_op_counts(Path(path))
        kinds = ", ".join(f"{ops.get(op, 0)} {op}" for op in INT8_OPS_SHOWN)
        print(f"{name}: worst cosine to fp32 {worst:.6f}; optimized graph: {kinds}")
        calls[name] = ort_call(session, images[:1])
    report(calls, args.runs, baseline="recipe")


def shuffle_as_one_transpose(model: Any) -> int:
    """Rewrite each ``DepthToSpace(CRD) -> Reshape (B, C, N) -> Transpose (B, N, C)`` of an
    ONNX graph as ``Reshape (B, C, r, r, h, w) -> Transpose -> Reshape (B, N, C)``: the pixel
    shuffle and the tokens transpose as one 6-D permute. Returns how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    shapes = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in onnx.shape_inference.infer_shapes(model).graph.value_info
    }
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    rewritten, drop, add = 0, set(), []
    for node in graph.node:
        if node.op_type != "DepthToSpace":
            continue
        mode = next((a.s for a in node.attribute if a.name == "mode"), b"DCR")
        r = next(a.i for a in node.attribute if a.name == "blocksize")
        flatten = consumers.get(node.output[0], [])
        transpose = consumers.get(flatten[0].output[0], []) if len(flatten) == 1 else []
        if mode != b"CRD" or len(transpose) != 1 or transpose[0].op_type != "Transpose":
            continue
        batch, channels, h, w = shapes[node.input[0]]
        channels //= r * r
        tag = f"shuffle6d_{rewritten}"
        six = numpy_helper.from_array(np.array([batch, channels, r, r, h, w]), f"{tag}_six")
        tokens = numpy_helper.from_array(np.array([batch, h * r * w * r, channels]), f"{tag}_n")
        graph.initializer.extend([six, tokens])
        add += [
            helper.make_node("Reshape", [node.input[0], six.name], [f"{tag}_a"]),
            helper.make_node("Transpose", [f"{tag}_a"], [f"{tag}_b"], perm=[0, 4, 2, 5, 3, 1]),
            helper.make_node("Reshape", [f"{tag}_b", tokens.name], [transpose[0].output[0]]),
        ]
        drop |= {id(node), id(flatten[0]), id(transpose[0])}
        rewritten += 1
    kept = [node for node in graph.node if id(node) not in drop] + add
    graph.ClearField("node")
    graph.node.extend(topological(kept))
    return rewritten


def topological(nodes: list[Any]) -> list[Any]:
    """``nodes`` in an order where every node comes after the producers of its inputs."""
    produced = {out: node for node in nodes for out in node.output}
    done: set[int] = set()
    order: list[Any] = []

    def visit(node: Any) -> None:
        if id(node) in done:
            return
        done.add(id(node))
        for name in node.input:
            if name in produced:
                visit(produced[name])
        order.append(node)

    for node in nodes:
        visit(node)
    return order


def onnx_shuffle(args: argparse.Namespace) -> None:
    """Each ONNX artifact against itself with the pixel shuffle and the tokens transpose as
    one 6-D Transpose (``shuffle_as_one_transpose``); the outputs must be identical."""
    import onnx

    x = example()
    calls = {}
    work = args.work
    for path in args.models:
        name = Path(path).parent.name
        model = onnx.load(path)
        count = shuffle_as_one_transpose(model)
        onnx.checker.check_model(model)
        changed = work / f"{name}.onnx"
        onnx.save(model, str(changed))
        plain, six = ort_session(path), ort_session(str(changed))
        same = np.array_equal(plain.run(None, {"input": x})[0], six.run(None, {"input": x})[0])
        print(f"{name}: {count} pixel shuffles rewritten; identical logits: {same}")
        calls[name] = ort_call(plain, x)
        calls[f"{name}, 6-D transpose"] = ort_call(six, x)
    times = time_round_robin(calls, warmup=3, runs=args.runs, progress=lambda s: None, block=BLOCK)
    for name in args.models:
        base = Path(name).parent.name
        other = f"{base}, 6-D transpose"
        print(
            f"{other}: {summarize(times[other], 1)['median_ms']:.2f} ms against "
            f"{summarize(times[base], 1)['median_ms']:.2f} ms; per-round ratio "
            f"{per_round_ratio(times, base, other):.3f}"
        )


#: onnxruntime.transformers fusions tried on the fp32 graph; the others are switched off
ORT_FUSIONS = {
    "BiasGelu": ("enable_gelu", "enable_bias_gelu"),
    "SkipLayerNormalization": ("enable_layer_norm", "enable_skip_layer_norm"),
    "all of the optimizer's defaults": (),
}


def ort_fusions(args: argparse.Namespace) -> None:
    """The fp32 ONNX artifact against itself rewritten by onnxruntime's transformer optimizer
    (contrib-op fusions: BiasGelu, SkipLayerNormalization, ...); max |dlogit| on 8 images."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    work = args.work
    images = [img[None] for img in np.load(args.calibration)[:8]]
    plain = ort_session(args.model)
    reference = [plain.run(None, {"input": img})[0] for img in images]
    calls = {"artifact": ort_call(plain, images[0])}
    for index, (name, flags) in enumerate(ORT_FUSIONS.items()):
        options = FusionOptions("bert")
        if flags:
            for key, value in vars(options).items():
                if key.startswith("enable_") and isinstance(value, bool):
                    setattr(options, key, key in flags or key == "enable_shape_inference")
        optimized = optimize_model(
            args.model, model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
            use_gpu=False, optimization_options=options,
        )  # fmt: skip
        fused = {op: count for op, count in optimized.get_fused_operator_statistics().items()
                 if count}  # fmt: skip
        path = work / f"{index}.onnx"
        optimized.save_model_to_file(str(path))
        session = ort_session(str(path))
        got = [session.run(None, {"input": img})[0] for img in images]
        worst = max(float(np.abs(a - b).max()) for a, b in zip(reference, got, strict=True))
        print(f"{name}: fused {fused}; max |dlogit| to the artifact {worst:.1e}")
        calls[name] = ort_call(session, images[0])
    report(calls, args.runs, baseline="artifact")


def upsample(args: argparse.Namespace) -> None:
    """EMSA's V upsampling (3x3 conv, r*r outputs per channel, pixel shuffle, to tokens) of
    each T stage, against one depthwise ConvTranspose (stride r, kernel 3r, padding r) that
    computes the same map with no pixel shuffle, alone in onnxruntime and OpenVINO."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    calls: dict[str, Callable[[], Any]] = {}
    work = args.work
    for channels, r in ((96, 8), (192, 4), (384, 2)):
        # no bias: the official one is per (c, i, j), a ConvTranspose's per c (a real form
        # would add the rest as a constant map)
        conv = torch.nn.Conv2d(channels, channels * r * r, 3, 1, 1, groups=channels, bias=False)
        conv.requires_grad_(False)
        # K[c, (2 - a) r + i, (2 - b) r + j] = W[c r r + i r + j, a, b]
        w = conv.weight.reshape(channels, r, r, 3, 3).flip(3, 4)
        kernel = w.permute(0, 3, 1, 4, 2).reshape(channels, 1, 3 * r, 3 * r).contiguous()

        class Shuffle(torch.nn.Module):
            def forward(self, x: torch.Tensor, conv: Any = conv, r: int = r) -> torch.Tensor:
                return F.pixel_shuffle(conv(x), r).flatten(2).transpose(1, 2)

        class Transposed(torch.nn.Module):
            def forward(self, x: torch.Tensor, k: Any = kernel, r: int = r) -> torch.Tensor:
                y = F.conv_transpose2d(x, k, stride=r, padding=r, groups=k.shape[0])
                return y.flatten(2).transpose(1, 2)

        x = torch.randn(1, channels, 7, 7)
        difference = (Shuffle()(x) - Transposed()(x)).abs().max().item()
        print(f"C={channels} r={r}: max |difference| {difference:.1e}")
        for name, module in (("shuffle", Shuffle()), ("conv-transpose", Transposed())):
            label = f"C{channels} r{r} {name}"
            calls.update(both_runtimes(module, x, work / f"{label.replace(' ', '-')}.onnx", label))
    times = time_round_robin(calls, warmup=3, runs=args.runs, progress=lambda s: None, block=BLOCK)
    for name in calls:
        if name.endswith("conv-transpose"):
            base = name.replace("conv-transpose", "shuffle")
            print(
                f"{name}: {summarize(times[name], 1)['median_ms']:.3f} ms against "
                f"{summarize(times[base], 1)['median_ms']:.3f} ms; per-round ratio "
                f"{per_round_ratio(times, base, name):.3f}"
            )


def litert_runtime(args: argparse.Namespace) -> None:
    """A .tflite through the LiteRT Interpreter (the runner's, XNNPACK delegate) and through
    LiteRT's CompiledModel API on the CPU (XNNPACK; YNNPACK where the build has it)."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.options import CpuOptions, Options

    x = example()
    interpreted = tflite_call(args.model, x)
    latest_features = tflite_call(args.model, x, experimental_default_delegate_latest_features=True)
    calls = {"Interpreter": interpreted}
    difference = np.abs(latest_features().ravel() - interpreted().ravel()).max()
    print(f"Interpreter, latest delegate features: max |dlogit| vs Interpreter {difference:.1e}")
    calls["Interpreter, latest delegate features"] = latest_features
    size = interpreted().size
    for name, ynnpack in (("CompiledModel", False), ("CompiledModel, YNNPACK", True)):
        options = Options(cpu_options=CpuOptions(num_threads=THREADS, enable_ynnpack=ynnpack))
        try:
            model = CompiledModel.from_file(args.model, options=options)
        except RuntimeError as exc:
            print(f"{name}: does not compile ({str(exc).splitlines()[0]})")
            continue
        inputs, outputs = model.create_input_buffers(0), model.create_output_buffers(0)

        def compiled(model: Any = model, inputs: Any = inputs, outputs: Any = outputs) -> Any:
            inputs[0].write(x)
            model.run_by_index(0, inputs, outputs)
            return outputs[0].read(size, np.float32)

        difference = np.abs(compiled().ravel() - interpreted().ravel()).max()
        print(f"{name}: max |dlogit| vs Interpreter {difference:.1e}")
        calls[name] = compiled
    report(calls, args.runs)


def tflite_call(model: bytes | str, x: np.ndarray, **options: Any) -> Callable[..., Any]:
    """A .tflite (bytes or path) in the Interpreter with its XNNPACK delegate (and any
    further Interpreter ``options``): image (``x`` by default) -> logits."""
    from ai_edge_litert.interpreter import Interpreter

    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
    interpreter = Interpreter(num_threads=THREADS, **source, **options)
    interpreter.allocate_tensors()
    first_in = interpreter.get_input_details()[0]["index"]
    first_out = interpreter.get_output_details()[0]["index"]

    def call(image: np.ndarray = x) -> Any:
        interpreter.set_tensor(first_in, image)
        interpreter.invoke()
        return interpreter.get_tensor(first_out).copy()

    return call


def conv_macs(data: bytes) -> dict[str, int]:
    """MACs per conv of a float .tflite (the recipe's ``OP#index`` names), from its NHWC
    output and OHWI filter shapes: a depthwise filter has one input channel per output."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfl

    model = tfl.read_model(bytearray(data))
    graph = model.subgraphs[0]
    macs = {}
    for index, op in enumerate(graph.operators):
        name = getattr(
            tfl.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode),
            "value",
            None,
        )
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            out = graph.tensors[op.outputs[0]].shape
            _, height, width, channels = graph.tensors[op.inputs[1]].shape
            taps = height * width * (channels if name == "CONV_2D" else 1)
            macs[f"{name}#{index}"] = int(np.prod(out)) * int(taps)
    return macs


def litert_int8_float(args: argparse.Namespace) -> None:
    """The LiteRT INT8 recipe on a float .tflite (head and V-upsampling convs float) against
    the V-upsampling convs int8 too, and against the dense convs float as well."""
    from restv2_edge.calibration.litert import LiteRTQuantizer, quantizable_layers

    inputs = np.load(args.calibration)
    data = Path(args.model).read_bytes()
    batches = [inputs[i : i + 1] for i in range(len(inputs))]
    quantizer = LiteRTQuantizer(data, batches, upsampling=True)
    recipe = {layer.name for layer in quantizable_layers(data)}
    upsampling = [layer.name for layer in quantizer.layers if layer.name not in recipe]
    dense = [layer.name for layer in quantizer.layers if layer.name.startswith("CONV_2D#")]
    variants = {
        "upsampling convs int8": quantizer.head,
        "recipe": [*quantizer.head, *upsampling],
        "recipe, dense convs float": [*quantizer.head, *upsampling, *dense],
    }
    macs = conv_macs(data)
    print(
        f"{len(upsampling)} upsampling convs ({sum(macs[n] for n in upsampling) / 1e6:.1f} M MACs),"
        f" {len(dense)} dense convs ({sum(macs[n] for n in dense) / 1e6:.1f} M MACs)"
    )
    x = example()
    fp32 = tflite_call(data, x)
    expected = [fp32(image[None]) for image in inputs[:8]]
    calls = {}
    for name, keep in variants.items():
        model = quantizer.quantize(keep)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name.replace(' ', '-')}.tflite").write_bytes(model)
        call = tflite_call(model, x)
        got = [call(image[None]) for image in inputs[:8]]
        print(f"{name}: worst cosine to the fp32 .tflite {worst_cosine(expected, got):.6f}")
        calls[name] = call
    report(calls, args.runs)


def litert_kernels(args: argparse.Namespace) -> None:
    """.tflite files' kernels side by side: Linux perf samples (``restv2_edge.kernel_samples``)
    in alternating rounds, ms per inference per kernel family, and the GEMM kernels' share."""
    from restv2_edge.kernel_samples import sample_calls
    from restv2_edge.profile import by_op_type, merge_profiles

    x = example()
    calls = {}
    for path in args.models:
        calls[path] = tflite_call(path, x)
        calls[path]()
    profiles: dict[str, list[Any]] = {path: [] for path in calls}
    for _ in range(args.rounds):
        for path, call in calls.items():
            profiles[path].append(sample_calls(call, args.runs, THREADS, "LiteRT"))
    families = {path: by_op_type(merge_profiles(found)) for path, found in profiles.items()}
    names = list(dict.fromkeys(row["op_type"] for rows in families.values() for row in rows))
    ms = {path: {row["op_type"]: row["ms"] for row in rows} for path, rows in families.items()}
    print(f"ms per inference ({args.rounds} rounds x {args.runs} calls per file):")
    print("kernel family".ljust(48) + "".join(f"{Path(p).name:>22s}" for p in calls))
    for name in names[: args.top]:
        print(name[:47].ljust(48) + "".join(f"{ms[p].get(name, 0.0):22.3f}" for p in calls))
    first = next(iter(calls))
    for path in calls:
        total = sum(ms[path].values())
        gemm = gemm_ms(ms[path])
        rounds = [
            (gemm_ms(ops_ms(mine)) / gemm_ms(ops_ms(base)), total_ms(mine) / total_ms(base))
            for mine, base in zip(profiles[path], profiles[first], strict=True)
        ]
        print(
            f"{path}: sum {total:.2f} ms, GEMM kernels {gemm:.2f} ms ({gemm / total:.1%}); "
            f"per-round median / {Path(first).name}: GEMM kernels "
            f"{statistics.median(r[0] for r in rounds):.3f}, sum "
            f"{statistics.median(r[1] for r in rounds):.3f}"
        )


def ops_ms(profile: Any) -> dict[str, float]:
    """ms per op type of one profile."""
    from restv2_edge.profile import by_op_type

    return {row["op_type"]: row["ms"] for row in by_op_type(profile)}


def gemm_ms(families: dict[str, float]) -> float:
    """The XNNPACK GEMM kernels' ms (``gemm`` and ``igemm`` families, every data type)."""
    return sum(ms for name, ms in families.items() if name.startswith("XNNPACK") and "gemm" in name)


def total_ms(profile: Any) -> float:
    return sum(op.ms for op in profile.ops)


def gemm(args: argparse.Namespace) -> None:
    """One fp32 1024^3 GEMM through each kernel at hand (the floors' torch.mm and oneDNN
    cases, numpy's BLAS, OpenVINO's FullyConnected), interleaved: GFLOP/s from the best call."""
    import openvino as ov
    import torch

    from restv2_edge.bench.floors import gemm_cases

    torch.set_num_threads(THREADS)
    size = 1024
    cases = gemm_cases(size)
    a, b = np.random.default_rng(0).standard_normal((2, size, size)).astype(np.float32)
    layer = torch.nn.Linear(size, size, bias=False).eval().requires_grad_(False)
    layer.weight.copy_(torch.from_numpy(b.T.copy()))
    converted = ov.convert_model(layer, example_input=torch.from_numpy(a))
    calls = {
        "torch.mm (floors 'fp32')": cases["fp32"][0],
        "torch.utils.mkldnn linear (floors 'fp32-onednn')": cases["fp32-onednn"][0],
        "numpy matmul": lambda: a @ b,
        "OpenVINO FullyConnected (f32)": ov_call(converted, {"INFERENCE_PRECISION_HINT": "f32"}, a),
    }
    with torch.inference_mode():
        times = time_round_robin(calls, warmup=3, runs=args.runs, progress=lambda s: None)
    for name, seconds in times.items():
        print(f"{name:50s} {2.0 * size**3 / min(seconds) / 1e9:6.0f} GFLOP/s (best call)")


def conv(args: argparse.Namespace) -> None:
    """A patch-embedding conv (3x3, stride 2, 64 -> 128 on 56x56) three ways, alone."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    cin, cout, hw = 64, 128, 56
    layer = torch.nn.Conv2d(cin, cout, 3, stride=2, padding=1).requires_grad_(False)
    weight = layer.weight.permute(0, 2, 3, 1).reshape(cout, 9 * cin, 1, 1).contiguous()

    def taps(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1))
        offsets = [(i, j) for i in range(3) for j in range(3)]
        return torch.cat([x[:, :, i : i + hw : 2, j : j + hw : 2] for i, j in offsets], 1)

    class Direct(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return layer(x)

    class Im2colConv(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(taps(x), weight, layer.bias)

    class Im2colMatmul(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(taps(x).flatten(2).transpose(1, 2), weight.flatten(1), layer.bias)

    x = torch.randn(1, cin, hw, hw)
    work = args.work
    calls = {}
    for name, module in (("direct", Direct()), ("im2col+1x1", Im2colConv()),
                         ("im2col+matmul", Im2colMatmul())):  # fmt: skip
        calls.update(both_runtimes(module, x, work / f"{name}.onnx", name))
    report(calls, args.runs)


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, extra in (
        ("drift", drift, ["model"]),
        ("ort-options", ort_options, ["models"]),
        ("ov-options", ov_options, ["models"]),
        ("ov-precision-marks", ov_precision_marks, ["model"]),
        ("ov-int8-hint", ov_int8_hint, ["models"]),
        ("ov-kernels", ov_kernels, ["model"]),
        ("ov-int8-scheme", ov_int8_scheme, ["model"]),
        ("ov-weight-int8", ov_weight_int8, ["fp32", "int8"]),
        ("hugepages", hugepages, ["model"]),
        ("onnx-int8", onnx_int8, []),
        ("onnx-shuffle", onnx_shuffle, ["models"]),
        ("ort-fusions", ort_fusions, ["model"]),
        ("upsample", upsample, []),
        ("litert-runtime", litert_runtime, ["model"]),
        ("litert-kernels", litert_kernels, ["models"]),
        ("litert-int8-float", litert_int8_float, ["model"]),
        ("gemm", gemm, []),
        ("conv", conv, []),
    ):
        command = sub.add_parser(name, help=func.__doc__.splitlines()[0])
        command.set_defaults(func=func)
        if "model" in extra:
            command.add_argument("model")
        for name in ("fp32", "int8"):
            if name in extra:
                command.add_argument(name, help=f"the {name} IR (model.xml)")
        if "models" in extra:
            command.add_argument("models", nargs="+")
        command.add_argument("--runs", type=timed_runs_arg, default=40)
    sub.choices["drift"].add_argument("--blocks", type=int, default=8)
    sub.choices["ov-kernels"].add_argument("--top", type=int, default=12)
    sub.choices["litert-kernels"].add_argument("--top", type=int, default=16)
    sub.choices["litert-kernels"].add_argument("--rounds", type=int, default=4)
    sub.choices["hugepages"].add_argument("--processes", type=int, default=5)
    sub.choices["hugepages"].add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    sub.choices["onnx-int8"].add_argument(
        "--weights", type=existing_file_arg, required=True, help="the T checkpoint (.pth)"
    )
    sub.choices["onnx-int8"].add_argument(
        "--variant",
        action="append",
        choices=ONNX_INT8_VARIANTS,
        help="time only these variants (and the recipe); repeat for more",
    )
    sub.choices["litert-int8-float"].add_argument(
        "--out", type=Path, help="also write each variant's .tflite here"
    )
    for name in (
        "onnx-int8",
        "ov-int8-scheme",
        "ov-weight-int8",
        "ort-fusions",
        "litert-int8-float",
    ):
        sub.choices[name].add_argument("--calibration", required=True, help="inputs.npy")
    args = parser.parse_args()
    if not getattr(args, "child", False):
        print(machine_line())
    with tempfile.TemporaryDirectory(prefix=f"restv2-{args.command}-") as folder:
        args.work = Path(folder)  # every file a subcommand writes, removed when it ends
        args.func(args)


if __name__ == "__main__":
    main()
