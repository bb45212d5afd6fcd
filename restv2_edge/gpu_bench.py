"""``python -m restv2_edge.gpu_bench``: the older name of ``python -m restv2_edge.bench.gpu``.

Kept so the documented command and imports of this module keep working; the code is in
``restv2_edge.bench.gpu``.
"""

from __future__ import annotations

import sys

from restv2_edge.bench.gpu import (
    DEFAULTS,
    DTYPES,
    PAPER_V100,
    build_parser,
    check_device,
    describe_device,
    entry,
    format_table,
    main,
    parse_variant,
    peak_matmul_rate,
    run,
    time_model,
)
from restv2_edge.complexity import total_macs as model_macs

__all__ = [
    "DEFAULTS",
    "DTYPES",
    "PAPER_V100",
    "build_parser",
    "check_device",
    "describe_device",
    "entry",
    "format_table",
    "main",
    "model_macs",
    "parse_variant",
    "peak_matmul_rate",
    "run",
    "time_model",
]

if __name__ == "__main__":
    sys.exit(entry())
