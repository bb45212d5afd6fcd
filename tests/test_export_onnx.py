"""ONNX export end to end, and the pipeline's behaviour (atomicity, output folders, errors).

What every target's artifact must satisfy (manifest fields and hashes, parity on photos, the
match with the reference model per precision, reproducible files, refused precisions, the
missing extra) is tests/test_target_contract.py; this file keeps what is ONNX's own.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import assert_one_line_error, run_cli

from restv2_edge.artifact import open_artifact
from restv2_edge.manifest import Manifest, sha256_file


@pytest.fixture(scope="module")
def t_onnx(tmp_path_factory, t_checkpoint, photo_dir):
    out = tmp_path_factory.mktemp("onnx") / "t-fp32"
    result = run_cli("export", "--target", "onnx", "--variant", "T", "--weights", t_checkpoint,
                     "--output", out, "--parity-data", photo_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_t_export_is_static_checked_and_passes_parity(t_onnx):
    manifest = Manifest.read(t_onnx)
    assert manifest.target == "onnx" and manifest.precision == "fp32" and manifest.variant == "T"
    assert manifest.input["shape"] == [1, 3, 224, 224] and manifest.output["shape"] == [1, 1000]
    assert manifest.labels[0] == "tench" and len(manifest.labels) == 1000
    assert manifest.parity["status"] == "passed"
    assert manifest.parity["metrics"]["max_abs_diff"] <= 1e-3
    assert manifest.parity["metrics"]["top1_agreement"] == 1.0
    assert "onnxruntime" in manifest.parity["runner"]
    proto = onnx.load(str(t_onnx / manifest.model_file))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    ops = {node.op_type for node in proto.graph.node}
    assert not ops & {"Shape", "ConstantOfShape"}
    # fp32 runs each block MLP as two 1x1 convs reading plain 4-D initializers
    assert manifest.graph_form == "native-pointwise"
    shapes = {init.name: list(init.dims) for init in proto.graph.initializer}
    mlp = {name: dims for name, dims in shapes.items() if ".mlp.fc" in name and "weight" in name}
    assert len(mlp) == 2 * 11  # T: 11 blocks
    assert all(len(dims) == 4 and dims[2:] == [1, 1] for dims in mlp.values())
    convs = {node.input[1] for node in proto.graph.node if node.op_type == "Conv"}
    assert set(mlp) <= convs
    inferred = onnx.shape_inference.infer_shapes(proto)
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert len(dims) <= 4 and all(d.HasField("dim_value") for d in dims), value.name
    for entry in manifest.files:
        assert sha256_file(t_onnx / entry["path"]) == entry["sha256"]


def test_parity_and_predict_commands(t_onnx, t_checkpoint, photo_dir, tmp_path):
    report = tmp_path / "parity.json"
    result = run_cli("parity", t_onnx, "--weights", t_checkpoint, "--data", photo_dir,
                     "--limit", "8", "--json", report)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(report.read_text())["status"] == "passed"
    photo = sorted(photo_dir.iterdir())[0]
    result = run_cli("predict", t_onnx, photo, "--json")
    assert result.returncode == 0, result.stderr
    top5 = json.loads(result.stdout)[str(photo)]
    assert len(top5) == 5 and top5[0]["probability"] >= top5[-1]["probability"]
    # the same answer as the runtime's own logits
    manifest, runner = open_artifact(t_onnx)
    from restv2_edge.data import open_unlabelled
    from restv2_edge.preprocess import preprocess_image

    image = open_unlabelled(photo).open(photo.name)
    logits = runner(preprocess_image(image, manifest.preprocessing())[None])
    assert top5[0]["index"] == int(np.argmax(logits))


def test_fp16_export_stores_float16_weights(tiny_artifact):
    out, manifest = tiny_artifact("onnx", "fp16")
    proto = onnx.load(str(out / manifest.model_file))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer)


def test_raw_input_export(tmp_path, tiny_checkpoint, photo_dir):
    out = tmp_path / "raw"
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--raw-input",
                     "--output", out, "--parity-data", photo_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = Manifest.read(out)
    assert manifest.input["scale"] == 1.0 and manifest.input["mean"] == [0.0, 0.0, 0.0]
    assert manifest.labels[0] == "airplane" and manifest.parity["status"] == "passed"


def test_existing_output_force_and_unwritable(tmp_path, tiny_checkpoint):
    out = tmp_path / "art"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--output", out)
    assert_one_line_error(result, "--force")
    assert (out / "keep.txt").read_text() == "user data"
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--output", out,
                     "--force")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--output",
                     blocker / "art")  # fmt: skip
    assert_one_line_error(result, "cannot write")


def test_parity_data_without_images(tmp_path, tiny_checkpoint):
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    out = tmp_path / "art"
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--output", out,
                     "--parity-data", empty)  # fmt: skip
    assert_one_line_error(result, "no images")
    assert not out.exists()
    assert not list(tmp_path.glob(".art.partial-*"))


def test_failed_parity_removes_the_artifact(tmp_path, tiny_checkpoint, monkeypatch):
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge import parity
    from restv2_edge.errors import ParityError
    from restv2_edge.export import export_artifact
    from restv2_edge.factory import create_model

    monkeypatch.setitem(parity.THRESHOLDS, "fp32", {"max_abs_diff": 0.0, "top1_agreement": 1.0})
    model = create_model(weights=tiny_checkpoint)  # a zero tolerance no runtime can meet
    out = tmp_path / "art"
    with pytest.raises(ParityError):
        export_artifact(model, "onnx", out, ExportRequest())
    assert not out.exists() and not list(tmp_path.iterdir())


def test_tampered_artifact_is_refused(tmp_path, tiny_checkpoint, photo_dir):
    out = tmp_path / "art"
    assert run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint,
                   "--output", out).returncode == 0  # fmt: skip
    model = out / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    photo = sorted(photo_dir.iterdir())[0]
    assert_one_line_error(run_cli("predict", out, photo), "sha256")
    assert_one_line_error(run_cli("parity", out, "--weights", tiny_checkpoint), "sha256")
    model.unlink()
    assert_one_line_error(run_cli("predict", out, photo), "missing file")
    assert_one_line_error(run_cli("predict", tmp_path, photo), "not a restv2-edge artifact")


def test_killed_export_leaves_nothing_under_the_output_name(tmp_path, t_checkpoint):
    out = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "restv2_edge.cli", "export", "--target", "onnx", "--variant", "T",
         "--weights", str(t_checkpoint), "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.partial-*/model.onnx")):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert list(tmp_path.glob(".killed.partial-*")), "export never reached the write step"
    assert not out.exists()
