"""Time the Core ML export and the MIL interpreter on this machine (numbers for docs/coreml.md).

    python scripts/coreml_timing.py --variant T --image-size 224 --runs 3

Builds the variant with random weights, exports it to Core ML (fp16 and fp32 programs, parity
gate not included), then runs one image through the interpreter ``--runs`` times per program,
and converts both graph forms (native, decomposed) to compare their programs.
Prints one JSON object: the machine (lscpu model, ISA flags, load average), wall and process
CPU seconds. On a shared machine the CPU seconds are the steadier number.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, measure, return the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="T")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.converters.coreml import CONVERTER
    from restv2_edge.converters.mil import Program

    from restv2_edge.bench.machine import machine_info
    from restv2_edge.export import export_graph
    from restv2_edge.factory import create_model

    model = create_model(args.variant, args.image_size)
    example = torch.randn(1, 3, args.image_size, args.image_size)
    x = np.random.default_rng(0).standard_normal(tuple(example.shape)).astype(np.float32)
    report: dict[str, Any] = {"variant": args.variant, "image_size": args.image_size}
    report["machine"] = machine_info()  # includes load_avg at the start
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp16", "fp32"):
            work = Path(tmp) / precision
            work.mkdir()
            graph = export_graph(model, "native", False)
            request = ExportRequest(precision=precision)
            _, wall, cpu = _timed(
                lambda g=graph, w=work, r=request: CONVERTER.export(g, example, w, r, print_none)
            )
            program, load_wall, _ = _timed(lambda w=work: Program.load(w / "model.mlpackage"))
            runs = [
                _timed(lambda p=program, f=precision == "fp16": p.run({"input": x}, fp16=f))
                for _ in range(args.runs)
            ]
            report[precision] = {
                "export_wall_s": round(wall, 2),
                "export_cpu_s": round(cpu, 2),
                "interpreter_load_s": round(load_wall, 2),
                "interpreter_wall_s": [round(r[1], 2) for r in runs],
                "interpreter_cpu_s": [round(r[2], 2) for r in runs],
            }
    report["graph_forms"] = graph_forms(model, example)
    report["machine"]["load_average_1m_after"] = (
        round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    )
    return report


def graph_forms(model: Any, example: Any) -> dict[str, Any]:
    """Op counts of the fp16 program per graph form, or why the form does not convert."""
    from restv2_edge.converters.base import ExportRequest
    from restv2_edge.converters.coreml import CONVERTER

    from restv2_edge.errors import ExportError
    from restv2_edge.export import export_graph

    forms: dict[str, Any] = {}
    for form in ("native", "decomposed"):
        with tempfile.TemporaryDirectory() as tmp:
            graph = export_graph(model, form, False)
            try:
                result = CONVERTER.export(
                    graph, example, Path(tmp), ExportRequest(precision="fp16"), print_none
                )
            except ExportError as exc:
                forms[form] = {"error": str(exc)}
                continue
            forms[form] = {"ops": result.info["ops"], "op_types": result.info["op_types"]}
    return forms


def print_none(step: str) -> None:
    """Progress callback that ignores the step names."""


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
