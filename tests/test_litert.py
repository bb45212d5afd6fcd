"""LiteRT target: litert-torch export, fp16 weights, parity in ai-edge-litert's Interpreter."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, _missing, assert_one_line_error, run_cli
from reference_restv2 import reference_model
from restv2_edge.converters.base import ExportRequest, get_converter, get_descriptor
from restv2_edge.converters.litert import LiteRTRunner, inspect_model

from restv2_edge.artifact import open_artifact
from restv2_edge.checkpoint import read_checkpoint
from restv2_edge.data import open_unlabelled
from restv2_edge.errors import BackendMissingError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.manifest import Manifest
from restv2_edge.parity import compare, load_inputs
from restv2_edge.preprocess import preprocess_image


@pytest.fixture(scope="module", autouse=True)
def litert_installed() -> None:
    missing = [p for p in ("ai_edge_litert", "litert_torch") if importlib.util.find_spec(p) is None]
    if missing:
        _missing(f"{', '.join(missing)} not installed: pip install 'restv2-edge[litert]'")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def oracle_logits(checkpoint: Path, images: np.ndarray, variant: str = "custom") -> np.ndarray:
    """The official-structure reference model carrying the checkpoint's weights."""
    config = TINY_CONFIG if variant == "custom" else {}
    model = reference_model(variant, **config)
    model.load_state_dict(read_checkpoint(checkpoint).state_dict)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images)).numpy()


@pytest.fixture(scope="module")
def tiny_tflite(tiny_checkpoint: Path, photo_dir: Path, tmp_path_factory) -> dict[str, Path]:
    model = create_model(weights=tiny_checkpoint)
    root = tmp_path_factory.mktemp("litert")
    folders = {}
    for precision in ("fp32", "fp16"):
        out = root / f"tiny-{precision}"
        request = ExportRequest(precision=precision)
        export_artifact(model, "litert", out, request, parity_data=photo_dir, parity_limit=8)
        folders[precision] = out
    return folders


def test_descriptor() -> None:
    descriptor = get_descriptor("litert")
    assert descriptor.extra == "litert" and descriptor.suffix == ".tflite"
    assert descriptor.precisions == ("fp32", "fp16") and descriptor.graph_form == "native"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_manifest(tiny_tflite: dict[str, Path], precision: str) -> None:
    folder = tiny_tflite[precision]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["target"] == "litert" and manifest["precision"] == precision
    assert manifest["model_file"] == "model.tflite" and manifest["graph_form"] == "native"
    assert manifest["input"]["name"] == "input" and manifest["output"]["name"] == "logits"
    assert manifest["input"]["shape"] == [1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
    assert {"litert_torch", "ai_edge_litert"} <= set(manifest["versions"])
    [entry] = manifest["files"]
    assert entry["path"] == "model.tflite" and entry["sha256"] == sha256(folder / "model.tflite")
    export = manifest["export"]
    assert export["weights"] == ("float16" if precision == "fp16" else "float32")
    assert export["ops"] == sum(export["op_types"].values()) > 100
    delegation = export["delegation"]
    assert delegation["total_ops"] == export["ops"]
    # all but q @ k^T of the one-head stage (a FULLY_CONNECTED with non-constant weights)
    assert delegation["delegated_ops"] >= delegation["total_ops"] - 1
    assert manifest["parity"]["status"] == "passed", manifest["parity"]
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


def test_runner_matches_reference_model_on_photos(
    tiny_tflite: dict[str, Path], tiny_checkpoint: Path, photo_dir: Path
) -> None:
    manifest, runner = open_artifact(tiny_tflite["fp32"])
    assert isinstance(runner, LiteRTRunner)
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 24)
    expected = oracle_logits(tiny_checkpoint, inputs.images)
    metrics = compare(expected, runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-4, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
    _, half = open_artifact(tiny_tflite["fp16"])
    metrics = compare(expected, half(inputs.images))
    assert metrics["cosine_min"] >= 0.9995 and metrics["top1_agreement"] == 1.0, metrics


def test_threads_reach_the_interpreter(tiny_tflite: dict[str, Path]) -> None:
    _, runner = open_artifact(tiny_tflite["fp32"], threads=1)
    assert runner.threads == 1 and "1 threads" in runner.description
    x = np.zeros((3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE), np.float32)  # chunked to batch 1
    assert runner(x).shape == (3, 10)


def test_same_checkpoint_gives_identical_file_and_predict(
    tiny_tflite: dict[str, Path], tiny_checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    result = run_cli("export", "--target", "litert", "--weights", tiny_checkpoint,
                     "--output", out, "--parity-data", photo_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "parity passed" in result.stderr
    assert sha256(out / "model.tflite") == sha256(tiny_tflite["fp32"] / "model.tflite")
    photo = sorted(photo_dir.iterdir())[0]
    result = run_cli("predict", out, photo, "--json")
    assert result.returncode == 0, result.stderr
    top5 = json.loads(result.stdout)[str(photo)]
    assert len(top5) == 5 and top5[0]["label"] in Manifest.read(out).labels
    manifest, runner = open_artifact(out)  # the same answer as the runtime's own logits
    image = open_unlabelled(photo).open(photo.name)
    logits = runner(preprocess_image(image, manifest.preprocessing())[None])
    assert top5[0]["index"] == int(np.argmax(logits))


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(BackendMissingError, match=r"ai_edge_litert.*restv2-edge\[litert\]"):
        get_converter("litert").check_installed()


def test_missing_converter_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    model = create_model(TINY_CONFIG, TINY_IMAGE_SIZE)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BackendMissingError, match=r"litert_torch.*restv2-edge\[litert\]"):
        get_converter("litert").export(model, None, tmp_path, ExportRequest(), lambda s: None)


def test_int8_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("export", "--target", "litert", "--precision", "int8", "--output", tmp_path)
    assert_one_line_error(result, "int8")


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
    metrics = compare(oracle_logits(t_checkpoint, inputs.images, "T"), runner(inputs.images))
    assert metrics["max_abs_diff"] <= 1e-3, metrics
    assert metrics["top1_agreement"] == 1.0, metrics
