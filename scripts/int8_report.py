"""INT8 measurements per target: accuracy drop, T@224 cosine, speed ratio, export time.

    python scripts/int8_report.py --targets onnx,executorch,openvino \\
        [--fixture tests/fixtures/restv2_cifar10.safetensors] [--t-weights T.pth] \\
        [--calib-size 256] [--accuracy-limit 10000] [--runs 20] --json int8-report.json

For each target: a calibration set of ``--calib-size`` images (fixture: CIFAR-10 train;
T: the shared ImageNet photos), fp32 and int8 exports, fixture top-1 of both on CIFAR-10
test, T@224 int8-vs-fp32 logits cosine on the photos (parity gate's records), and the
latency ratio int8/fp32 at batch 1 (the two artifacts timed interleaved in one run, with
``restv2_edge.bench.time_round_robin`` in blocks, as ``restv2-edge bench`` times).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "restv2_cifar10.safetensors"


def _export_pair(model: Any, target: str, calib: Any, out: Path, parity_data: Any) -> dict:
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.export import export_artifact

    row: dict[str, Any] = {}
    start = time.perf_counter()
    export_artifact(
        model, target, out / f"{target}-fp32", ExportRequest(), force=True, verify=False
    )
    row["fp32_export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    _, manifest = export_artifact(
        model,
        target,
        out / f"{target}-int8",
        ExportRequest(precision="int8", calibration=calib, quantization={}),
        force=True,
        verify=False,
        parity_data=parity_data,
        parity_limit=64,
    )
    row["int8_export_s"] = time.perf_counter() - start
    row["parity"] = manifest.parity
    row["quantization"] = manifest.quantization
    return row


def _has_runtime(target: str) -> bool:
    """False for Core ML off macOS: the MIL interpreter checks numbers, its speed means nothing."""
    if target != "coreml":
        return True
    from restv2_edge.converters.coreml import coreml_framework_available

    return coreml_framework_available()


def _speed(folders: dict[str, Path], runs: int, threads: int | None) -> dict[str, float]:
    import numpy as np

    from restv2_edge.artifact import open_artifact
    from restv2_edge.bench.timing import BLOCK, bench_input, time_round_robin

    calls = {}
    for name, folder in folders.items():
        manifest, runner = open_artifact(folder, threads)
        x = bench_input(manifest, 1)
        calls[name] = lambda runner=runner, x=x: runner(x)
    times = time_round_robin(calls, 3, runs, lambda step: None, BLOCK)
    return {name: float(np.median(values) * 1000) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from restv2_edge.calibration.dataset import build_calibration_set

    from restv2_edge.bench.machine import describe_machine, machine_info
    from restv2_edge.data import default_photo_dir, shared_data_root
    from restv2_edge.evaluate import evaluate
    from restv2_edge.factory import create_model
    from restv2_edge.publish import check_report_path, write_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="onnx,executorch,openvino")
    parser.add_argument("--fixture", default=str(FIXTURE))
    parser.add_argument("--t-weights", default=None, help="T checkpoint (default: random)")
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--accuracy-limit", type=int, default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-t", action="store_true")
    parser.add_argument("--skip-fixture", action="store_true")
    parser.add_argument("--output", default="exports/int8-report")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.json:
        check_report_path(args.json)
    out = Path(args.output)
    cifar = shared_data_root() / "cifar10"
    report: dict[str, Any] = {"machine": describe_machine(machine_info()), "rows": {}}
    for target in args.targets.split(","):
        row: dict[str, Any] = {}
        if not args.skip_fixture and Path(args.fixture).is_file():
            model = create_model(None, None, None, args.fixture)
            calib = build_calibration_set(cifar / "train.tar", args.calib_size, model.preprocessing)
            pair = _export_pair(model, target, calib, out / "fixture", None)
            fp32 = evaluate(out / "fixture" / f"{target}-fp32", cifar / "test.tar", None,
                            args.accuracy_limit)  # fmt: skip
            int8 = evaluate(out / "fixture" / f"{target}-int8", cifar / "test.tar", None,
                            args.accuracy_limit)  # fmt: skip
            row["fixture"] = {
                "fp32_top1": fp32["top1"] * 100,
                "int8_top1": int8["top1"] * 100,
                "drop_points": (fp32["top1"] - int8["top1"]) * 100,
                "images": int8["images"],
                "int8_export_s": pair["int8_export_s"],
            }
        if not args.skip_t:
            model = create_model("T", 224, None, args.t_weights)
            start = time.perf_counter()
            calib = build_calibration_set(default_photo_dir(), args.calib_size, model.preprocessing)
            calib_s = time.perf_counter() - start
            pair = _export_pair(model, target, calib, out / "t224", None)
            metrics = pair["parity"]["metrics"]
            folders = {p: out / "t224" / f"{target}-{p}" for p in ("fp32", "int8")}
            ms = _speed(folders, args.runs, args.threads) if _has_runtime(target) else {}
            row["t224"] = {
                "calibration_s": calib_s,
                "int8_export_s": pair["int8_export_s"],
                "cosine_mean": metrics["cosine_mean"],
                "cosine_min": metrics["cosine_min"],
                "top1_agreement": metrics["top1_agreement"],
                "parity_images": metrics["images"],
                "fp32_ms": ms.get("fp32"),
                "int8_ms": ms.get("int8"),
                "int8_over_fp32": ms["int8"] / ms["fp32"] if ms else None,
            }
        report["rows"][target] = row
        if args.json:  # after each target: a later failure keeps what is done
            write_report(args.json, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
