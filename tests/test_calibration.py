"""Calibration sets: deterministic picking, eval preprocessing, manifest, hash, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli
from PIL import Image
from restv2_edge.calibration.dataset import (
    CalibrationWarning,
    build_calibration_set,
    load_calibration_set,
    save_calibration_set,
)

from restv2_edge.errors import DataError, ExportError
from restv2_edge.preprocess import Preprocessing


def _image(seed: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8))


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(12):
        _image(i).save(folder / ("sub" if i % 3 == 0 else "") / f"img{i:02d}.png")
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return folder


PRE = Preprocessing(16, crop_pct=1.0)


def test_set_is_deterministic_eval_preprocessed_and_skips_corrupt(image_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        a = build_calibration_set(image_dir, 12, PRE, seed=1)
        b = build_calibration_set(image_dir, 12, PRE, seed=1)
        c = build_calibration_set(image_dir, 5, PRE, seed=2)
    # all 12 good images taken, the corrupt one skipped and named
    assert a.size == 12 and a.skipped == ["broken.jpg"]
    assert [s["key"] for s in a.sources] == [s["key"] for s in b.sources]
    assert a.content_hash == b.content_hash
    assert c.size == 5 and c.content_hash != a.content_hash
    # each input is the eval transform of the source image: bicubic resize + crop + normalize
    for index, source in enumerate(a.sources):
        with Image.open(image_dir / source["key"]) as image:
            rgb = np.asarray(image.convert("RGB").resize((21, 16), Image.BICUBIC), np.float32)
        left = int(round((21 - 16) / 2))
        crop = rgb[:, left : left + 16] / 255.0
        expected = (crop - np.array(PRE.mean)) / np.array(PRE.std)
        np.testing.assert_allclose(a.inputs[index], expected.transpose(2, 0, 1), atol=1e-5)


def test_tar_source_and_roundtrip(tmp_path: Path) -> None:
    tar_path = tmp_path / "images.tar"
    with tarfile.open(tar_path, "w") as archive:
        for i in range(40):
            buffer = io.BytesIO()
            _image(i, (20, 20)).save(buffer, format="PNG")
            info = tarfile.TarInfo(f"test/class{i % 2}/im{i}.png")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
    calib = build_calibration_set(tar_path, 33, PRE, seed=0)
    assert calib.size == 33 and not calib.skipped
    folder = save_calibration_set(calib, tmp_path / "calib")
    meta = json.loads((folder / "calibration.json").read_text())
    assert meta["count"] == 33 and meta["hash"] == calib.content_hash
    assert meta["preprocessing"]["image_size"] == 16 and len(meta["sources"]) == 33
    again = load_calibration_set(folder)
    np.testing.assert_array_equal(again.inputs, calib.inputs)
    # a tampered inputs file no longer matches its recorded hash
    tampered = again.inputs.copy()
    tampered[0, 0, 0, 0] += 1
    np.save(folder / "inputs.npy", tampered)
    with pytest.raises(DataError, match="hash"):
        load_calibration_set(folder)


def _legacy_hash(calib) -> str:
    """The content hash as version 1 sets have always recorded it (center crop)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(calib.preprocessing.to_dict(), sort_keys=True).encode())
    digest.update(repr(tuple(calib.inputs.shape)).encode())
    digest.update(calib.inputs.tobytes())
    return "sha256:" + digest.hexdigest()


def test_square_sets_keep_their_hash_and_version(tmp_path: Path, image_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calib = build_calibration_set(image_dir, 6, PRE, seed=3)
    assert calib.resize == "center_crop" and calib.content_hash == _legacy_hash(calib)
    folder = save_calibration_set(calib, tmp_path / "calib")
    meta = json.loads((folder / "calibration.json").read_text())
    assert meta["version"] == 1 and meta["hash"] == _legacy_hash(calib)
    # a set written before the size and rule were recorded still loads, as a center crop
    for key in ("image_size", "resize"):
        del meta[key]
    (folder / "calibration.json").write_text(json.dumps(meta))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        assert load_calibration_set(folder).resize == "center_crop"


def test_non_square_set_is_stretched_and_records_size_and_rule(
    tmp_path: Path, image_dir: Path
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        calib = build_calibration_set(image_dir, 12, PRE, seed=1, hw=(16, 32))
    assert calib.resize == "stretch" and calib.inputs.shape == (12, 3, 16, 32)
    assert calib.image_size == (16, 32) and calib.preprocessing.crop_pct == 1.0
    # each input is the source image resized straight to 32 x 16 (bicubic, no crop)
    for index, source in enumerate(calib.sources):
        with Image.open(image_dir / source["key"]) as image:
            rgb = np.asarray(image.convert("RGB").resize((32, 16), Image.BICUBIC), np.float32)
        expected = (rgb / 255.0 - np.array(PRE.mean)) / np.array(PRE.std)
        np.testing.assert_allclose(calib.inputs[index], expected.transpose(2, 0, 1), atol=1e-5)
    # the hash covers the rule: the same inputs as a "center crop" hash differently
    assert calib.content_hash != _legacy_hash(calib)
    assert calib.summary()["image_size"] == [16, 32] and calib.summary()["resize"] == "stretch"
    folder = save_calibration_set(calib, tmp_path / "calib")
    meta = json.loads((folder / "calibration.json").read_text())
    assert meta["version"] == 1 and meta["resize"] == "stretch"
    assert meta["image_size"] == [16, 32] and meta["shape"] == [12, 3, 16, 32]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        again = load_calibration_set(folder)
    assert again.resize == "stretch" and again.content_hash == calib.content_hash
    again.check_matches(PRE, (16, 32))
    with pytest.raises(ExportError, match=r"16x32 \(stretch\).*16 \(center crop\)"):
        again.check_matches(PRE)
    with pytest.raises(ExportError, match=r"16x32 \(stretch\).*32x16 \(stretch\)"):
        again.check_matches(PRE, (32, 16))
    # a rule edited in the json no longer matches the recorded hash
    meta["resize"] = "center_crop"
    (folder / "calibration.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="hash"):
        load_calibration_set(folder)


def test_crop_pct_is_refused_for_a_non_square_size() -> None:
    from restv2_edge.calibration.dataset import calibration_preprocessing

    assert calibration_preprocessing(None, (64, 96)).image_size == 64
    with pytest.raises(DataError, match="--crop-pct does nothing"):
        calibration_preprocessing(None, (64, 96), crop_pct=0.9)


def test_bad_input(tmp_path: Path, image_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable image"):
        build_calibration_set(empty, 8, PRE)
    with pytest.warns(CalibrationWarning, match="fewer than 32"):
        calib = build_calibration_set(image_dir, 4, PRE)
    with pytest.raises(ExportError, match="image size 16"):
        calib.check_matches(Preprocessing(32, crop_pct=1.0))
    with pytest.raises(ExportError, match="mean"):
        calib.check_matches(Preprocessing(16, crop_pct=1.0, mean=(0.5, 0.5, 0.5)))
    calib.check_matches(PRE)


def test_cli_calibrate_uses_checkpoint_preprocessing(
    tmp_path: Path, image_dir: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "calib"
    result = run_cli(
        "calibrate", "--data", image_dir, "--size", "12", "--weights", tiny_checkpoint,
        "--output", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "fewer than 32" in result.stderr and "skipped 1 corrupt" in result.stderr
    meta = json.loads((out / "calibration.json").read_text())
    # the tiny checkpoint records 64x64 with crop_pct 1.0
    assert meta["preprocessing"]["image_size"] == 64
    assert meta["preprocessing"]["crop_pct"] == 1.0
    assert np.load(out / "inputs.npy").shape == (12, 3, 64, 64)

    bad = run_cli(
        "calibrate", "--data", tmp_path / "nowhere", "--size", "4", "--output", tmp_path / "calib2"
    )
    assert_one_line_error(bad, "not found")
    # a calibration set for 64 px does not fit a 32 px export
    wrong = run_cli(
        "export", "--target", "onnx", "--weights", tiny_checkpoint, "--image-size", "96",
        "--int8", "--calib", out, "--output", tmp_path / "art",
    )  # fmt: skip
    assert_one_line_error(wrong, "image size 64")
    assert not (tmp_path / "art").exists()
    missing = run_cli("export", "--target", "onnx", "--int8", "--output", tmp_path / "art")
    assert_one_line_error(missing, "calibration")


def test_onnx_calibration_passes_divide_the_set() -> None:
    """onnxruntime's strided calibration needs a stride that divides the batch count."""
    from restv2_edge.calibration.onnx import calibration_stride

    assert calibration_stride(256) == 8
    assert calibration_stride(30) == 6
    assert calibration_stride(257) == 1  # prime: one batch per pass
    assert calibration_stride(3) == 3
