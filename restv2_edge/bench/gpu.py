"""GPU reference numbers: PyTorch throughput and latency of ResTv2 on one CUDA device.

Runs from a plain checkout with only torch and numpy installed::

    PYTHONPATH=. python -m restv2_edge.bench.gpu --device cuda --variant T S B L \\
        --image-size 224 384 --batch 1 64 256 --dtype fp32 tf32 fp16 bf16 [--compile]

(``restv2-edge bench gpu ...`` takes the same options and calls ``run``; the older
``python -m restv2_edge.gpu_bench`` and ``restv2-edge bench --device cuda`` still work.)
Nothing here imports more than torch, numpy and restv2_edge.config/model/complexity/errors/
publish. fp16/bf16 run under ``torch.autocast`` with fp32 weights (the usual way throughput
tables are measured); fp32 turns TF32 off, tf32 turns it on for matmuls and convolutions.
The floor of each row is model MACs (``restv2_edge.complexity``) x batch x 2 over the best
rate of a large matmul in the same dtype on the same device. ``--device cpu`` runs the same
code on the CPU (a smoke test, not a reference). torch is imported inside the functions, so
the options and defaults here cost nothing to import (the CLI's ``--help`` reads them).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from restv2_edge.config import VARIANTS, ModelConfig, resolve_config, variant_name
from restv2_edge.errors import RestV2EdgeError, RunnerUnavailableError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: published throughput (images/s, V100, PyTorch) from the ResTv2 paper
PAPER_V100 = {
    224: {"T": 826, "S": 687, "B": 582, "L": 415},
    384: {"T": 319, "S": 256, "B": 210, "L": 141},
}
DTYPES = ("fp32", "tf32", "fp16", "bf16")
#: defaults shared by ``python -m restv2_edge.bench.gpu`` and ``restv2-edge bench gpu``
DEFAULTS: dict[str, Any] = {
    "device": "cuda",
    "variant": list(VARIANTS),
    "image_size": [224, 384],
    "batch": [1, 64, 256],
    "dtype": list(DTYPES),
    "warmup": 10,
    "runs": 30,
    "matmul_size": 8192,
}


def parse_variant(text: str) -> ModelConfig:
    """T/S/B/L or an inline JSON config (a smoke test's tiny model)."""
    if text.lstrip().startswith("{"):
        try:
            return resolve_config(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RunnerUnavailableError(f"variant config is not valid JSON: {exc}") from None
    return resolve_config(text)


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _autocast(device: torch.device, dtype: str) -> Any:
    import torch

    if dtype in ("fp16", "bf16"):
        kind = torch.float16 if dtype == "fp16" else torch.bfloat16
        return torch.autocast(device.type, dtype=kind)
    return nullcontext()


def check_device(name: str) -> torch.device:
    """The torch device, or a one-line error saying why CUDA cannot be used here."""
    import torch

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        built = torch.version.cuda
        why = (
            f"torch {torch.__version__} is a CPU-only build"
            if built is None
            else f"torch {torch.__version__} (CUDA {built}) finds no CUDA device"
        )
        raise RunnerUnavailableError(
            f"no CUDA GPU here: {why}; run on a machine with an NVIDIA GPU "
            "(or --device cpu for a smoke run)"
        )
    if device.type not in ("cuda", "cpu"):
        raise RunnerUnavailableError(f"unsupported device {name!r}; use cuda or cpu")
    return device


def peak_matmul_rate(device: torch.device, dtype: str, size: int, reps: int = 5) -> float | None:
    """Best FLOP/s of a size^3 matmul in ``dtype`` (tf32: fp32 with TF32 allowed)."""
    import torch

    kind = {
        "fp32": torch.float32,
        "tf32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }[dtype]
    _set_tf32(dtype == "tf32")
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(size, size, generator=generator).to(device, kind)
        b = torch.randn(size, size, generator=generator).to(device, kind)
        torch.mm(a, b)
        _sync(device)
    except RuntimeError:
        return None
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def time_model(
    model: nn.Module, x: torch.Tensor, dtype: str, warmup: int, runs: int
) -> list[float]:
    """Seconds per forward pass (device-synchronized), after ``warmup`` untimed passes."""
    import torch

    device = x.device
    _set_tf32(dtype == "tf32")
    times = []
    with torch.inference_mode(), _autocast(device, dtype):
        for index in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if index >= warmup:
                times.append(time.perf_counter() - start)
    return times


def run(
    variants: list[str],
    image_sizes: list[int],
    batches: list[int],
    dtypes: list[str],
    device: str = DEFAULTS["device"],
    compile_model: bool = False,
    warmup: int = DEFAULTS["warmup"],
    runs: int = DEFAULTS["runs"],
    matmul_size: int = DEFAULTS["matmul_size"],
) -> dict[str, Any]:
    """One row per (variant, image size, dtype, batch): throughput, latency, floor, paper."""
    import numpy as np
    import torch

    from restv2_edge.complexity import total_macs
    from restv2_edge.model import ResTV2

    dev = check_device(device)
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise RunnerUnavailableError(f"unknown dtype(s) {unknown}; choose {', '.join(DTYPES)}")
    if warmup < 0 or runs < 1 or min(batches) < 1:
        raise RunnerUnavailableError("need warmup >= 0, runs >= 1 and batch sizes >= 1")
    torch.manual_seed(0)
    rates = {dtype: peak_matmul_rate(dev, dtype, matmul_size) for dtype in dtypes}
    rows = []
    for text in variants:
        config = parse_variant(text)
        name = variant_name(config) or "custom"
        for size in image_sizes:
            model = ResTV2(config, size).eval()
            macs = total_macs(model)
            model = model.to(dev)
            runnable = torch.compile(model) if compile_model else model
            for dtype in dtypes:
                for batch in batches:
                    row = {
                        "variant": name,
                        "image_size": size,
                        "dtype": dtype,
                        "batch": batch,
                        "gmacs": macs / 1e9,
                        "paper_v100_img_s": PAPER_V100.get(size, {}).get(name),
                    }
                    rows.append(row)
                    try:
                        x = torch.randn(batch, config.in_chans, size, size, device=dev)
                        times = time_model(runnable, x, dtype, warmup, runs)
                    except torch.cuda.OutOfMemoryError:
                        row["error"] = "out of memory"
                        torch.cuda.empty_cache()
                        continue
                    median = float(np.median(times))
                    rate = rates.get(dtype)
                    row.update(
                        median_ms=median * 1e3,
                        p90_ms=float(np.percentile(times, 90)) * 1e3,
                        images_per_s=batch / median,
                        floor_ms=2.0 * macs * batch / rate * 1e3 if rate else None,
                    )
                    row["floor_img_s"] = batch / (row["floor_ms"] / 1e3) if rate else None
            del model, runnable
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {
        "kind": "gpu",
        "device": describe_device(dev),
        "versions": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "settings": {
            "warmup": warmup,
            "runs": runs,
            "compile": compile_model,
            "matmul_size": matmul_size,
            "mixed_precision": "torch.autocast for fp16/bf16 (fp32 weights)",
        },
        "peak_tflops": {k: (v / 1e12 if v else None) for k, v in rates.items()},
        "rows": rows,
    }


def describe_device(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        memory = props.total_memory / 2**30
        return f"{props.name} ({memory:.0f} GiB, {props.multi_processor_count} SMs)"
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table (no rich: this module must run with torch and numpy alone)."""
    header = [
        "variant",
        "size",
        "dtype",
        "batch",
        "img/s",
        "median ms",
        "p90 ms",
        "floor ms",
        "floor img/s",
        "paper V100 img/s",
    ]
    lines = [header]
    for r in report["rows"]:
        if "error" in r:
            lines.append(
                [
                    r["variant"],
                    str(r["image_size"]),
                    r["dtype"],
                    str(r["batch"]),
                    r["error"],
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        lines.append(
            [
                r["variant"],
                str(r["image_size"]),
                r["dtype"],
                str(r["batch"]),
                f"{r['images_per_s']:.0f}",
                f"{r['median_ms']:.2f}",
                f"{r['p90_ms']:.2f}",
                "-" if r["floor_ms"] is None else f"{r['floor_ms']:.2f}",
                "-" if r["floor_img_s"] is None else f"{r['floor_img_s']:.0f}",
                "-" if r["paper_v100_img_s"] is None else str(r["paper_v100_img_s"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        f"{report['device']}; torch {report['versions']['torch']}; "
        f"compile={report['settings']['compile']}"
    ]
    peaks = ", ".join(f"{k} {v:.3g}" if v else f"{k} -" for k, v in report["peak_tflops"].items())
    text.append(f"peak matmul TFLOP/s: {peaks}")
    for line in lines:
        text.append("  ".join(cell.rjust(width) for cell, width in zip(line, widths)))
    return "\n".join(text)


def build_parser() -> argparse.ArgumentParser:
    """The module's own parser (argparse: this module must run without click)."""
    parser = argparse.ArgumentParser(
        prog="python -m restv2_edge.bench.gpu",
        description="PyTorch throughput/latency of ResTv2 on a CUDA GPU, with the paper's V100 "
        "numbers and the GPU's matmul floor.",
    )
    d = DEFAULTS
    parser.add_argument("--device", default=d["device"], help="cuda, cuda:N, or cpu (smoke run)")
    parser.add_argument("--variant", nargs="+", default=d["variant"], help="T S B L or JSON")
    parser.add_argument("--image-size", nargs="+", type=int, default=d["image_size"])
    parser.add_argument("--batch", nargs="+", type=int, default=d["batch"])
    parser.add_argument("--dtype", nargs="+", default=d["dtype"], choices=DTYPES)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--warmup", type=int, default=d["warmup"])
    parser.add_argument("--runs", type=int, default=d["runs"])
    parser.add_argument("--matmul-size", type=int, default=d["matmul_size"])
    parser.add_argument("--json", dest="json_file", default=None, help="write the report here")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run, print the table (stdout), write --json; raises on failure."""
    from restv2_edge.publish import check_report_path, write_report

    args = build_parser().parse_args(argv)
    if args.json_file:
        check_report_path(args.json_file)  # before minutes of measuring
    report = run(
        args.variant,
        args.image_size,
        args.batch,
        args.dtype,
        args.device,
        args.compile,
        args.warmup,
        args.runs,
        args.matmul_size,
    )
    if args.json_file:
        write_report(args.json_file, json.dumps(report, indent=2) + "\n")
    sys.stdout.write(format_table(report) + "\n")
    return report


def entry(argv: list[str] | None = None) -> int:
    """``python -m`` entry: one ``error:`` line and exit status 1 on a project error."""
    try:
        main(argv)
    except RestV2EdgeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(entry())
