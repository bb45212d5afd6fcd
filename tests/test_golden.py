"""`restv2-edge golden`: real photos, the exact input tensors and the artifact's own top-5.

Checked against independent references: the photo files themselves, Pillow called directly,
the normalization written out in float64, and onnxruntime run directly on the model file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image

from restv2_edge.golden import read_golden


def _export(checkpoint: Path, output: Path, *extra: str) -> Path:
    result = run_cli(
        "export", "--target", "onnx", "--weights", checkpoint, "--output", output, *extra
    )
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="module")
def onnx_artifact(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_checkpoint, tmp_path_factory.mktemp("golden") / "onnx")


@pytest.fixture(scope="module")
def golden_dir(onnx_artifact: Path, photo_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("golden-out") / "golden"
    result = run_cli("golden", onnx_artifact, "--output", out, "--images", "3")
    assert result.returncode == 0, result.stderr
    return out


def _expected_crop(path: Path, short: int, size: int) -> np.ndarray:
    """Pillow called directly: shorter side to ``short`` (bicubic), center crop ``size``."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    new = (short, round(short * h / w)) if w <= h else (round(short * w / h), short)
    image = image.resize(new, Image.BICUBIC)
    left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
    return np.asarray(image.crop((left, top, left + size, top + size)))


def test_golden_files_match_independent_references(golden_dir, onnx_artifact, photo_dir):
    import onnxruntime as ort

    index = read_golden(golden_dir)
    manifest = json.loads((onnx_artifact / "manifest.json").read_text())
    assert (golden_dir / "manifest.json").read_bytes() == (
        onnx_artifact / "manifest.json"
    ).read_bytes()
    assert index["format"] == "restv2-edge-golden"
    assert index["artifact"]["target"] == "onnx"
    assert index["artifact"]["model_sha256"] == manifest["files"][0]["sha256"]
    assert index["data"] == str(photo_dir)
    assert len(index["images"]) == 3
    assert len({e["source"] for e in index["images"]}) == 3

    session = ort.InferenceSession(str(onnx_artifact / "model.onnx"))
    size, mean, std = manifest["image_size"], manifest["input"]["mean"], manifest["input"]["std"]
    for entry in index["images"]:
        source = photo_dir / entry["source"]
        photo = golden_dir / entry["photo"]
        assert photo.read_bytes() == source.read_bytes()
        assert entry["photo_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert entry["icc_profile"] == ("icc_profile" in Image.open(source).info)
        np.testing.assert_array_equal(
            entry["decoded_array"], np.asarray(Image.open(source).convert("RGB"))
        )
        crop = _expected_crop(source, manifest["input"]["resize_size"], size)
        np.testing.assert_array_equal(entry["resized_array"], crop)
        expected = (crop.astype(np.float64) / 255.0 - mean) / std
        tensor = entry["input_array"]
        assert tensor.shape == (1, 3, size, size) and tensor.dtype == np.dtype("<f4")
        np.testing.assert_allclose(tensor[0], expected.transpose(2, 0, 1), atol=1e-6)

        logits = session.run(None, {"input": np.ascontiguousarray(tensor)})[0][0]
        np.testing.assert_allclose(entry["logits"], logits, atol=1e-5)
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        order = np.argsort(-probs, kind="stable")[:5]
        assert [t["index"] for t in entry["top5"]] == order.tolist()
        assert [t["label"] for t in entry["top5"]] == [manifest["labels"][i] for i in order]
        np.testing.assert_allclose([t["probability"] for t in entry["top5"]], probs[order], 1e-6)


def test_golden_custom_folder_and_count(onnx_artifact, photo_dir, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    for name in sorted(p.name for p in photo_dir.iterdir())[:3]:
        Image.open(photo_dir / name).convert("RGB").crop((0, 0, 90, 61)).save(data / f"{name}.png")
    out = tmp_path / "golden"
    result = run_cli("golden", onnx_artifact, "--output", out, "--images", "2", "--data", data)
    assert result.returncode == 0, result.stderr
    index = read_golden(out)
    assert index["data"] == str(data)
    assert [e["photo"].split("/")[1] for e in index["images"]] == [
        e["source"] for e in index["images"]
    ]
    assert len(index["images"]) == 2
    for entry in index["images"]:
        assert entry["decoded"]["shape"] == [61, 90, 3]
        np.testing.assert_array_equal(
            entry["resized_array"], _expected_crop(data / entry["source"], 64, 64)
        )
    assert out.stat().st_mode & 0o777 == 0o755


def test_golden_raw_input_tensor_is_rgb(tiny_checkpoint, photo_dir, tmp_path):
    artifact = _export(tiny_checkpoint, tmp_path / "raw", "--raw-input")
    out = tmp_path / "golden"
    result = run_cli("golden", artifact, "--output", out, "--images", "1")
    assert result.returncode == 0, result.stderr
    entry = read_golden(out)["images"][0]
    rgb = entry["resized_array"].astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_array_equal(entry["input_array"][0], rgb)


def _nothing_written(parent: Path, name: str) -> None:
    assert not (parent / name).exists()
    assert not [p for p in parent.iterdir() if ".partial-" in p.name]


def test_golden_rejects_a_folder_that_is_not_an_artifact(tmp_path):
    (tmp_path / "plain").mkdir()
    for folder in (tmp_path / "plain", tmp_path / "missing"):
        result = run_cli("golden", folder, "--output", tmp_path / "out")
        assert_one_line_error(result, "not", "artifact")
        _nothing_written(tmp_path, "out")


def test_golden_rejects_a_tampered_artifact(onnx_artifact, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_artifact, tampered)
    model = tampered / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    result = run_cli("golden", tampered, "--output", tmp_path / "out")
    assert_one_line_error(result, "model.onnx", "sha256")
    _nothing_written(tmp_path, "out")


def test_golden_rejects_a_folder_without_photos(onnx_artifact, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here\n")
    empty = tmp_path / "empty"
    result = run_cli("golden", onnx_artifact, "--output", tmp_path / "out", "--data", empty)
    assert_one_line_error(result, "no images")
    _nothing_written(tmp_path, "out")


def test_golden_keeps_an_existing_output_unless_forced(onnx_artifact, golden_dir, tmp_path):
    out = tmp_path / "golden"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert_one_line_error(run_cli("golden", onnx_artifact, "--output", out), "exists", "--force")
    assert (out / "keep.txt").is_file()
    result = run_cli("golden", onnx_artifact, "--output", out, "--images", "1", "--force")
    assert result.returncode == 0, result.stderr
    assert not (out / "keep.txt").exists()
    assert len(read_golden(out)["images"]) == 1
    assert_one_line_error(run_cli("golden", onnx_artifact, "--output", out, "--images", "0"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_image_matches_pillow_exif_transpose(orientation, tmp_path):
    from PIL import ImageOps

    from restv2_edge.data import open_unlabelled, upright_image

    pixels = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
    exif = Image.Exif()
    exif[0x0112] = orientation
    (tmp_path / "photos").mkdir()
    path = tmp_path / "photos" / "p.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=100)
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        as_stored = image.convert("RGB")
    source = open_unlabelled(tmp_path / "photos")
    np.testing.assert_array_equal(np.asarray(source.open("p.jpg")), expected)
    np.testing.assert_array_equal(np.asarray(source.open("p.jpg", upright=False)), as_stored)
    np.testing.assert_array_equal(np.asarray(upright_image(as_stored, orientation)), expected)


def test_golden_of_a_rotated_photo_is_upright_after_decoding(onnx_artifact, photo_dir, tmp_path):
    data = tmp_path / "photos"
    data.mkdir()
    name = sorted(p.name for p in photo_dir.iterdir())[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    Image.open(photo_dir / name).convert("RGB").crop((0, 0, 90, 61)).save(
        data / "rotated.png", exif=exif
    )
    out = tmp_path / "golden"
    result = run_cli("golden", onnx_artifact, "--output", out, "--images", "1", "--data", data)
    assert result.returncode == 0, result.stderr
    (entry,) = read_golden(out)["images"]
    assert entry["exif_orientation"] == 6
    assert entry["decoded"]["shape"] == [61, 90, 3]  # as stored
    upright = data / "upright.png"
    Image.open(data / "rotated.png").convert("RGB").transpose(Image.Transpose.ROTATE_270).save(
        upright
    )
    np.testing.assert_array_equal(entry["resized_array"], _expected_crop(upright, 64, 64))
