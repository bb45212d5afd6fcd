"""Features (backbone) artifacts: export --head features, every output against the
independent official-structure backbone (tests/reference_restv2.py), the manifest's outputs,
the CLI's refusals.

The default run exports one tiny onnx fp32 dynamic-batch artifact at 64x96 from an
mmseg-layout checkpoint with every tensor randomized; the other targets, fp16, INT8, the
detectron2 layout, golden and bench are ``slow``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, assert_one_line_error, run_cli
from PIL import Image
from reference_restv2 import randomize_, reference_backbone
from restv2_edge.converters.base import ExportRequest, installed_targets
from test_backbone import _official_file

from restv2_edge.artifact import open_artifact
from restv2_edge.data import open_unlabelled
from restv2_edge.errors import ArtifactError, ExportError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.manifest import Manifest
from restv2_edge.manifest_schema import check_manifest
from restv2_edge.parity import FEATURE_THRESHOLDS

SIZE = (64, 96)
NAMES = ["stage1", "stage2", "stage3", "stage4"]
STRIDES = [4, 8, 16, 32]


def _reference(layout: str = "mmseg", seed: int = 31) -> torch.nn.Module:
    return randomize_(reference_backbone("custom", norms=layout, **TINY_CONFIG), seed=seed).eval()


def _stretched_photos(photo_dir, count: int, size=SIZE) -> np.ndarray:
    """Real photos resized straight to (H, W) and ImageNet-normalized, written out by hand
    (what the manifest's ``input.resize`` "stretch" says an app does)."""
    height, width = size
    images = [img for _, _, img in open_unlabelled(photo_dir).subset(count).iter_images()]
    pixels = np.stack(
        [np.asarray(img.convert("RGB").resize((width, height), Image.BICUBIC)) for img in images]
    ).astype(np.float32)
    x = (pixels / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _assert_maps_match(got, expected, rel: float = 1e-4) -> None:
    assert isinstance(got, list) and len(got) == len(expected) == 4
    for name, out, ref in zip(NAMES, got, expected):
        assert out.shape == ref.shape, name
        assert ref.std() > 0.1, name  # random weights: non-degenerate maps
        tolerance = rel * max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(out - ref).max()) <= tolerance, name


def _report(label: str, record: dict) -> None:
    """The gate's per-output numbers, printed (``pytest -m slow -rP`` shows them): where the
    limits in parity.FEATURE_THRESHOLDS and docs/backbone.md come from."""
    for name, m in record["metrics"]["outputs"].items():
        print(
            f"{label} {name}: max|diff| {m['max_abs_diff']:.3g} rel {m['max_rel_diff']:.3g} "
            f"cosine min {m['cosine_min']:.6f} mean {m['cosine_mean']:.6f}"
        )


def _export(tmp_path, target: str, layout: str = "mmseg", **request):
    ref = _reference(layout)
    weights = _official_file(tmp_path, layout, ref)
    model = create_model(TINY_CONFIG, SIZE, weights=weights, head="features")
    folder, manifest = export_artifact(
        model, target, tmp_path / f"{target}", ExportRequest(**request), parity_limit=4
    )
    return ref, folder, manifest


@pytest.fixture(scope="module")
def onnx_features(tmp_path_factory, photo_dir):
    if "onnx" not in installed_targets():
        pytest.skip("onnx extra not installed")
    tmp = tmp_path_factory.mktemp("features-onnx")
    return _export(tmp, "onnx", batch_size=2, dynamic_batch=True)


def test_onnx_dynamic_batch_matches_the_reference_backbone(onnx_features, photo_dir):
    ref, folder, manifest = onnx_features
    assert manifest.parity["status"] == "passed", manifest.parity["failures"]
    assert set(manifest.parity["metrics"]["outputs"]) == set(NAMES)
    _, runner = open_artifact(folder)
    x = _stretched_photos(photo_dir, 3)
    with torch.no_grad():
        expected = [t.numpy() for t in ref(torch.from_numpy(x))]
    for count in (1, 3):  # a symbolic batch, run at 1 and 3 images
        got = runner.run_batch(x[:count])
        _assert_maps_match(list(got), [e[:count] for e in expected])
    _assert_maps_match(runner(x), expected)  # the chunking __call__ path


def test_features_manifest_lists_outputs_and_no_classes(onnx_features):
    _, folder, _ = onnx_features
    data = json.loads((folder / "manifest.json").read_text())
    assert data["head"] == "features"
    assert data["image_size"] == list(SIZE)
    assert data["num_classes"] is None and data["labels"] == [] and data["output"] is None
    assert data["output_norms"] == "checkpoint" and data["checkpoint_layout"] == "mmseg"
    assert data["input"]["shape"] == [2, 3, *SIZE] and data["input"]["dynamic_batch"]
    assert data["input"]["resize"] == "stretch" and data["input"]["crop_pct"] == 1.0
    height, width = SIZE
    for entry, name, stride, channels in zip(
        data["outputs"], NAMES, STRIDES, TINY_CONFIG["embed_dims"]
    ):
        assert entry == {
            "name": name,
            "shape": [2, channels, height // stride, width // stride],
            "stride": stride,
            "channels": channels,
        }
    again = Manifest.read(folder)
    assert again.features and again.input_hw == SIZE and again.output_names == NAMES
    with pytest.raises(ArtifactError, match="stretch"):
        again.preprocessing()  # no square center crop to offer


def test_schema_refuses_inconsistent_features_manifests(onnx_features):
    _, folder, _ = onnx_features
    good = json.loads((folder / "manifest.json").read_text())
    assert check_manifest(good, 1) == []
    cases = {
        "num_classes": (10, "num_classes must be null"),
        "labels": (["a"], "labels must be empty"),
        "output_norms": ("trained", "output_norms must be one of"),
        "image_size": ([64, 97, 1], "image_size must be"),
        "outputs": ([], "must list its outputs"),
    }
    for key, (value, message) in cases.items():
        problems = check_manifest({**good, key: value}, 1)
        assert problems and any(message in p for p in problems), (key, problems)
    broken = json.loads(json.dumps(good))
    broken["outputs"][2]["shape"][0] = 5
    assert any("does not start with the input batch" in p for p in check_manifest(broken, 1))
    older = {k: v for k, v in good.items() if k not in ("head", "outputs", "output_norms")}
    older.update(num_classes=2, labels=["a", "b"], output={"name": "logits", "shape": [2, 2]})
    older["image_size"], older["input"] = 64, {**good["input"], "shape": [2, 3, 64, 64]}
    assert check_manifest(older, 1) == []  # a manifest written before heads existed


def test_predict_and_eval_refuse_a_features_artifact(onnx_features, photo_dir):
    _, folder, _ = onnx_features
    photo = sorted(photo_dir.iterdir())[0]
    result = run_cli("predict", folder, photo)
    assert_one_line_error(result, "features artifact", "needs a classifier")
    result = run_cli("eval", folder, "--data", photo_dir)
    assert_one_line_error(result, "features artifact", "needs a classifier")


def test_export_refuses_bad_image_sizes_and_classifier_only_options(tmp_path):
    out = tmp_path / "never"
    result = run_cli(
        "export", "--target", "onnx", "--head", "features", "--image-size", "64x100",
        "--output", out,
    )  # fmt: skip
    assert_one_line_error(result, "multiples of 32")
    assert not out.exists()


def _int8_cosines(runner, ref, x) -> dict[str, tuple[float, float]]:
    """Per output, (min, mean) over the images of the cosine between the artifact's map and
    the reference backbone's, each image's map one flattened vector."""
    with torch.no_grad():
        expected = [t.numpy() for t in ref(torch.from_numpy(x))]
    found = {}
    for name, out, want in zip(NAMES, runner(x), expected):
        a, b = out.reshape(len(x), -1), want.reshape(len(x), -1)
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        found[name] = (float(cos.min()), float(cos.mean()))
    return found


def _assert_int8_gate(cosines: dict[str, tuple[float, float]]) -> None:
    gate = FEATURE_THRESHOLDS["int8"]
    assert set(cosines) == set(NAMES)
    for name, (low, mean) in cosines.items():
        assert low >= gate["cosine_min"] and mean >= gate["cosine_mean"], (name, low, mean)


@pytest.fixture(scope="module")
def stretched_calibration(tmp_path_factory, photo_dir):
    """A 64x96 calibration set of 8 photos, made by the CLI."""
    folder = tmp_path_factory.mktemp("calib") / "set"
    result = run_cli(
        "calibrate", "--data", photo_dir, "--size", "8", "--image-size", "64x96",
        "--output", folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "64x96 (stretch)" in result.stdout + result.stderr
    return folder


def test_onnx_int8_at_a_non_square_size(tmp_path, photo_dir, stretched_calibration):
    """INT8 at 64x96 through the CLI on a stretched set: every output of the artifact
    against the reference backbone above the INT8 feature gate; the manifest names the set."""
    if "onnx" not in installed_targets():
        pytest.skip("onnx extra not installed")
    ref = _reference("mmseg")
    weights = _official_file(tmp_path, "mmseg", ref)
    out = tmp_path / "int8"
    result = run_cli(
        "export", "--target", "onnx", "--head", "features", "--variant", json.dumps(TINY_CONFIG),
        "--image-size", "64x96", "--weights", weights, "--int8", "--calib",
        stretched_calibration, "--parity-limit", "4", "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest, runner = open_artifact(out)
    recorded = json.loads((stretched_calibration / "calibration.json").read_text())
    calibration = manifest.quantization["calibration"]
    assert calibration["image_size"] == [64, 96] and calibration["resize"] == "stretch"
    assert calibration["hash"] == recorded["hash"] and calibration["size"] == 8
    assert manifest.precision == "int8" and manifest.parity["status"] == "passed"
    _assert_int8_gate(_int8_cosines(runner, ref, _stretched_photos(photo_dir, 4)))


def test_int8_refuses_a_calibration_set_of_another_size(tmp_path, photo_dir, stretched_calibration):
    from restv2_edge.calibration.dataset import load_calibration_set

    out = tmp_path / "never"
    result = run_cli(
        "export", "--target", "onnx", "--head", "features", "--variant", json.dumps(TINY_CONFIG),
        "--image-size", "96x64", "--int8", "--calib", stretched_calibration, "--output", out,
    )  # fmt: skip
    assert_one_line_error(result, "64x96 (stretch)", "96x64 (stretch)")
    assert not out.exists()
    # the library refuses it too, before anything is written: here a square model
    model = create_model(TINY_CONFIG, 64, head="features")
    request = ExportRequest(
        precision="int8", calibration=load_calibration_set(stretched_calibration)
    )
    with pytest.raises(ExportError, match=r"64x96 \(stretch\).*64 \(center crop\)"):
        export_artifact(model, "onnx", out, request)
    assert not out.exists()
    result = run_cli(
        "export", "--target", "onnx", "--image-size", "64x96", "--int8", "--calib",
        stretched_calibration, "--max-drop", "1", "--output", out,
    )  # fmt: skip
    assert_one_line_error(result, "--max-drop", "square")
    assert not out.exists()


def test_image_size_type_reads_sides_and_pairs():
    import click

    from restv2_edge.cli_types import ImageSize

    pairs = ImageSize(pairs=True)
    assert pairs.convert("384x640", None, None) == (384, 640)
    assert pairs.convert("224X224", None, None) == 224  # a square pair is the side
    assert pairs.convert("96", None, None) == 96
    for bad in ("384x", "0x64", "64x64x64", "big"):
        with pytest.raises(click.BadParameter):
            pairs.convert(bad, None, None)
    with pytest.raises(click.BadParameter):
        ImageSize().convert("384x640", None, None)  # commands that take one side only


# -- slow: the other targets, precisions, layouts, golden and bench ----------------------

FLOAT_CASES = [
    ("onnx", "fp16"),
    ("openvino", "fp32"),
    ("openvino", "fp16"),
    ("executorch", "fp32"),
    ("litert", "fp32"),
    ("litert", "fp16"),
    ("coreml", "fp32"),
    ("coreml", "fp16"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "precision"), FLOAT_CASES, ids=lambda v: str(v))
def test_float_targets_match_the_reference_backbone(tmp_path, photo_dir, target, precision):
    if target not in installed_targets():
        pytest.skip(f"{target} extra not installed")
    ref, folder, manifest = _export(tmp_path, target, precision=precision)
    record = manifest.parity
    if record["status"] == "not run":
        pytest.skip(f"{target} runner not available here: {record['reason']}")
    _report(f"{target} {precision}", record)
    assert record["status"] == "passed", record["failures"]
    assert manifest.output_names == NAMES
    _, runner = open_artifact(folder)
    x = _stretched_photos(photo_dir, 2)
    with torch.no_grad():
        expected = [t.numpy() for t in ref(torch.from_numpy(x))]
    got = runner(x)
    if precision == "fp32":
        _assert_maps_match(got, expected)
    else:
        for name, out, want in zip(NAMES, got, expected):
            cosine = float((out * want).sum() / np.linalg.norm(out) / np.linalg.norm(want))
            assert cosine >= 0.999, name


@pytest.mark.slow
@pytest.mark.parametrize("target", ["openvino", "coreml"])
def test_dynamic_batch_and_detectron2_layout(tmp_path, photo_dir, target):
    """A detectron2-layout checkpoint through a dynamic batch (Core ML: enumerated sizes,
    the runner pads a chunk to the next one) at 1 and 3 photos."""
    if target not in installed_targets():
        pytest.skip(f"{target} extra not installed")
    ref, folder, manifest = _export(
        tmp_path, target, layout="detectron2", batch_size=2, dynamic_batch=True
    )
    _report(f"{target} fp32 dynamic detectron2", manifest.parity)
    assert manifest.checkpoint_layout == "detectron2" and manifest.parity["status"] == "passed"
    _, runner = open_artifact(folder)
    x = _stretched_photos(photo_dir, 3)
    with torch.no_grad():
        expected = [t.numpy() for t in ref(torch.from_numpy(x))]
    for count in (1, 3):
        _assert_maps_match(list(runner(x[:count])), [e[:count] for e in expected])


INT8_TARGETS = ["onnx", "openvino", "executorch", "litert", "coreml"]


@pytest.mark.slow
@pytest.mark.parametrize("size", [64, SIZE], ids=["64", "64x96"])
@pytest.mark.parametrize("target", INT8_TARGETS)
def test_int8_features_per_output_cosine(tmp_path, photo_dir, target, size):
    """INT8 calibrated on real photos: a center-crop set at a square size, a set stretched to
    height x width otherwise; the gate is the per-output cosine (parity.FEATURE_THRESHOLDS),
    and at the non-square size the artifact is also checked against the reference backbone."""
    from restv2_edge.calibration.dataset import build_calibration_set
    from restv2_edge.calibration.recipes import int8_targets

    from restv2_edge.export import normalization

    if target not in installed_targets() or target not in int8_targets():
        pytest.skip(f"no {target} INT8 recipe installed")
    ref = _reference("mmseg")
    weights = _official_file(tmp_path, "mmseg", ref)
    model = create_model(TINY_CONFIG, size, weights=weights, head="features")
    calib = build_calibration_set(photo_dir, 32, normalization(model), hw=model.input_hw)
    request = ExportRequest(precision="int8", calibration=calib)
    folder, manifest = export_artifact(model, target, tmp_path / target, request, parity_limit=16)
    record = manifest.parity
    if record["status"] == "not run":
        pytest.skip(f"{target} runner not available here: {record['reason']}")
    _report(f"{target} int8 {manifest.input_hw[0]}x{manifest.input_hw[1]}", record)
    assert record["status"] == "passed", record["failures"]
    assert set(record["metrics"]["outputs"]) == set(NAMES)
    assert manifest.quantization["calibration"]["resize"] == calib.resize
    if size == SIZE:
        _, runner = open_artifact(folder)
        cosines = _int8_cosines(runner, ref, _stretched_photos(photo_dir, 8))
        print(f"{target} int8 64x96 vs reference backbone: {cosines}")
        _assert_int8_gate(cosines)


@pytest.mark.slow
def test_golden_and_bench_on_a_features_artifact(onnx_features, photo_dir, tmp_path):
    from restv2_edge.bench.artifacts import bench_artifacts
    from restv2_edge.golden import read_golden, write_golden

    ref, folder, _ = onnx_features
    out, _ = write_golden(folder, tmp_path / "golden", images=2, data=photo_dir)
    index = read_golden(out)
    for entry in index["images"]:
        assert [o["name"] for o in entry["outputs"]] == NAMES
        assert entry["resized"]["shape"] == [*SIZE, 3]
        with torch.no_grad():
            expected = [t.numpy() for t in ref(torch.from_numpy(entry["input_array"].copy()))]
        _assert_maps_match([o["array"] for o in entry["outputs"]], expected)
    shutil.rmtree(out)
    report = bench_artifacts([folder], warmup=0, runs=2, memory=False)
    (row,) = report["rows"]
    assert row["head"] == "features" and row["image_size"] == list(SIZE)
    assert row["median_ms"] > 0


T_CASES = [
    ("onnx", "fp32", (224, 320)),
    ("onnx", "fp16", (224, 320)),
    ("onnx", "int8", 224),
    ("openvino", "int8", 224),
]


@pytest.mark.slow
@pytest.mark.parametrize(("target", "precision", "size"), T_CASES, ids=lambda v: str(v))
def test_restv2_t_features_gates(tmp_path, photo_dir, target, precision, size):
    """ResTv2-T (randomized mmseg-layout weights) through the export gate on 16 photos: the
    full-size numbers in docs/backbone.md (INT8 calibrated on 64 photos)."""
    from restv2_edge.calibration.dataset import build_calibration_set

    if target not in installed_targets():
        pytest.skip(f"{target} extra not installed")
    ref = randomize_(reference_backbone("T", norms="mmseg"), seed=5)
    weights = tmp_path / "t.pth"
    state = {"backbone." + key: value for key, value in ref.state_dict().items()}
    torch.save({"meta": {}, "state_dict": state}, weights)
    model = create_model("T", size, weights=weights, head="features")
    request = ExportRequest(precision=precision)
    if precision == "int8":
        request.calibration = build_calibration_set(photo_dir, 64, model.preprocessing)
    _, manifest = export_artifact(model, target, tmp_path / "t", request, parity_limit=16)
    _report(f"T {target} {precision}", manifest.parity)
    assert manifest.parity["status"] == "passed", manifest.parity["failures"]


def test_classification_weights_give_identity_norms_in_the_manifest(tiny_checkpoint):
    """A features model on classification weights: output_norms identity, layout recorded."""
    from restv2_edge.converters.base import ExportResult

    from restv2_edge.errors import ExportError
    from restv2_edge.export import build_manifest

    model = create_model(weights=tiny_checkpoint, image_size=SIZE, head="features")
    request = ExportRequest(batch_size=3).for_model(model)
    assert request.output_names == tuple(NAMES) and request.class_names == []
    result = ExportResult(model_file="model.onnx", input_name="input", output_name="stage1")
    manifest = build_manifest(model, "onnx", request, result, "native")
    assert (manifest.output_norms, manifest.checkpoint_layout) == ("identity", "classification")
    assert [entry["shape"][0] for entry in manifest.outputs] == [3] * 4
    data = json.loads(manifest.to_json())
    assert data["head"] == "features" and data["num_classes"] is None
    # INT8 needs a set stretched to the model's 64x96: a square one is refused, naming both
    from restv2_edge.calibration.dataset import CalibrationSet

    from restv2_edge.preprocess import Preprocessing

    square = CalibrationSet(np.zeros((2, 3, 64, 64), np.float32), Preprocessing(64))
    request = ExportRequest(precision="int8", calibration=square)
    with pytest.raises(ExportError, match=r"64 \(center crop\).*64x96 \(stretch\)"):
        export_artifact(model, "onnx", "/nonexistent/never", request)
