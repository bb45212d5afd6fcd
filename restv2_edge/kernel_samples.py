"""Per-kernel CPU time of this process from Linux perf sampling.

For a runtime whose Python bindings have no per-op profiler (LiteRT's Interpreter), the
symbols the CPU is executing still say where the time goes: XNNPACK's microkernels carry
their operation in their names (``xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast`` is a
fully connected layer or a 1x1 convolution, ``xnn_f32_vgelu_ukernel_...`` a GELU), and
TFLite's own kernels (Eigen, ruy, ``tflite::``) are the ops the delegate left out.

``sample_calls`` attaches ``perf record`` to this process with its events off, switches them
on only around the profiled calls (perf's control fifo, acknowledged, so nothing before or
after is counted), and samples the CPU clock every ``PERIOD_NS`` of CPU time on every thread.
A kernel's time per inference is its samples' CPU time divided by the runtime's thread
count: a kernel that every thread runs shows its wall time, and the sum can be set beside
the end-to-end latency (``profile.sum_check``) as for the runtimes' own profilers.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from restv2_edge.converters.base import OpProfile, OpTime
from restv2_edge.errors import ProfileError

#: one sample per this much CPU time (ns) of a thread
PERIOD_NS = 250_000
#: seconds to wait for perf to attach and acknowledge a command
ATTACH_TIMEOUT_S = 20.0
#: the Debian package that provides ``perf``
PERF_PACKAGE = "linux-perf"
#: XNNPACK's microkernels: ``xnn_<family>_ukernel_<tile>__<isa>``
_MICROKERNEL = re.compile(r"^xnn_(?P<family>.+?)_ukernel")
#: symbols of TFLite's own CPU kernels (what runs outside the XNNPACK delegate)
_TFLITE_KERNEL = ("Eigen::", "tflite::", "ruy::", "gemmlowp::")
_THREAD_POOL = (
    "pthreadpool",
    "thread_main",
    "thread_parallelize",
    "ruy::Thread",
    "Eigen::ThreadPool",
)


def perf_executable() -> str:
    """``perf`` on PATH, or ProfileError saying how to get it."""
    path = shutil.which("perf")
    if path is None:
        raise ProfileError(
            f"kernel sampling needs Linux perf on PATH (Debian/Ubuntu: apt install {PERF_PACKAGE})"
        )
    return path


def perf_version(perf: str) -> str:
    """``perf --version``'s number (``6.1.187``), or ``?``."""
    result = subprocess.run([perf, "--version"], capture_output=True, text=True, check=False)
    words = result.stdout.split()
    return words[-1] if words else "?"


def kernel_group(symbol: str, library: str) -> tuple[str, bool | None]:
    """The op type a sampled symbol counts under, and whether a delegate ran it (True: an
    XNNPACK kernel; False: TFLite's own kernel; None: neither, e.g. Python or the kernel)."""
    match = _MICROKERNEL.match(symbol)
    if match:
        return f"XNNPACK {match.group('family')}", True
    if symbol.startswith(_THREAD_POOL):
        return "thread pool (dispatch, waiting)", None
    if symbol.startswith("xnn_") or symbol.startswith("compute_"):
        return "XNNPACK runtime (operator dispatch)", True
    if symbol.startswith(_TFLITE_KERNEL):
        return "TFLite builtin kernels (outside the delegate)", False
    if library == "[kernel.kallsyms]":
        return "operating system kernel", None
    if library == "[vdso]":
        return "clock reads (vDSO)", None
    if library.startswith("libc.so") or library.startswith("libm.so"):
        return "C library (memory copies)", None
    if library.startswith("python") or library.startswith("libpython"):
        return "Python interpreter", None
    return f"other ({library})", None


def parse_samples(script: str) -> Counter[tuple[str, str]]:
    """Sample counts per (symbol, library) from ``perf script -F ip,sym,dso`` lines
    (``<ip> <symbol> (<library path>)``; the symbol may hold spaces and parentheses)."""
    counts: Counter[tuple[str, str]] = Counter()
    for line in script.splitlines():
        line = line.strip()
        if not line:
            continue
        head, _, library = line.rpartition(" (")
        parts = head.split(None, 1)
        symbol = parts[1].strip() if len(parts) == 2 else "[unknown]"
        counts[(symbol, Path(library.rstrip(")")).name or "[unknown]")] += 1
    return counts


def kernel_times(counts: Counter[tuple[str, str]], runs: int, threads: int) -> tuple[OpTime, ...]:
    """One ``OpTime`` per sampled symbol: CPU ms per inference over ``threads``."""
    scale = PERIOD_NS / 1e6 / runs / threads
    ops = []
    for (symbol, library), samples in counts.items():
        op_type, delegated = kernel_group(symbol, library)
        ops.append(OpTime(symbol, op_type, samples * scale, delegated))
    return tuple(ops)


def sample_calls(call: Callable[[], Any], runs: int, threads: int, runtime: str) -> OpProfile:
    """``runs`` calls of ``call`` under perf sampling; the profile of the kernels they ran."""
    if runs < 1:
        raise ProfileError(f"profile needs at least one run (got {runs})")
    perf = perf_executable()
    with tempfile.TemporaryDirectory(prefix="restv2-perf-") as folder:
        data = Path(folder) / "perf.data"
        _record(perf, call, runs, Path(folder), data)
        script = subprocess.run(
            [perf, "script", "-i", str(data), "-F", "ip,sym,dso"],
            capture_output=True,
            text=True,
            check=False,
        )
    if script.returncode != 0:
        raise ProfileError(f"perf script failed: {_first(script.stderr)}")
    counts = parse_samples(script.stdout)
    if not counts:
        raise ProfileError("perf recorded no sample of the profiled calls")
    return OpProfile(
        profiler=f"Linux perf {perf_version(perf)} sampling of {runtime}'s kernels",
        runs=runs,
        ops=kernel_times(counts, runs, threads),
        notes=(
            f"CPU-clock samples every {PERIOD_NS / 1e6:g} ms of CPU time on every thread of "
            f"this process; ms = a kernel's CPU time per inference / {threads} threads",
            "op types are kernel families (XNNPACK f32_gemm_minmax: fully connected layers "
            "and 1x1 convs; f32_igemm_minmax: dense convs; f32_dwconv_minmax: depthwise "
            "convs; x32_transposec: transposes), not graph nodes; top ops are symbols",
            "delegated / fallback count kernels: XNNPACK's against TFLite's own "
            "(Eigen, ruy, tflite::), the ops the delegate left out",
        ),
        unit="kernel",
    )


def _record(perf: str, call: Callable[[], Any], runs: int, folder: Path, data: Path) -> None:
    control, ack = folder / "control", folder / "ack"
    os.mkfifo(control)
    os.mkfifo(ack)
    log = folder / "perf.log"
    command = [
        perf, "record", "-q", "-e", "cpu-clock", "-c", str(PERIOD_NS),
        "-p", str(os.getpid()), "-D", "-1", "--control", f"fifo:{control},{ack}",
        "-o", str(data),
    ]  # fmt: skip
    # Both ends opened read-write, so neither open waits for perf.
    control_fd, ack_fd = os.open(control, os.O_RDWR), os.open(ack, os.O_RDWR)
    with open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _command(process, control_fd, ack_fd, "enable", log)
        for _ in range(runs):
            call()
        _command(process, control_fd, ack_fd, "disable", log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=ATTACH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(control_fd)
        os.close(ack_fd)
    if not data.is_file():
        raise ProfileError(f"perf record wrote nothing: {_first(log.read_text(errors='replace'))}")


def _command(
    process: subprocess.Popen[bytes], control: int, ack: int, word: str, log: Path
) -> None:
    """Send ``word`` to perf's control fifo and wait for its ``ack``."""
    os.write(control, f"{word}\n".encode())
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _first(log.read_text(errors="replace")) or f"exit status {process.returncode}"
            raise ProfileError(f"perf record could not attach to this process: {reason}")
        ready, _, _ = select.select([ack], [], [], 0.1)
        if ready and os.read(ack, 16).startswith(b"ack"):
            return
    raise ProfileError(f"perf record did not acknowledge {word!r} in {ATTACH_TIMEOUT_S:g} s")


def _first(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""
