"""What machine a benchmark ran on: CPU model, usable cores, ISA flags, package versions.

Every report carries this so a number can be read against the hardware and the runtime
versions that produced it.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

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
#: packages behind every row whatever the target (torchao: the PT2E int8 recipes)
BASE_PACKAGES = ("torch", "numpy", "torchao")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    """From /proc/cpuinfo, with lscpu filling whatever it lacks."""
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
    return model, flags


def cpu_id() -> str | None:
    """x86 ``cpu family`` and ``model`` from /proc/cpuinfo (``family 26, model 2``): a VM
    that names its CPU only "AMD EPYC" still tells Zen 4 (family 25) from Zen 5 (26)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    found: dict[str, str] = {}
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("cpu family", "model") and key not in found:
            found[key] = value.strip()
        if not line.strip() and found:
            break  # the first processor's block is enough
    if "cpu family" not in found:
        return None
    return f"family {found['cpu family']}, model {found.get('model', '?')}"


def cpu_kind(machine: dict[str, Any]) -> str:
    """A short name for the CPU kind of a ``machine_info`` record, for per-machine report
    files: ``intel-amx``, ``zen5``, ``zen4``, else the CPU name and id as a slug."""
    isa, name = set(machine.get("isa") or []), str(machine.get("cpu") or "")
    family = (machine.get("cpu_id") or "").partition(",")[0].removeprefix("family ").strip()
    if "amx_tile" in isa:
        return "intel-amx"
    if "AMD" in name and family == "26":
        return "zen5"
    if "AMD" in name and family == "25" and "avx512f" in isa:
        return "zen4"
    words = re.findall(r"[a-z0-9]+", f"{name} {machine.get('cpu_id') or ''}".lower())
    return "-".join(w for w in words if w not in ("r", "tm", "processor", "cpu")) or "unknown"


def machine_info() -> dict[str, Any]:
    """CPU model, cores and ISA flags, OS, Python and the load average right now."""
    model, flags = _cpu_model_and_flags()
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cpu_id": cpu_id(),
        "arch": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "isa": [flag for flag in ISA_FLAGS if flag in flags],
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def version_packages() -> tuple[str, ...]:
    """torch and numpy, then the packages each target's converter declares, in target order."""
    from restv2_edge.converters.base import get_converter, target_names

    names = list(BASE_PACKAGES[:2])
    for target in target_names():
        names += [p for p in get_converter(target).packages if p not in names]
    names += [p for p in BASE_PACKAGES[2:] if p not in names]
    return tuple(names)


def package_versions() -> dict[str, str]:
    """Installed versions of the runtimes, from package metadata (no backend is imported)."""
    found = {}
    for name in version_packages():
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    from restv2_edge import __version__

    return {"restv2_edge": __version__, **found}


def describe_machine(machine: dict[str, Any]) -> str:
    """One line for table captions and docs: CPU, usable cores, ISA flags."""
    isa = ", ".join(machine["isa"]) or "no listed ISA extensions"
    ident = f"{machine['cpu_id']}; " if machine.get("cpu_id") else ""
    return f"{machine['cpu']} ({ident}{machine['usable_cores']} usable cores; {isa})"
