"""Graph forms per runtime: project artifacts vs the official-structure reference, interleaved.

For ResTv2-T (random weights, the same for every graph) at 224, batch 1, this exports

- ``reference``: tests/reference_restv2.py's official-structure model, exported the plain way
  with each toolchain's defaults (torch.onnx dynamo / ov.convert_model / torch.export + XNNPACK);
- ``native`` and ``decomposed``: the project model in each graph form, through the project's
  converter for that runtime (the one the converter picks is the *project artifact*, exported
  with ``restv2_edge.export.export_artifact``, parity gate included, and timed);

then times all artifacts of one runtime with the timing ``restv2-edge bench`` uses
(``restv2_edge.bench.time_round_robin``: rounds in rotated order, each a block of calls per
artifact after one untimed settling call, so no thread pool is still spinning from the
previous artifact) through the project's runner classes with the same thread count, and
reports medians and the ratio project / reference. Writes a JSON record and a markdown table
(docs/graph-forms.md takes its numbers from here).

    python scripts/compare_graph_forms.py                     # 20 timed calls each
    python scripts/compare_graph_forms.py --runs 50 --runtimes executorch
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from reference_restv2 import randomize_, reference_model  # noqa: E402
from restv2_edge.converters.base import ExportRequest, get_converter  # noqa: E402

from restv2_edge.bench.machine import describe_machine, machine_info  # noqa: E402
from restv2_edge.bench.timing import BLOCK, ORDER, time_round_robin  # noqa: E402
from restv2_edge.checkpoint import load_official_into  # noqa: E402
from restv2_edge.export import artifact_model, build_manifest, export_artifact  # noqa: E402
from restv2_edge.factory import create_model  # noqa: E402

RUNTIMES = ("onnx", "openvino", "executorch")
FORMS = ("native", "decomposed")


def build_models(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, project) ResTv2-T@224 with the same random weights."""
    reference = randomize_(reference_model("T"), seed)
    project = create_model("T", 224)
    load_official_into(project, reference.state_dict())
    return reference.eval(), project.eval()


def example_input() -> torch.Tensor:
    return torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


# -- plain exports of the reference model (each toolchain's defaults) ----------------------


def export_reference(
    runtime: str, model: torch.nn.Module, folder: Path, static: bool = False
) -> Path:
    """``static`` (OpenVINO only): fix the input shape, as the project's converter does."""
    example = example_input()
    folder.mkdir(parents=True, exist_ok=True)
    if runtime == "onnx":
        path = folder / "reference.onnx"
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False)
    elif runtime == "openvino":
        import openvino as ov

        path = folder / ("reference-static.xml" if static else "reference.xml")
        shape = {"input": [list(example.shape)]} if static else {}
        converted = ov.convert_model(model, example_input=example, **shape)
        ov.save_model(converted, str(path), compress_to_fp16=False)
    else:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower
        from restv2_edge.converters.executorch import delegation_summary

        path = folder / "reference.pte"
        exported = torch.export.export(model, (example,))
        edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
        summary = delegation_summary(edge.exported_program())
        path.with_suffix(".delegation.json").write_text(json.dumps(summary))
        path.write_bytes(edge.to_executorch().buffer)
    return path


# -- project artifacts ---------------------------------------------------------------------


def export_project(runtime: str, model: torch.nn.Module, folder: Path) -> tuple[Path, float]:
    """The converter's own choice through the full pipeline (parity gate included), timed."""
    start = time.perf_counter()
    export_artifact(model, runtime, folder, ExportRequest(), force=True, parity_limit=8)
    return folder, time.perf_counter() - start


def export_form(runtime: str, model: torch.nn.Module, form: str, folder: Path) -> Path:
    """The project model in ``form`` through the converter, without the pipeline's gate."""
    converter = get_converter(runtime)
    request = ExportRequest()
    folder.mkdir(parents=True, exist_ok=True)
    graph = artifact_model(model, form, False)
    if runtime == "executorch":
        # The converter refuses graphs with heavy ops outside the delegate (the native form
        # is one); measure it anyway, lowered the same way.
        from restv2_edge.converters.executorch import MODEL_FILE, lower

        program, summary = lower(graph, example_input())
        (folder / MODEL_FILE).write_bytes(program.buffer)
        from restv2_edge.converters.base import ExportResult

        result = ExportResult(MODEL_FILE, "input", "logits", info={"delegation": summary})
    elif runtime == "onnx":
        # As the converter exports, minus its static-graph check (the decomposed form's
        # repeat becomes an ONNX Expand, which that check refuses).
        from restv2_edge.converters.base import ExportResult
        from restv2_edge.converters.onnx import INPUT_NAME, MODEL_FILE, OPSET, OUTPUT_NAME

        program = torch.onnx.export(
            graph,
            (example_input(),),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            external_data=False,
        )
        program.save(str(folder / MODEL_FILE))
        result = ExportResult(MODEL_FILE, INPUT_NAME, OUTPUT_NAME)
    else:
        result = converter.export(graph, example_input(), folder, request, lambda step: None)
    build_manifest(model, runtime, request, result, form).write(folder)
    return folder


def runner_for(runtime: str, path: Path, threads: int):
    """The project's runner class for ``path`` (an artifact folder or a bare model file)."""
    if path.is_dir():
        from restv2_edge.manifest import Manifest

        manifest = Manifest.read(path)
        return get_converter(runtime).load(path, manifest, threads)
    if runtime == "onnx":
        from restv2_edge.converters.onnx import OnnxRunner

        return OnnxRunner(path, 1, threads)
    if runtime == "openvino":
        from restv2_edge.converters.openvino import OpenVinoRunner

        return OpenVinoRunner(path, 1, "f32", threads)
    from restv2_edge.converters.executorch import ExecuTorchRunner

    return ExecuTorchRunner(path, 1, threads)


def delegation(path: Path) -> dict[str, object] | None:
    """ExecuTorch delegate summary (a folder's manifest, or the reference's side file)."""
    if not path.is_dir():
        side = path.with_suffix(".delegation.json")
        return json.loads(side.read_text()) if side.is_file() else None
    from restv2_edge.manifest import Manifest

    return Manifest.read(path).export.get("delegation")


def interleaved(runners: dict[str, object], runs: int, warmup: int) -> dict:
    """Median and fastest latency (ms) of each runner, timed as ``restv2-edge bench`` times."""
    x = example_input().numpy()
    names = list(runners)
    outputs = {name: runners[name](x) for name in names}
    calls = {name: (lambda runner=runners[name]: runner(x)) for name in names}
    times = time_round_robin(calls, warmup, runs, lambda step: None, BLOCK)
    return {
        name: {
            "median_ms": float(np.median(values)) * 1e3,
            "min_ms": min(values) * 1e3,
            "runs": len(values),
            "max_abs_diff_vs_reference": float(np.abs(outputs[name] - outputs[names[0]]).max()),
        }
        for name, values in times.items()
    }


def compare_runtime(
    runtime: str,
    reference: torch.nn.Module,
    project: torch.nn.Module,
    work: Path,
    args: argparse.Namespace,
) -> dict[str, object]:
    converter = get_converter(runtime)
    chosen = converter.graph_form_for(ExportRequest())
    paths: dict[str, Path] = {"reference": export_reference(runtime, reference, work / "ref")}
    if runtime == "openvino":  # the plain conversion leaves the input shape dynamic
        paths["reference, static input"] = export_reference(
            runtime, reference, work / "ref", static=True
        )
    project_path, seconds = export_project(runtime, project, work / "project")
    for form in FORMS:
        if form == chosen:
            paths[form] = project_path
        else:
            paths[form] = export_form(runtime, project, form, work / form)
    runners = {name: runner_for(runtime, path, args.threads) for name, path in paths.items()}
    timings = interleaved(runners, args.runs, args.warmup)
    base = timings["reference"]["median_ms"]
    for name in timings:
        timings[name]["ratio_vs_reference"] = timings[name]["median_ms"] / base
        info = delegation(paths[name])
        if info is not None:
            timings[name]["delegation"] = info
    return {
        "runtime": runners["reference"].description,
        "chosen_form": chosen,
        "project_export_seconds": round(seconds, 1),
        "project_over_reference": timings[chosen]["ratio_vs_reference"],
        "artifacts": timings,
    }


def machine_line(machine: dict[str, object]) -> tuple[str, object]:
    """(machine description, 1-minute load average at the start) of a record."""
    if "model_name" in machine:  # a record from before the script used bench.machine_info
        isa = ", ".join(machine["isa"])
        described = f"{machine['model_name']} ({machine['cpus']} CPUs; ISA: {isa})"
        return described, machine.get("loadavg_1m_at_start")
    load = machine.get("load_avg")
    return describe_machine(machine), round(load[0], 2) if load else None


def markdown(record: dict[str, object]) -> str:
    described, load = machine_line(record["machine"])
    order = record.get("order", "interleaved one call per round")
    lines = [
        f"Machine: {described}; threads {record['threads']}; load average at start {load}; "
        f"{record['runs']} timed calls per artifact, {order}; medians.",
        "",
        "| runtime | artifact | median ms | / reference | min ms | / reference (min) "
        "| max abs dlogit vs reference | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for runtime, entry in record["results"].items():
        for name, t in entry["artifacts"].items():
            label = name if name.startswith("reference") else f"project, {name}"
            if name == entry["chosen_form"]:
                label += " (chosen)"
            note = ""
            if "delegation" in t:
                d = t["delegation"]
                outside = ", ".join(
                    f"{op.split('.')[1]} x{n}" for op, n in d["not_delegated"].items()
                )
                note = (
                    f"{d['delegate_segments']} delegate(s), "
                    f"{d['delegated_share']:.1%} of ops delegated"
                    + (f"; outside: {outside}" if outside else "")
                )
            min_ratio = t["min_ms"] / entry["artifacts"]["reference"]["min_ms"]
            lines.append(
                f"| {runtime} | {label} | {t['median_ms']:.1f} | "
                f"{t['ratio_vs_reference']:.3f} | {t['min_ms']:.1f} | {min_ratio:.3f} | "
                f"{t['max_abs_diff_vs_reference']:.1e} | {note} |"
            )
    lines.append("")
    lines.append("Export time of the project artifact (export_artifact, parity gate on 8 photos):")
    for runtime, entry in record["results"].items():
        lines.append(f"- {runtime}: {entry['project_export_seconds']} s")
    return "\n".join(lines) + "\n"


def probe_executorch_fp16(project: torch.nn.Module) -> dict[str, object]:
    """Lower the decomposed form in float16 (float32 in/out) and report the delegation."""
    from restv2_edge.converters.base import half_precision
    from restv2_edge.converters.executorch import lower

    graph = half_precision(artifact_model(project, "decomposed", False))
    start = time.perf_counter()
    _, summary = lower(graph, example_input())
    return {"delegation": summary, "lower_seconds": round(time.perf_counter() - start, 1)}


START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_doc(path: Path, table: str) -> None:
    """Put ``table`` between the result markers of ``path``."""
    doc = path.read_text()
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    note = "<!-- generated by scripts/compare_graph_forms.py; do not edit by hand -->"
    path.write_text(f"{head}{START}\n{note}\n{table}{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="Write the record here.")
    parser.add_argument("--markdown", type=Path, default=None, help="Write the table here.")
    parser.add_argument(
        "--update-doc",
        type=Path,
        default=None,
        help="Replace the table between the result markers of this file (docs/graph-forms.md).",
    )
    parser.add_argument(
        "--from-json", type=Path, default=None, help="Only render a saved record (no runs)."
    )
    parser.add_argument(
        "--probe-executorch-fp16",
        action="store_true",
        help="Only lower T in float16 for XNNPACK and print what stays outside the delegate.",
    )
    args = parser.parse_args()
    if args.from_json:
        text = markdown(json.loads(args.from_json.read_text()))
        if args.update_doc:
            update_doc(args.update_doc, text)
        print(text)
        return
    if args.probe_executorch_fp16:
        print(json.dumps(probe_executorch_fp16(build_models(args.seed)[1]), indent=2))
        return

    torch.set_num_threads(args.threads)
    record: dict[str, object] = {
        "machine": machine_info(),
        "order": ORDER,
        "model": "ResTv2-T, 224x224, batch 1, fp32, random weights",
        "threads": args.threads,
        "runs": args.runs,
        "versions": {"torch": torch.__version__},
        "results": {},
    }
    reference, project = build_models(args.seed)
    with tempfile.TemporaryDirectory(prefix="graph-forms-") as tmp:
        for runtime in args.runtimes:
            print(f"{runtime}: exporting and timing...", file=sys.stderr, flush=True)
            record["results"][runtime] = compare_runtime(
                runtime, reference, project, Path(tmp) / runtime, args
            )
            record["machine"][f"loadavg_1m_after_{runtime}"] = float(
                Path("/proc/loadavg").read_text().split()[0]
            )
            if args.json:  # keep what is done if a later runtime fails
                args.json.write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    if args.update_doc:
        update_doc(args.update_doc, text)
    print(text)


if __name__ == "__main__":
    main()
