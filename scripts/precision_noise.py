"""Half-precision noise of the OpenVINO artifacts: what the fp16/bf16 parity gates are set from.

    python scripts/precision_noise.py [--cifar-images 500] [--photos 100] --json noise.json

Exports the CIFAR-10 fixture (64x64) and a randomized-weight ResTv2-T (224, the tests'
``randomize_`` with seed 1) to openvino fp32, fp16 and bf16, runs each artifact through its own
runner (fp16: the device's native half type, bf16 pinned) and compares the logits with the
PyTorch model as the parity gate does (``restv2_edge.parity.compare``): the fixture on CIFAR-10
test images (also top-1 against the labels), T on the shared ImageNet photos. ``ratio`` is the
half-precision artifact's median latency over fp32's at batch 1, interleaved, for deciding only
(not a benchmark where other work shares the cores). The onnx fp16 artifact is measured the
same way against onnx fp32 (``onnx_fp16``). Records the CPU model and flags.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "restv2_cifar10.safetensors"
PRECISIONS = ("fp32", "fp16", "bf16")


def _labelled_images(tar: Path, limit: int, pre: Any) -> tuple[np.ndarray, np.ndarray]:
    from restv2_edge.data import open_labelled
    from restv2_edge.preprocess import preprocess_image

    images, labels = [], []
    for _, label, image in open_labelled(tar).subset(limit).iter_images():
        images.append(preprocess_image(image, pre))
        labels.append(label)
    return np.stack(images), np.array(labels)


def _random_t(folder: Path) -> Any:
    """ResTv2-T with every tensor randomized as the tests' ``t_checkpoint`` (seed 1)."""
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from reference_restv2 import randomize_, reference_model

    from restv2_edge.factory import create_model

    path = folder / "t.pth"
    torch.save({"model": randomize_(reference_model("T"), 1).state_dict()}, path)
    return create_model(weights=path)


def _ratio(fast: Any, slow: Any, x: np.ndarray, rounds: int = 15) -> float:
    """Median latency of ``fast`` over ``slow``'s, one call each per round, interleaved."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for runner in (fast, slow):
        runner(x)
    for _ in range(rounds):
        for index, runner in enumerate((fast, slow)):
            start = time.perf_counter()
            runner(x)
            times[index].append(time.perf_counter() - start)
    return statistics.median(times[0]) / statistics.median(times[1])


def measure(model: Any, images: np.ndarray, labels: np.ndarray | None, work: Path) -> dict:
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.artifact import open_artifact
    from restv2_edge.export import artifact_model, export_artifact
    from restv2_edge.parity import compare, torch_logits

    reference = torch_logits(artifact_model(model, "native", False), images)
    runners, rows = {}, {}
    for precision in PRECISIONS:
        out = work / precision
        export_artifact(model, "openvino", out, ExportRequest(precision=precision), verify=False)
        manifest, runner = open_artifact(out)
        logits = runner(images)
        row = {**compare(reference, logits), "runner": runner.description}
        row["execution_precision"] = manifest.export.get("execution_precision")
        if labels is not None:
            row["top1_vs_labels"] = float((logits.argmax(1) == labels).mean())
        rows[precision], runners[precision] = row, runner
    if labels is not None:
        rows["pytorch_top1_vs_labels"] = float((reference.argmax(1) == labels).mean())
    one = images[:1]
    for precision in ("fp16", "bf16"):
        rows[precision]["ratio_vs_fp32"] = _ratio(runners[precision], runners["fp32"], one)
    return rows


def onnx_half(model: Any, images: np.ndarray, work: Path) -> dict:
    """onnx fp16 against PyTorch, and its latency over the onnx fp32 artifact's."""
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.artifact import open_artifact
    from restv2_edge.export import artifact_model, export_artifact
    from restv2_edge.parity import compare, torch_logits

    runners = {}
    for precision in ("fp32", "fp16"):
        out = work / f"onnx-{precision}"
        export_artifact(model, "onnx", out, ExportRequest(precision=precision), verify=False)
        runners[precision] = open_artifact(out)[1]
    reference = torch_logits(artifact_model(model, "native", False), images)
    row = compare(reference, runners["fp16"](images))
    row["ratio_vs_fp32"] = _ratio(runners["fp16"], runners["fp32"], images[:1])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar-images", type=int, default=500)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from restv2_edge.bench.machine import machine_info
    from restv2_edge.data import default_photo_dir, shared_data_root
    from restv2_edge.factory import create_model
    from restv2_edge.parity import load_inputs

    report: dict[str, Any] = {"machine": machine_info()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fixture = create_model(weights=FIXTURE)
        tar = shared_data_root() / "cifar10" / "test.tar"
        images, labels = _labelled_images(tar, args.cifar_images, fixture.preprocessing)
        report["fixture_cifar10"] = measure(fixture, images, labels, work / "fixture")
        report["fixture_cifar10"]["onnx_fp16"] = onnx_half(fixture, images, work / "fixture")
        t_model = _random_t(work)
        photos = load_inputs(t_model.preprocessing, default_photo_dir(), args.photos)
        report["random_t_photos"] = measure(t_model, photos.images, None, work / "t")
        report["random_t_photos"]["onnx_fp16"] = onnx_half(t_model, photos.images, work / "t")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
