"""Floors: the time a model's MACs would take at the machine's peak GEMM rate.

The peak is what torch reaches on a large GEMM with the same thread count (fp32: the faster
of ``torch.mm`` and oneDNN's inner product through ``torch.utils.mkldnn``; bf16/fp16 matmul;
int8 ``torch._int_mm``), so a row's distance from its floor says how much of the machine its
runtime uses. fp32 needs both: on an AMD Zen 5 CPU ``torch.mm`` (MKL) reaches about half of
oneDNN's rate (``scripts/runtime_ideas.py gemm``, docs/graph-forms.md), so it alone can put
the "floor" above what the runtimes achieve.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from restv2_edge.bench.timing import time_round_robin

GemmCases = dict[str, tuple[Callable[[], Any], float]]
RATE_DTYPES = ("fp32", "bf16", "fp16", "int8")
#: a case named ``DTYPE-KERNEL`` is another kernel for DTYPE; the dtype's rate is the best one
KERNEL_SEPARATOR = "-"


def gemm_cases(size: int = 1024) -> GemmCases:
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
        onednn = _onednn_linear(a32, b32)
        if onednn is not None:
            cases[f"fp32{KERNEL_SEPARATOR}onednn"] = (onednn, 2.0 * size**3)
    return cases


def _onednn_linear(a: Any, b: Any) -> Callable[[], Any] | None:
    """``a @ b`` as oneDNN's fp32 inner product (a torch.utils.mkldnn linear on an mkldnn
    tensor), where this torch build has oneDNN."""
    import torch
    from torch.utils import mkldnn

    if not torch.backends.mkldnn.is_available():
        return None
    layer = torch.nn.Linear(a.shape[1], b.shape[1], bias=False).eval().requires_grad_(False)
    layer.weight.copy_(b.t())
    try:
        linear, x = mkldnn.to_mkldnn(layer), a.to_mkldnn()
        linear(x)
    except RuntimeError:
        return None
    return lambda: linear(x)


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


def rates_from(cases: GemmCases, times: dict[str, list[float]]) -> dict[str, float | None]:
    """Peak rate per dtype from the fastest call of its fastest kernel (None where the dtype
    has no kernel)."""
    rates: dict[str, float | None] = {}
    for dtype in RATE_DTYPES:
        found = [
            ops / min(times[name])
            for name, (_, ops) in cases.items()
            if name.split(KERNEL_SEPARATOR)[0] == dtype
        ]
        rates[dtype] = max(found) if found else None
    return rates


def rate_for(precision: str, rates: dict[str, float | None]) -> tuple[str, float | None]:
    """The GEMM rate that bounds a precision: fp16 rows use the better 16-bit rate."""
    if precision == "int8":
        return "int8", rates.get("int8")
    if precision in ("fp16", "bf16"):
        options = [(k, rates.get(k)) for k in ("bf16", "fp16") if rates.get(k)]
        return max(options, key=lambda item: item[1]) if options else ("bf16", None)
    return "fp32", rates.get("fp32")


def floor_ms(macs: int, batch: int, rate: float | None) -> float | None:
    """2 x MACs x batch at ``rate`` ops/s, in ms (None without a rate)."""
    return None if not rate else 2.0 * macs * batch / rate * 1e3
