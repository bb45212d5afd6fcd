"""The V upsampling written three ways, per target and precision, timed interleaved.

``native`` runs the upsampling conv as the official grouped conv (each of C groups makes r*r
channels, then depth-to-space); ``native-depthwise`` first repeats every channel r*r times
(a broadcast multiply by ones) and runs the same filters as a depthwise conv, multiplier 1;
``native-convtranspose`` runs conv and depth-to-space as one depthwise transposed conv
(stride r, kernel 3r) with the filters rearranged (``restv2_edge.model.GraphForm``). Same
weights, same function; every artifact comes from the export pipeline (``export_artifact``,
parity gate on photos included) with only the graph form forced, and all of them run
through the project's runners in one process, round-robin (``restv2_edge.bench.timing``).
Reported: each form's median and its per-round ratio to native (median over rounds, so a
machine drifting in speed cancels out).

    python scripts/compare_upsampling.py --work /tmp/upsampling --runs 60 \\
        --pairs openvino/fp32,openvino/fp16,openvino/bf16,openvino/int8,onnx/fp32,onnx/int8,\\
litert/fp32 --markdown docs/benchmarks/upsampling.md --json docs/benchmarks/upsampling.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reference_restv2 import randomize_, reference_model
from restv2_edge.calibration.recipes import supported_precisions
from restv2_edge.converters.base import ExportRequest, get_converter

from restv2_edge.artifact import open_artifact
from restv2_edge.bench.machine import describe_machine, machine_info
from restv2_edge.bench.peers import calibration_set
from restv2_edge.bench.timing import BLOCK, per_round_ratio, summarize, time_round_robin
from restv2_edge.checkpoint import load_official_into
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model

FORMS = ("native", "native-depthwise", "native-convtranspose")


def build_model(variant: str, size: int, seed: int) -> Any:
    """The project model carrying randomized official-layout weights."""
    reference = randomize_(reference_model(variant), seed)
    model = create_model(variant, size)
    load_official_into(model, reference.state_dict())
    return model.eval()


def export_in_form(
    model: Any, target: str, precision: str, form: str, folder: Path, calibration: Any
) -> dict[str, Any]:
    """``export_artifact`` with the converter's graph form set to ``form``; the parity line."""
    converter = get_converter(target)
    chosen = converter.graph_form_for
    converter.graph_form_for = lambda request: form  # type: ignore[method-assign]
    try:
        request = ExportRequest(precision=precision)
        if precision == "int8":
            request.calibration = calibration()
            request.quantization = {}
        _, manifest = export_artifact(model, target, folder, request, force=True)
    finally:
        converter.graph_form_for = chosen  # type: ignore[method-assign]
    parity = manifest.parity or {}
    return {"graph_form": manifest.graph_form, "parity": parity.get("status")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="T")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--targets", default="openvino,onnx")
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--pairs", help="TARGET/PRECISION,... instead of targets x precisions")
    parser.add_argument("--work", type=Path, required=True, help="artifact folder (reused)")
    parser.add_argument("--runs", type=int, default=40, help="timed calls per artifact")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rebuild", action="store_true", help="export again")
    parser.add_argument("--forms", default=",".join(FORMS), help="native first (the base)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    args.forms = args.forms.split(",")
    if args.forms[0] != "native" or not set(args.forms) <= set(FORMS):
        parser.error(f"--forms: native first, then any of {', '.join(FORMS[1:])}")
    model = build_model(args.variant, args.image_size, args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    progress = lambda step: print(step, file=sys.stderr, flush=True)  # noqa: E731
    calibration = lambda: calibration_set(args.work, model, None, 64, progress)  # noqa: E731
    pairs = [
        (target, precision)
        for target in args.targets.split(",")
        for precision in args.precisions.split(",")
        if precision in supported_precisions(target)
    ]
    if args.pairs:
        pairs = [tuple(pair.split("/", 1)) for pair in args.pairs.split(",")]
    builds: dict[str, Any] = {}
    calls = {}
    example = np.random.default_rng(0).standard_normal((1, 3, args.image_size, args.image_size))
    example = example.astype(np.float32)
    for target, precision in pairs:
        for form in args.forms:
            key = f"{target}/{precision}/{form}"
            folder = args.work / key.replace("/", "-")
            if args.rebuild or not (folder / "manifest.json").is_file():
                progress(f"export {key}")
                export_in_form(model, target, precision, form, folder, calibration)
            manifest, runner = open_artifact(folder, threads=args.threads)
            builds[key] = {"graph_form": manifest.graph_form, **(manifest.parity or {})}
            calls[key] = lambda runner=runner: runner.run_batch(example)
    progress("timing")
    times = time_round_robin(calls, warmup=3, runs=args.runs, progress=lambda s: None, block=BLOCK)
    rows = []
    for target, precision in pairs:
        keys = {form: f"{target}/{precision}/{form}" for form in args.forms}
        rows.append(
            {
                "target": target,
                "precision": precision,
                "ms": {form: summarize(times[key], 1)["median_ms"] for form, key in keys.items()},
                "ratio": {
                    form: per_round_ratio(times, keys["native"], key)
                    for form, key in keys.items()
                    if form != "native"
                },
                "parity": {form: builds[key].get("status") for form, key in keys.items()},
            }
        )
    machine = machine_info()
    record = {"machine": machine, "variant": args.variant, "image_size": args.image_size,
              "threads": args.threads, "runs": args.runs, "rows": rows}  # fmt: skip
    load = ", ".join(f"{value:.2f}" for value in machine["load_avg"] or [])
    others = [form for form in args.forms if form != "native"]
    command = "python scripts/compare_upsampling.py " + shlex.join(sys.argv[1:])
    lines = [
        f"Generated by `{command}`",
        "",
        f"Machine: {describe_machine(machine)}; load average {load}; "
        f"ResTv2-{args.variant}@{args.image_size}, batch 1, {args.threads} threads, "
        f"{args.runs} timed calls per artifact in blocks of {BLOCK}; ratio = the form / "
        "native, per-round median.",
        "",
        "| target | precision | "
        + " | ".join(f"{form} ms" for form in args.forms)
        + " | "
        + " | ".join(f"{form} / native" for form in others)
        + " | parity |",
        "|---|---|" + "---|" * (len(args.forms) + len(others) + 1),
    ]
    for row in rows:
        cells = [row["target"], row["precision"]]
        cells += [f"{row['ms'][form]:.2f}" for form in args.forms]
        cells += [f"{row['ratio'][form]:.3f}" for form in others]
        cells.append(", ".join(map(str, row["parity"].values())))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
