"""CPU benchmarks: artifacts through their runners, and the export matrix of one variant.

Every latency comes from the same runners parity uses (``restv2_edge.artifact.open_artifact``).
Measurements are interleaved round-robin across everything being compared, so a noisy,
shared machine slows all candidates alike and the ratios stay fair. Each round times a short
block of calls per candidate after one untimed settling call: onnxruntime's worker threads
spin after every call, and single interleaved calls measured that spinning, not the models
(T@224 onnxruntime int8 vs fp32 read 1.6x interleaved call by call, 1.9x in blocks).

Peak memory is the RSS high-water mark (Linux ``VmHWM``, else ``ru_maxrss``) of a fresh
subprocess per artifact that opens the artifact and runs two batches; ``load_run_mb`` is that mark
minus the process RSS just before the artifact was opened (runtime import + model + arenas).

Floors: model MACs (``restv2_edge.complexity``) over the peak rate torch reaches on a large
GEMM with the same thread count (fp32 matmul; bf16/fp16 matmul; int8 ``torch._int_mm``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from restv2_edge.errors import DataError, RestV2EdgeError, RunnerUnavailableError

Progress = Callable[[str], None]

#: ISA flags worth naming for inference speed (x86 /proc/cpuinfo and arm64 Features names)
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "asimdhp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
    "sme",
)
VERSION_PACKAGES = (
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "executorch",
    "coremltools",
    "torchao",
)
FIXTURE_NAME = "restv2_cifar10.safetensors"


# -- machine ----------------------------------------------------------------------------------


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, cores and ISA flags (from /proc/cpuinfo; lscpu as a fallback), OS, Python."""
    model, flags = "", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not model:
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    if not model or not flags:
        try:
            text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name" and not model:
                model = value.strip()
            elif key.strip() == "Flags" and not flags:
                flags = set(value.split())
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def package_versions() -> dict[str, str]:
    """Installed versions of the runtimes (from package metadata; nothing is imported)."""
    found = {}
    for name in VERSION_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from restv2_edge import __version__

    return {"restv2_edge": __version__, **found}


def describe_machine(machine: dict[str, Any]) -> str:
    isa = ", ".join(machine["isa"]) or "no listed ISA extensions"
    return f"{machine['cpu']} ({machine['usable_cores']} usable cores; {isa})"


# -- timing -----------------------------------------------------------------------------------


def summarize(seconds: list[float], batch: int) -> dict[str, Any]:
    """Median / p90 / mean / min latency in ms and throughput (images/s at the median)."""
    if not seconds:
        raise ValueError("no timings")
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    return {
        "runs": len(ms),
        "median_ms": median,
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "images_per_s": batch / (median / 1e3),
    }


#: timed calls per candidate per round (``time_round_robin``)
BLOCK = 5


def time_round_robin(
    candidates: dict[str, Callable[[], Any]],
    warmup: int,
    runs: int,
    progress: Progress,
    block: int = 1,
) -> dict[str, list[float]]:
    """Interleave the candidates in rounds; seconds per timed call.

    ``warmup`` untimed rounds of one call each come first. Then every round gives each
    candidate up to ``block`` timed calls; with ``block > 1`` they follow one untimed
    settling call, so runtimes whose worker threads keep spinning after a call (onnxruntime's
    default) have stopped stealing cores from the previous candidate. One call per round
    (``block=1``) is fair only for runtimes that park their threads.
    """
    names = list(candidates)
    times: dict[str, list[float]] = {name: [] for name in names}
    rounds = warmup + -(-runs // block)
    for round_index in range(rounds):
        timed = round_index >= warmup
        progress(f"{'run' if timed else 'warm-up'} {round_index + 1}/{rounds}")
        calls = min(block, runs - len(times[names[0]])) if timed else 1
        # rotate the start so no candidate always runs right after the same neighbour
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if timed and block > 1:
                candidates[name]()
            for _ in range(calls):
                start = time.perf_counter()
                candidates[name]()
                elapsed = time.perf_counter() - start
                if timed:
                    times[name].append(elapsed)
    return times


def bench_input(manifest: Any, batch: int, seed: int = 0) -> np.ndarray:
    """A seeded batch in the artifact's input convention (normalized, or raw 0-255)."""
    rng = np.random.default_rng(seed)
    shape = (batch, 3, manifest.image_size, manifest.image_size)
    if manifest.raw_input:
        return rng.uniform(0, 255, shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def artifact_bytes(manifest: Any) -> int:
    return int(sum(entry["bytes"] for entry in manifest.files))


# -- peak memory (fresh subprocess) ------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def _rss_bytes() -> int:
    return _status_bytes("VmRSS") or 0


def _maxrss_bytes() -> int:
    """This process's RSS high-water mark.

    Linux: VmHWM, which starts afresh at exec. (``ru_maxrss`` does not: it keeps the
    high-water of the forking parent across fork + exec, so a probe started from a process
    that already holds big models would report the parent's peak.)
    """
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value if sys.platform == "darwin" else value * 1024)


def _memory_child(folder: str, threads: int | None, batch: int, calls: int) -> dict[str, Any]:
    from restv2_edge.artifact import open_artifact

    before = _rss_bytes()
    manifest, runner = open_artifact(folder, threads)
    x = bench_input(manifest, batch)
    for _ in range(max(calls, 1)):
        runner(x)
    peak = _maxrss_bytes()
    return {"peak_rss_mb": peak / 2**20, "load_run_mb": max(peak - before, 0) / 2**20}


def peak_memory(
    folder: str | os.PathLike[str], threads: int | None, batch: int, calls: int = 2
) -> dict[str, Any]:
    """RSS high-water of a fresh process that opens ``folder`` and runs ``calls`` batches."""
    command = [
        sys.executable,
        "-m",
        "restv2_edge.bench",
        "--peak-memory",
        str(folder),
        "--batch",
        str(batch),
        "--calls",
        str(calls),
    ]
    if threads:
        command += ["--threads", str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return {"error": "memory probe timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"memory probe failed: {tail}"}
    return json.loads(lines[-1])


# -- artifacts ---------------------------------------------------------------------------------


def bench_artifacts(
    folders: list[str | os.PathLike[str]],
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    batch: int = 1,
    memory: bool = True,
    progress: Progress = lambda step: None,
) -> dict[str, Any]:
    """Latency/throughput (interleaved), size and peak memory of each artifact folder."""
    from restv2_edge.artifact import open_artifact

    if not folders:
        raise DataError("no artifact folder given")
    check_counts(warmup, runs, batch)
    threads = threads or usable_cores()
    opened, calls, rows = {}, {}, []
    for folder in folders:
        key = str(folder)
        if key in opened:
            raise DataError(f"{key} given twice")
        progress(f"open {key}")
        manifest, runner = open_artifact(folder, threads)
        x = bench_input(manifest, batch)
        opened[key] = (manifest, runner)
        calls[key] = lambda runner=runner, x=x: runner(x)
    times = time_round_robin(calls, warmup, runs, progress, BLOCK)
    for key, (manifest, runner) in opened.items():
        row = {
            "artifact": key,
            "target": manifest.target,
            "precision": manifest.precision,
            "variant": manifest.variant or "custom",
            "image_size": manifest.image_size,
            "runner": runner.description,
            "size_mb": artifact_bytes(manifest) / 1e6,
            **summarize(times[key], batch),
        }
        if memory:
            progress(f"memory {key}")
            row["memory"] = peak_memory(key, threads, batch)
        rows.append(row)
    return {
        "kind": "artifacts",
        "machine": machine_info(),
        "versions": package_versions(),
        "settings": {
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": batch,
            "order": f"round-robin in blocks of {BLOCK} (+1 settling call)",
            "memory": MEMORY_METHOD if memory else None,
        },
        "rows": rows,
    }


MEMORY_METHOD = (
    "RSS high-water (Linux VmHWM; else ru_maxrss) of a fresh subprocess per artifact "
    "(open + 2 batches); load_run_mb = that minus the RSS just before opening"
)


def check_counts(warmup: int, runs: int, batch: int) -> None:
    if warmup < 0 or runs < 1 or batch < 1:
        raise DataError(f"need warmup >= 0, runs >= 1, batch >= 1 (got {warmup}, {runs}, {batch})")


# -- peak GEMM rates and floors ----------------------------------------------------------------


def gemm_cases(size: int = 1024) -> dict[str, tuple[Callable[[], Any], float]]:
    """One GEMM per dtype (callable, ops per call) that runs on this torch build.

    fp16 GEMMs are slow on CPUs without native fp16 math, so fp16 uses at most 256^3: it only
    matters where it beats bf16 anyway.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    a32 = torch.randn(size, size, generator=generator)
    b32 = torch.randn(size, size, generator=generator)
    small = min(size, 256)
    a8 = a32.clamp(-1, 1).mul(100).to(torch.int8)
    b8 = b32.clamp(-1, 1).mul(100).to(torch.int8)
    candidates = {
        "fp32": (torch.mm, a32, b32, size),
        "bf16": (torch.mm, a32.bfloat16(), b32.bfloat16(), size),
        "fp16": (torch.mm, a32[:small, :small].half(), b32[:small, :small].half(), small),
        "int8": (getattr(torch, "_int_mm", None), a8, b8, size),
    }
    cases = {}
    with torch.inference_mode():
        for name, (op, a, b, n) in candidates.items():
            if op is None:
                continue
            try:
                op(a, b)  # kernel present on this build / CPU?
            except RuntimeError:
                continue
            cases[name] = (lambda op=op, a=a, b=b: op(a, b), 2.0 * n**3)
    return cases


def peak_rates(threads: int, size: int = 1024, reps: int = 5) -> dict[str, float | None]:
    """Best ops/s (2 x MACs) of a GEMM per dtype through torch on ``threads`` threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cases = gemm_cases(size)
        times = time_round_robin({k: c for k, (c, _) in cases.items()}, 0, reps, lambda s: None)
    finally:
        torch.set_num_threads(previous)
    return rates_from(cases, times)


def rates_from(
    cases: dict[str, tuple[Callable[[], Any], float]], times: dict[str, list[float]]
) -> dict[str, float | None]:
    """Peak rate per dtype from the fastest call (None where the dtype has no kernel)."""
    return {
        name: (cases[name][1] / min(times[name]) if name in cases else None)
        for name in ("fp32", "bf16", "fp16", "int8")
    }


def rate_for(precision: str, rates: dict[str, float | None]) -> tuple[str, float | None]:
    """The GEMM rate that bounds a precision: fp16 rows use the better 16-bit rate."""
    if precision == "int8":
        return "int8", rates.get("int8")
    if precision in ("fp16", "bf16"):
        options = [(k, rates.get(k)) for k in ("bf16", "fp16") if rates.get(k)]
        return max(options, key=lambda item: item[1]) if options else ("bf16", None)
    return "fp32", rates.get("fp32")


def floor_ms(macs: int, batch: int, rate: float | None) -> float | None:
    return None if not rate else 2.0 * macs * batch / rate * 1e3


# -- the export matrix ---------------------------------------------------------------------------


class EagerRunner:
    """PyTorch eager fp32 on the same threads: the speed-up baseline of the matrix."""

    def __init__(self, model: Any, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.model = model.eval()
        self.description = f"PyTorch {torch.__version__} eager fp32"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


def fixture_checkpoint_path() -> Path:
    """Where the committed CIFAR-10 fixture lives in a checkout."""
    return Path(__file__).resolve().parents[1] / "tests" / "fixtures" / FIXTURE_NAME


def default_accuracy_data(weights: str | os.PathLike[str] | None) -> Path | None:
    """CIFAR-10 test.tar from the shared data when ``weights`` is the committed fixture."""
    if weights is None:
        return None
    path = Path(weights).resolve()
    if path != fixture_checkpoint_path() and path.name != FIXTURE_NAME:
        return None
    from restv2_edge.data import shared_data_root

    tar = shared_data_root() / "cifar10" / "test.tar"
    return tar if tar.is_file() else None


def matrix_plan(targets: list[str], int8: bool) -> list[tuple[str, str]]:
    """(target, precision) pairs: every float precision, plus int8 where a recipe exists."""
    from restv2_edge.converters.base import get_converter

    plan = []
    for target in targets:
        converter = get_converter(target)
        supported = converter.supported_precisions()
        for precision in ("fp32", "fp16"):
            if precision in supported:
                plan.append((target, precision))
        if int8 and "int8" in supported:
            plan.append((target, "int8"))
    return plan


def run_matrix(
    variant: Any = "T",
    image_size: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] = "exports/bench",
    targets: list[str] | None = None,
    int8: bool = False,
    threads: int | None = None,
    warmup: int = 3,
    runs: int = 20,
    batch: int = 1,
    parity_data: str | os.PathLike[str] | None = None,
    parity_limit: int | None = 16,
    accuracy_data: str | os.PathLike[str] | None = None,
    accuracy_split: str | None = None,
    accuracy_limit: int | None = 500,
    calib: str | os.PathLike[str] | None = None,
    calib_data: str | os.PathLike[str] | None = None,
    calib_size: int = 64,
    gemm_size: int = 1024,
    progress: Progress = lambda step: None,
) -> dict[str, Any]:
    """Export ``variant`` to every installed target/precision, check parity, measure all.

    int8 rows calibrate on ``calib`` (a saved calibration set) or ``calib_size`` images of
    ``calib_data`` (default: the shared ImageNet sample) with each target's recipe defaults.
    """
    from restv2_edge.artifact import open_artifact
    from restv2_edge.complexity import count_macs
    from restv2_edge.config import variant_name
    from restv2_edge.converters.base import ExportRequest, installed_targets
    from restv2_edge.export import export_artifact
    from restv2_edge.factory import create_model

    check_counts(warmup, runs, batch)
    threads = threads or usable_cores()
    available = installed_targets()
    if targets:
        missing = [t for t in targets if t not in available]
        if missing:
            raise RunnerUnavailableError(f"target(s) not installed: {', '.join(missing)}")
    else:
        targets = available
    progress("build model")
    model = create_model(variant, image_size, None, weights)
    name = variant_name(model.config) or "custom"
    macs = sum(count_macs(model).values())
    accuracy_data = accuracy_data or default_accuracy_data(weights)
    output = Path(output)

    rows: list[dict[str, Any]] = []
    eager = EagerRunner(model, threads)
    x = (
        np.random.default_rng(0)
        .standard_normal((batch, 3, model.image_size, model.image_size))
        .astype(np.float32)
    )
    calls: dict[str, Callable[[], Any]] = {"pytorch/fp32": lambda: eager(x)}
    rows.append(
        {
            "key": "pytorch/fp32",
            "target": "pytorch",
            "precision": "fp32",
            "runner": eager.description,
            "status": "reference",
            "size_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6,
            "parity": {
                "status": "reference",
                "cosine_mean": 1.0,
                "cosine_min": 1.0,
                "top1_agreement": 1.0,
            },
            "artifact": None,
        }
    )
    notes: list[str] = []
    calibration: list[Any] = []  # built once, at the first int8 row
    for target, precision in matrix_plan(targets, int8):
        key = f"{target}/{precision}"
        folder = output / f"restv2-{name}-{model.image_size}-{target}-{precision}"
        row: dict[str, Any] = {
            "key": key,
            "target": target,
            "precision": precision,
            "artifact": str(folder),
        }
        rows.append(row)
        progress(f"export {key}")
        try:
            request = ExportRequest(precision=precision)
            if precision == "int8":
                if not calibration:
                    progress("calibration set")
                    calibration.append(_calibration(model, calib, calib_data, calib_size, notes))
                request.calibration = calibration[0]
                request.quantization = {}
            _, manifest = export_artifact(
                model,
                target,
                folder,
                request,
                force=True,
                verify=False,
                parity_data=parity_data,
                parity_limit=parity_limit,
            )
            _, runner = open_artifact(folder, threads)
        except RestV2EdgeError as exc:
            row.update(status="failed", error=_one_line(exc))
            continue
        except Exception as exc:  # a backend crash must not end the whole matrix
            row.update(status="failed", error=f"{type(exc).__name__}: {_one_line(exc)}")
            continue
        record = manifest.parity or {}
        metrics = record.get("metrics", {})
        row.update(
            status="ok",
            runner=runner.description,
            size_mb=artifact_bytes(manifest) / 1e6,
            parity={
                "status": record.get("status", "not run"),
                "cosine_mean": metrics.get("cosine_mean"),
                "cosine_min": metrics.get("cosine_min"),
                "top1_agreement": metrics.get("top1_agreement"),
                "max_abs_diff": metrics.get("max_abs_diff"),
                "images": metrics.get("images"),
            },
        )
        xa = bench_input(manifest, batch)
        calls[key] = lambda runner=runner, xa=xa: runner(xa)

    # the GEMMs behind the floors run inside the same rounds: same threads, same machine load
    gemms = gemm_cases(gemm_size)
    calls.update({f"gemm/{name}": case for name, (case, _) in gemms.items()})
    times = time_round_robin(calls, warmup, runs, progress, BLOCK)
    rates = rates_from(gemms, {name: times[f"gemm/{name}"] for name in gemms})
    base = float(np.median(times["pytorch/fp32"]))
    for row in rows:
        if row["key"] not in times:
            continue
        row.update(summarize(times[row["key"]], batch))
        row["speedup_vs_eager"] = base / (row["median_ms"] / 1e3)
        gemm, rate = rate_for(row["precision"], rates)
        row["floor_ms"] = floor_ms(macs, batch, rate)
        row["floor_gemm"] = gemm
    if accuracy_data is not None:
        for row in rows:
            if row.get("status") == "failed":
                continue
            source = row["artifact"] or weights
            if source is None:
                continue
            progress(f"accuracy {row['key']}")
            row["accuracy"] = _accuracy(source, accuracy_data, accuracy_split, accuracy_limit)
    return {
        "kind": "matrix",
        "machine": machine_info(),
        "versions": package_versions(),
        "model": {
            "variant": name,
            "config": model.config.to_dict(),
            "image_size": model.image_size,
            "macs": macs,
            "weights": str(weights) if weights else None,
        },
        "settings": {
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            "batch": batch,
            "order": f"round-robin in blocks of {BLOCK} (+1 settling call)",
            "targets": targets,
            "int8": int8,
            "parity_data": str(parity_data) if parity_data else "default",
            "parity_limit": parity_limit,
            "accuracy_data": str(accuracy_data) if accuracy_data else None,
            "accuracy_split": accuracy_split,
            "accuracy_limit": accuracy_limit,
            "gemm_size": gemm_size,
        },
        "peak_rates": rates,
        "notes": notes,
        "rows": rows,
    }


def _calibration(model: Any, calib: Any, calib_data: Any, calib_size: int, notes: list[str]) -> Any:
    from restv2_edge.calibration.dataset import request_calibration
    from restv2_edge.data import default_photo_dir

    if calib is None and calib_data is None:
        calib_data = default_photo_dir()
        if not Path(calib_data).is_dir():
            raise DataError(f"int8 needs calibration images: --calib-data ({calib_data} missing)")
    options = {"calib": calib, "calib_data": calib_data, "calib_size": calib_size}

    def note(text: str) -> None:  # calibration reports in rich markup; the doc wants text
        notes.append(text.replace("[yellow]", "").replace("[/]", ""))

    found = request_calibration(options, model.preprocessing, note)
    notes.append(f"int8 calibration: {found.summary()}")
    return found


def _accuracy(source: Any, data: Any, split: str | None, limit: int | None) -> dict[str, Any]:
    from restv2_edge.evaluate import evaluate

    try:
        result = evaluate(source, data, split, limit)
    except RestV2EdgeError as exc:
        return {"error": _one_line(exc)}
    return {"top1": result["top1"], "top5": result["top5"], "images": result["images"]}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- presentation --------------------------------------------------------------------------------


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_artifacts(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    s = report["settings"]
    table = Table(
        title=f"batch {s['batch']}, {s['threads']} threads, {s['runs']} runs (round-robin)",
        caption=describe_machine(report["machine"]),
    )
    for column in (
        "artifact",
        "target",
        "precision",
        "size MB",
        "median ms",
        "p90 ms",
        "img/s",
        "peak RSS MB",
        "runner",
    ):
        table.add_column(
            column, justify="right" if column[0].isupper() or " " in column else "left"
        )
    for row in report["rows"]:
        memory = row.get("memory") or {}
        table.add_row(
            Path(row["artifact"]).name,
            row["target"],
            row["precision"],
            f"{row['size_mb']:.2f}",
            f"{row['median_ms']:.2f}",
            f"{row['p90_ms']:.2f}",
            f"{row['images_per_s']:.1f}",
            _fmt(memory.get("peak_rss_mb"), ".0f") if "error" not in memory else "error",
            row["runner"],
        )
    console.print(table)


def matrix_columns(row: dict[str, Any]) -> list[str]:
    """One table row of the matrix as strings (also used for the markdown doc)."""
    parity = row.get("parity") or {}
    accuracy = row.get("accuracy") or {}
    if row.get("status") == "failed":
        return [row["target"], row["precision"], "-", "failed", "-", "-", "-", "-"]
    cosine = parity.get("cosine_mean")
    agree = parity.get("top1_agreement")
    par = "-" if cosine is None else f"{cosine:.5f} / {agree:.0%}"
    if parity.get("status") == "failed":
        par += " (FAILED)"
    acc = f"{accuracy['top1']:.2%}" if "top1" in accuracy else "-"
    floor = "-" if row.get("floor_ms") is None else f"{row['floor_ms']:.2f} ({row['floor_gemm']})"
    return [
        row["target"],
        row["precision"],
        _fmt(row.get("size_mb"), ".2f"),
        par,
        acc,
        _fmt(row.get("median_ms"), ".2f"),
        _fmt(row.get("speedup_vs_eager"), ".2f") + "x",
        floor,
    ]


MATRIX_HEADER = [
    "target",
    "precision",
    "size MB",
    "parity cos / top-1",
    "accuracy",
    "latency ms",
    "vs eager",
    "floor ms",
]


def render_matrix(report: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    m, s = report["model"], report["settings"]
    table = Table(
        title=(
            f"ResTv2-{m['variant']} @ {m['image_size']}, batch {s['batch']}, "
            f"{s['threads']} threads, median of {s['runs']} (round-robin)"
        ),
        caption=describe_machine(report["machine"]),
    )
    for column in MATRIX_HEADER:
        table.add_column(column, justify="left" if column in ("target", "precision") else "right")
    for row in report["rows"]:
        table.add_row(*matrix_columns(row))
    console.print(table)
    for row in report["rows"]:
        if row.get("status") == "failed":
            console.print(f"[red]{row['key']} failed:[/] {row['error']}")


def matrix_markdown(report: dict[str, Any]) -> str:
    lines = ["| " + " | ".join(MATRIX_HEADER) + " |", "|" + "---|" * len(MATRIX_HEADER)]
    lines += ["| " + " | ".join(matrix_columns(row)) + " |" for row in report["rows"]]
    return "\n".join(lines) + "\n"


def matrix_doc(report: dict[str, Any], command: str) -> str:
    """docs/benchmarks/cpu.md: the machine, the command, the table, the peaks and floors."""
    m, s, machine = report["model"], report["settings"], report["machine"]
    rates = ", ".join(
        f"{k} {v / 1e9:.3g}" if v else f"{k} -" for k, v in report["peak_rates"].items()
    )
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    load = machine.get("load_avg")
    lines = [
        f"# CPU benchmark matrix: ResTv2-{m['variant']} @ {m['image_size']}",
        "",
        "Generated by (from the repository root):",
        "",
        f"    {command}",
        "",
        f"- Machine: {describe_machine(machine)}; {machine['os']}",
        f"- Load average when it ran: {', '.join(f'{v:.1f}' for v in load) if load else '-'}",
        f"- Batch {s['batch']}, {s['threads']} threads, {s['warmup']} warm-up + {s['runs']} "
        f"timed calls per row, interleaved round-robin in blocks of {BLOCK} (each after one "
        "untimed settling call); latency = median.",
        f"- Weights: {m['weights'] or 'random (parity is meaningful, accuracy is not)'}",
        f"- Peak GEMM rates through torch, same threads, timed in the same rounds "
        f"(GFLOP/s; int8 GOP/s): {rates}",
        f"- Model: {m['macs'] / 1e9:.2f} GMACs per image; floor = 2 x MACs x batch / peak rate.",
        f"- Versions: {versions}",
        "",
        matrix_markdown(report),
    ]
    failed = [r for r in report["rows"] if r.get("status") == "failed"]
    lines += [f"- {r['key']} failed: {r['error']}" for r in failed]
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += [
        "",
        "How to read it: parity is the mean cosine of the logits and the top-1 agreement "
        "against PyTorch fp32 on the parity photos, from each artifact's manifest parity "
        "record (FAILED marks a row past the project's thresholds; the top-1 shown counts every "
        "photo, the gate only clear calls, docs/manifest.md). Accuracy is top-1 on "
        "labelled data when given (else -). Speed-up is against PyTorch eager fp32 measured "
        "in the same rounds. The floor is the time the model's MACs would take at the "
        "machine's measured peak GEMM rate for that precision (fp16 rows: the better 16-bit "
        "rate); a row can only approach it, and on a loaded machine the measured peak (and so "
        "the floor) is itself noisy. All rows and GEMMs are interleaved round-robin, so "
        "background load slows them alike; absolute numbers on a shared machine are still "
        "pessimistic. On Linux a coreml row runs the MIL reference interpreter (numpy), not "
        "Core ML.",
    ]
    return "\n".join(lines) + "\n"


def plot_matrix(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Latency (x) against accuracy when measured, else parity cosine (y), one point per row."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RunnerUnavailableError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    rows = [r for r in report["rows"] if r.get("median_ms") is not None]
    use_acc = any("top1" in (r.get("accuracy") or {}) for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        if use_acc:
            y = (row.get("accuracy") or {}).get("top1")
        else:
            y = (row.get("parity") or {}).get("cosine_mean")
        if y is None:
            continue
        ax.scatter(row["median_ms"], y)
        ax.annotate(
            row["key"], (row["median_ms"], y), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    m = report["model"]
    ax.set_xlabel(f"latency ms (batch {report['settings']['batch']}, median)")
    ax.set_ylabel("top-1 accuracy" if use_acc else "parity: mean cosine vs PyTorch fp32")
    ax.set_title(f"ResTv2-{m['variant']} @ {m['image_size']}: {report['machine']['cpu']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _main(argv: list[str] | None = None) -> int:
    """``python -m restv2_edge.bench --peak-memory FOLDER``: the memory probe's child."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m restv2_edge.bench")
    parser.add_argument("--peak-memory", required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        result = _memory_child(args.peak_memory, args.threads, args.batch, args.calls)
    except RestV2EdgeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
