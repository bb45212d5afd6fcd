"""Benchmarks, one job per module.

- ``machine``: CPU model, usable cores, ISA flags, package versions;
- ``timing``: interleaved round-robin timing in blocks, latency statistics;
- ``memory``: peak memory of an artifact in a fresh process (``__main__`` is its child);
- ``floors``: peak GEMM rates and the MAC floors they give;
- ``artifacts``: ``bench ARTIFACT...``; ``matrix``: ``bench matrix``;
- ``report``: tables, the markdown doc, the plot;
- ``gpu``: ``bench gpu`` (torch and numpy only); ``cli``: the click commands.

The names in ``__all__`` are importable from here (``from restv2_edge.bench import
machine_info``); each loads its module on first use, so importing the package, or its CLI
for ``restv2-edge --help``, imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module (of this package) that defines it
_EXPORTS = {
    "artifact_bytes": "artifacts",
    "bench_artifacts": "artifacts",
    "floor_ms": "floors",
    "gemm_cases": "floors",
    "peak_rates": "floors",
    "rate_for": "floors",
    "rates_from": "floors",
    "ISA_FLAGS": "machine",
    "describe_machine": "machine",
    "machine_info": "machine",
    "package_versions": "machine",
    "usable_cores": "machine",
    "version_packages": "machine",
    "FIXTURE_NAME": "matrix",
    "EagerRunner": "matrix",
    "default_accuracy_data": "matrix",
    "fixture_checkpoint_path": "matrix",
    "matrix_plan": "matrix",
    "run_matrix": "matrix",
    "MEMORY_METHOD": "memory",
    "peak_memory": "memory",
    "MATRIX_HEADER": "report",
    "matrix_columns": "report",
    "matrix_doc": "report",
    "matrix_markdown": "report",
    "matrix_png": "report",
    "plot_matrix": "report",
    "render_artifacts": "report",
    "render_matrix": "report",
    "BLOCK": "timing",
    "ORDER": "timing",
    "bench_input": "timing",
    "check_counts": "timing",
    "summarize": "timing",
    "time_round_robin": "timing",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
