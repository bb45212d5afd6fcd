"""LiteRT target: litert-torch export, fp16 weights, parity in ai-edge-litert's Interpreter."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    TINY_CONFIG,
    TINY_IMAGE_SIZE,
    _missing,
    oracle_logits,
    oracle_model,
    run_cli,
)
from restv2_edge.converters.base import ExportRequest, get_converter, get_descriptor
from restv2_edge.converters.litert import LiteRTRunner, inspect_model

from restv2_edge.artifact import open_artifact
from restv2_edge.data import open_unlabelled
from restv2_edge.errors import BackendMissingError
from restv2_edge.factory import create_model
from restv2_edge.manifest import Manifest
from restv2_edge.parity import compare, load_inputs
from restv2_edge.preprocess import preprocess_image

# The contract every target shares (manifest fields and hashes, parity on photos, the match
# with the reference model at each precision, reproducible files, refused precisions, the
# missing runtime) is tests/test_target_contract.py; this file keeps what is LiteRT's own.


@pytest.fixture(scope="module", autouse=True)
def litert_installed() -> None:
    missing = [p for p in ("ai_edge_litert", "litert_torch") if importlib.util.find_spec(p) is None]
    if missing:
        _missing(f"{', '.join(missing)} not installed: pip install 'restv2-edge[litert]'")


@pytest.fixture(scope="module")
def tiny_tflite(tiny_artifact) -> dict[str, Path]:
    """The tiny fp32 and fp16 models (exported once per session, shared with the contract
    tests)."""
    return {precision: tiny_artifact("litert", precision)[0] for precision in ("fp32", "fp16")}


def test_descriptor() -> None:
    descriptor = get_descriptor("litert")
    assert descriptor.extra == "litert" and descriptor.suffix == ".tflite"
    assert descriptor.precisions == ("fp32", "fp16")
    assert descriptor.graph_form == "native-onehead-batched"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_manifest(tiny_tflite: dict[str, Path], precision: str) -> None:
    folder = tiny_tflite[precision]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model_file"] == "model.tflite"
    assert manifest["graph_form"] == "native-onehead-batched"
    assert manifest["input"]["name"] == "input" and manifest["output"]["name"] == "logits"
    assert {"litert_torch", "ai_edge_litert"} <= set(manifest["versions"])
    [entry] = manifest["files"]
    assert entry["path"] == "model.tflite"
    export = manifest["export"]
    assert export["weights"] == ("float16" if precision == "fp16" else "float32")
    assert export["ops"] == sum(export["op_types"].values()) > 100
    delegation = export["delegation"]
    assert delegation["total_ops"] == export["ops"]
    # the one-head stage's attention batched: no op left to TFLite's own kernels
    assert delegation["delegated_ops"] == delegation["total_ops"]
    assert delegation["partitions"] == 1
    assert "XNNPACK" in manifest["parity"]["runner"]


def test_model_file_is_static_float32_io_and_builtin_ops(tiny_tflite: dict[str, Path]) -> None:
    for precision, folder in tiny_tflite.items():
        census = inspect_model((folder / "model.tflite").read_bytes())
        [graph_input], [graph_output] = census["inputs"], census["outputs"]
        assert graph_input["type"] == graph_output["type"] == "FLOAT32"
        assert graph_input["shape"] == [1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
        assert graph_output["shape"] == [1, 10]
        assert "CUSTOM" not in census["op_types"]
        halves = census["tensor_types"].get("FLOAT16", 0)
        if precision == "fp16":
            # every linear and conv weight, dequantized in the graph
            assert halves == census["op_types"]["DEQUANTIZE"] > 0
        else:
            assert halves == 0 and "DEQUANTIZE" not in census["op_types"]


def test_fp16_weights_halve_the_file(tiny_tflite: dict[str, Path]) -> None:
    sizes = {p: (f / "model.tflite").stat().st_size for p, f in tiny_tflite.items()}
    assert sizes["fp16"] < 0.65 * sizes["fp32"], sizes


def test_runner_is_the_litert_interpreter(tiny_tflite: dict[str, Path]) -> None:
    _, runner = open_artifact(tiny_tflite["fp32"])
    assert isinstance(runner, LiteRTRunner)


def test_threads_reach_the_interpreter(tiny_tflite: dict[str, Path]) -> None:
    _, runner = open_artifact(tiny_tflite["fp32"], threads=1)
    assert runner.threads == 1 and "1 threads" in runner.description
    x = np.zeros((3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), np.float32)  # chunked to batch 1
    assert runner(x).shape == (3, 10)


def test_predict_gives_the_runtime_s_answer(tiny_tflite: dict[str, Path], photo_dir: Path) -> None:
    out = tiny_tflite["fp32"]
    photo = sorted(photo_dir.iterdir())[0]
    result = run_cli("predict", out, photo, "--json")
    assert result.returncode == 0, result.stderr
    top5 = json.loads(result.stdout)[str(photo)]
    assert len(top5) == 5 and top5[0]["label"] in Manifest.read(out).labels
    manifest, runner = open_artifact(out)  # the same answer as the runtime's own logits
    image = open_unlabelled(photo).open(photo.name)
    logits = runner(preprocess_image(image, manifest.preprocessing())[None])
    assert top5[0]["index"] == int(np.argmax(logits))


def test_missing_converter_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    model = create_model(TINY_CONFIG, TINY_IMAGE_SIZE)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendMissingError, match=r"litert_torch.*restv2-edge\[litert\]"):
        get_converter("litert").export(model, None, tmp_path, ExportRequest(), lambda s: None)


@pytest.mark.slow
def test_t_export_matches_reference_model(
    t_checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "t-litert"
    result = run_cli("export", "--target", "litert", "--weights", t_checkpoint, "--output", out,
                     "--parity-data", photo_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest, runner = open_artifact(out)
    assert manifest.variant == "T" and manifest.image_size == 224
    assert manifest.parity["status"] == "passed"
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 16)
    expected = oracle_logits(oracle_model(t_checkpoint, "T"), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
