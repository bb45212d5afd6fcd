"""The trust contract (docs/reliability.md): an artifact is exactly what its manifest hashes,
every bad input is one line and nothing written, nothing is silently replaced.

Most checks run the CLI in-process through ``restv2_edge.cli.run`` (the console script's own
entry, error boundary included), so a whole class of inputs costs milliseconds per case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CIFAR10_CLASSES, TINY_IMAGE_SIZE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from restv2_edge import cli
from restv2_edge.errors import ArtifactError, CheckpointError, DataError, OutputError
from restv2_edge.manifest import MANIFEST_NAME, Manifest, verify_files
from restv2_edge.publish import remove_stale_partials, staged_dir, umask_mode

COPY_EXPORT = Path(__file__).resolve().parent.parent / "apps" / "scripts" / "copy-export.py"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, tiny_checkpoint, photo_dir) -> Path:
    """A real tiny ONNX artifact, exported once; tests copy it before changing anything."""
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.export import export_artifact
    from restv2_edge.factory import create_model

    out = tmp_path_factory.mktemp("hardening") / "tiny-onnx"
    model = create_model(weights=tiny_checkpoint)
    export_artifact(model, "onnx", out, ExportRequest(), parity_data=photo_dir, parity_limit=4)
    return out


@pytest.fixture()
def copy(artifact, tmp_path) -> Path:
    target = tmp_path / "art"
    shutil.copytree(artifact, target)
    return target


def cli_run(*args: object) -> tuple[int, str, str]:
    """``restv2-edge ARGS`` in this process: (exit code, stdout, stderr). An exception that
    escapes the console entry would be a traceback for the user: it fails the test."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["restv2-edge", *map(str, args)]
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(sys, "argv", argv)
        try:
            cli.run()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code != 0, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# -- 1. integrity -------------------------------------------------------------------------


def test_model_file_outside_the_folder_is_refused_by_every_command(
    copy, artifact, tmp_path, photo_dir, tiny_checkpoint
):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(artifact / "model.onnx", outside)
    edit_manifest(copy, lambda m: m.update(model_file=str(outside)))
    photo = sorted(photo_dir.iterdir())[0]
    golden_out = tmp_path / "golden"
    commands = [
        ("predict", copy, photo),
        ("eval", copy, "--data", photo_dir.parent.parent / "cifar10" / "test.tar", "--limit", 2),
        ("golden", copy, "--output", golden_out, "--images", 1),
        ("bench", copy, "--runs", 1, "--warmup", 0, "--no-memory"),
        ("parity", copy, "--weights", tiny_checkpoint, "--limit", 2),
    ]
    for command in commands:
        code, _, err = cli_run(*command)
        assert_refused(code, err, "model_file", "relative")
    assert not golden_out.exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda m: m.update(model_file="../tiny-onnx/model.onnx"), ".."),
        (lambda m: m["files"][0].update(path="/etc/passwd"), "relative"),
        (lambda m: m.update(image_size="big"), "image_size"),
        (lambda m: m.update(image_size=-64), "image_size"),
        (lambda m: m.update(labels={"0": "cat"}), "labels"),
        (lambda m: m.update(labels=CIFAR10_CLASSES[:3]), "labels"),
        (lambda m: m.update(num_classes=True), "num_classes"),
        (lambda m: m["input"].update(std=[0, 1, 1]), "std"),
        (lambda m: m["input"].update(shape=[1, 3, 32, 32]), "image_size"),
        (lambda m: m.update(format_version=2), "newer than this restv2-edge reads (1)"),
        (lambda m: m.update(model_file="other.onnx"), "not among the manifest's hashed files"),
        (lambda m: m.update(target="tflite"), "target"),
        (lambda m: m.update(files=[]), "files"),
        (lambda m: m.update(extra_field=1), "unknown field"),
        (lambda m: m["files"][0].update(sha256="0" * 64), "sha256"),
    ],
)
def test_manifest_fields_of_wrong_type_or_range_are_one_line(copy, change, fragment):
    edit_manifest(copy, change)
    with pytest.raises(ArtifactError, match=None) as caught:
        verify_files(copy)
    assert fragment.lower() in str(caught.value).lower()
    code, _, err = cli_run("bench", copy, "--runs", 1, "--warmup", 0, "--no-memory")
    assert_refused(code, err, fragment)


def test_non_finite_json_is_refused(copy):
    path = copy / MANIFEST_NAME
    path.write_text(path.read_text().replace('"scale": 0.00392156862745098', '"scale": NaN'))
    with pytest.raises(ArtifactError, match="NaN"):
        Manifest.read(copy)


def test_links_and_unlisted_files_are_refused(copy, artifact, tmp_path, photo_dir):
    photo = sorted(photo_dir.iterdir())[0]
    (copy / "model.onnx").unlink()
    (copy / "model.onnx").symlink_to(artifact / "model.onnx")  # same bytes, but elsewhere
    assert_refused(*cli_run("predict", copy, photo)[::2], "symbolic link")
    bad = _copy_of(artifact, tmp_path / "linked-dir")
    (bad / "sub").symlink_to(tmp_path)
    with pytest.raises(ArtifactError, match="not listed"):
        verify_files(bad)
    extra = _copy_of(artifact, tmp_path / "extra")
    (extra / "notes.txt").write_text("not hashed")
    code, _, err = cli_run("predict", extra, photo)
    assert_refused(code, err, "notes.txt", "not listed")
    result = subprocess.run(
        [sys.executable, str(COPY_EXPORT), "web", copy, "--dest", tmp_path / "web"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert not (tmp_path / "web").exists()


def _copy_of(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    return dest


def test_newer_checkpoint_and_calibration_versions_are_named(tmp_path, tiny_checkpoint):
    from restv2_edge.calibration.dataset import (
        build_calibration_set,
        load_calibration_set,
        save_calibration_set,
    )
    from safetensors import safe_open
    from safetensors.torch import save_file

    from restv2_edge.checkpoint import OWN_FORMAT_KEY, read_checkpoint

    with safe_open(str(tiny_checkpoint), framework="pt") as handle:
        meta = json.loads(handle.metadata()[OWN_FORMAT_KEY])
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    meta["format_version"] = 9
    newer = tmp_path / "newer.safetensors"
    save_file(state, str(newer), metadata={OWN_FORMAT_KEY: json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"format_version 9 .*reads \(1\)"):
        read_checkpoint(newer)

    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for index in range(2):
        Image.new("RGB", (40, 40), (index * 90, 20, 30)).save(images / f"{index}.png")
    from restv2_edge.preprocess import Preprocessing

    folder = save_calibration_set(
        build_calibration_set(images, 2, Preprocessing(TINY_IMAGE_SIZE)), tmp_path / "calib"
    )
    edit = json.loads((folder / "calibration.json").read_text())
    edit["version"] = 5
    (folder / "calibration.json").write_text(json.dumps(edit))
    with pytest.raises(DataError, match=r"version 5 is newer .*reads \(1\)"):
        load_calibration_set(folder)


# -- 2. the parity gate says what it checked against ----------------------------------------


def test_synthetic_gate_is_named_warned_and_replaced_by_parity_on_photos(
    tmp_path, tiny_checkpoint, photo_dir
):
    out = tmp_path / "art"
    env_data = tmp_path / "no-data"
    env_data.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "restv2_edge.cli", "export", "--target", "onnx", "--weights",
         str(tiny_checkpoint), "--output", str(out), "--parity-limit", "3"],
        capture_output=True, text=True, env={**os.environ, "RESTV2_EDGE_DATA": str(env_data)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "synthetic: 3 seeded images" in result.stderr
    assert "warning:" in result.stderr and "synthetic images only" in result.stderr
    record = Manifest.read(out).parity
    assert record["data"] == "synthetic: 3 seeded images" and record["synthetic"] is True

    code, _, err = cli_run("parity", out, "--weights", tiny_checkpoint, "--data", photo_dir,
                           "--limit", 4)  # fmt: skip
    assert code == 0, err
    replaced = verify_files(out).parity
    assert replaced["data"] == f"photos: {photo_dir} (4)" and replaced["synthetic"] is False


def test_export_names_its_photos(artifact, photo_dir):
    record = Manifest.read(artifact).parity
    assert record["data"] == f"photos: {photo_dir} (4)" and record["synthetic"] is False


# -- 3. one line, non-zero exit, no traceback ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "--target", "onnx", "--int8", "--calib-data", "x", "--max-drop", "nan"],
         "finite"),
        (["export", "--target", "onnx", "--image-size", "100000"], "multiple of 32"),
        (["export", "--target", "onnx", "--parity-limit", "-1"], "parity-limit"),
        (["export", "--target", "onnx", "--calib", "somewhere"], "without --int8"),
        (["export", "--target", "onnx", "--calib-size", "9"], "without --int8"),
        (["export", "--target", "onnx", "--int8", "--calib-data", "x", "--accuracy-data", "y"],
         "without --max-drop"),
        (["export", "--target", "onnx", "--deployment-target", "iOS16"],
         "does nothing for onnx (read by coreml)"),
        (["export", "--target", "litert", "--compute-units", "ALL"],
         "does nothing for litert (read by coreml)"),
        (["export", "--target", "openvino", "--int8", "--calib-data", "x", "--calib-method",
          "minmax"], "does nothing for openvino (read by onnx)"),
        (["export", "--target", "executorch", "--int8", "--weights-only"],
         "does nothing for executorch"),
        (["calibrate", "--data", "x", "--std", "0,0,0", "--output", "c"], "positive"),
        (["calibrate", "--data", "x", "--mean", "1,inf,2", "--output", "c"], "finite"),
        (["calibrate", "--data", "x", "--output", "c", "--top", "3"], "without --sensitivity"),
        (["train", "--data", "x", "--output", "m.safetensors", "--epochs", "0"], "epochs"),
        (["train", "--data", "x", "--output", "m.safetensors", "--epochs", "-1"], "epochs"),
        (["train", "--data", "x", "--output", "m.safetensors", "--batch-size", "0"], "batch"),
        (["train", "--data", "x", "--output", "m.safetensors", "--lr", "nan"], "lr"),
        (["predict", "a", "b.jpg", "--top", "0"], "top"),
        (["predict", "a", "b.jpg", "--top", "-2"], "top"),
        (["parity", "a", "--weights", "w", "--limit", "0"], "limit"),
        (["eval", "a", "--data", "d", "--limit", "-5"], "limit"),
    ],
)  # fmt: skip
def test_values_refused_at_parse_time(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli_run(*args)
    assert code == 2, err
    assert_refused(code, err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs_fail_before_any_work(tmp_path, artifact, tiny_checkpoint):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = [
        ("parity", artifact, "--weights", tiny_checkpoint, "--json", blocker / "r.json"),
        ("bench", artifact, "--json", blocker / "r.json"),
        ("eval", artifact, "--data", "x", "--json", blocker / "r.json"),
        ("train", "--data", "no-such-data", "--output", blocker / "m.safetensors"),
        ("calibrate", "--data", "no-such-data", "--output", blocker / "calib"),
    ]
    for case in cases:
        code, _, err = cli_run(*case)
        assert_refused(code, err, "cannot write")
    assert blocker.read_text() == "not a folder"


def test_decompression_bomb_is_one_line(artifact, tmp_path):
    from PIL import Image

    bomb = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(bomb)
    code, _, err = cli_run("predict", artifact, bomb)
    assert_refused(code, err, "too large")


def test_unexpected_errors_are_one_line_naming_the_step(monkeypatch, artifact, photo_dir):
    from restv2_edge import artifact as artifact_module

    def broken(*args, **kwargs):
        raise RuntimeError("the runtime exploded\nwith a second line")

    monkeypatch.setattr(artifact_module, "open_artifact", broken)
    photo = sorted(photo_dir.iterdir())[0]
    code, _, err = cli_run("predict", artifact, photo)
    assert_refused(code, err, "predict failed: RuntimeError: the runtime exploded", "--debug")
    assert "second line" not in err
    with pytest.raises(RuntimeError):
        cli_run("--debug", "predict", artifact, photo)
    monkeypatch.setenv("RESTV2_EDGE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli_run("predict", artifact, photo)


# -- 4. nothing replaced, nothing lost -------------------------------------------------------


def test_concurrent_writers_one_wins_the_other_fails_cleanly(tmp_path):
    out = tmp_path / "out"
    first = staged_dir(out)
    second = staged_dir(out)
    work_a = first.__enter__()
    work_b = second.__enter__()
    (work_a / "who").write_text("a")
    (work_b / "who").write_text("b")
    first.__exit__(None, None, None)
    with pytest.raises(OutputError, match="another writer"):
        second.__exit__(None, None, None)
    assert (out / "who").read_text() == "a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_calibrate_and_train_need_force_to_replace(tmp_path, photo_dir):
    calib = tmp_path / "calib"
    args = ("calibrate", "--data", photo_dir, "--size", 2, "--image-size", 64, "--output", calib)
    assert cli_run(*args)[0] == 0
    before = (calib / "calibration.json").read_text()
    code, _, err = cli_run(*args, "--seed", 3)
    assert_refused(code, err, "exists", "--force")
    assert (calib / "calibration.json").read_text() == before
    assert cli_run(*args, "--seed", 3, "--force")[0] == 0
    assert (calib / "calibration.json").read_text() != before

    model = tmp_path / "model.safetensors"
    model.write_bytes(b"a user's checkpoint")
    code, _, err = cli_run("train", "--data", photo_dir, "--output", model, "--epochs", 1)
    assert_refused(code, err, "exists", "--force")
    assert model.read_bytes() == b"a user's checkpoint"


def test_published_outputs_get_the_umask_permissions(tmp_path, tiny_checkpoint, photo_dir):
    from restv2_edge.calibration.dataset import build_calibration_set, save_calibration_set
    from restv2_edge.converters.base import ExportRequest

    from restv2_edge.checkpoint import save_checkpoint
    from restv2_edge.export import export_artifact
    from restv2_edge.factory import create_model
    from restv2_edge.golden import write_golden

    old = os.umask(0o027)
    try:
        model = create_model(weights=tiny_checkpoint)
        art, _ = export_artifact(model, "onnx", tmp_path / "art", ExportRequest(),
                                 parity_data=photo_dir, parity_limit=2)  # fmt: skip
        golden, _ = write_golden(art, tmp_path / "golden", 1, photo_dir)
        calib = save_calibration_set(
            build_calibration_set(photo_dir, 2, model.preprocessing), tmp_path / "calib"
        )
        ckpt = save_checkpoint(model, tmp_path / "m.safetensors", CIFAR10_CLASSES,
                               model.preprocessing)  # fmt: skip
        folder_mode, file_mode = umask_mode(True), umask_mode(False)
    finally:
        os.umask(old)
    assert (folder_mode, file_mode) == (0o750, 0o640)
    for folder in (art, golden, calib):
        assert folder.stat().st_mode & 0o777 == folder_mode, folder
        for path in folder.rglob("*"):
            expected = folder_mode if path.is_dir() else file_mode
            assert path.stat().st_mode & 0o777 == expected, path
    assert ckpt.stat().st_mode & 0o777 == file_mode


def test_partials_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "art"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".art.partial-{dead}-0123abcd"
    alive = tmp_path / f".art.partial-{os.getppid()}-4567cdef"
    other = tmp_path / ".other.partial-1-89abcdef"
    for folder in (stale, alive, other):
        folder.mkdir()
    assert remove_stale_partials(out) == [stale]
    with staged_dir(out) as work:
        (work / "x").write_text("x")
    assert not stale.exists() and alive.is_dir() and other.is_dir() and out.is_dir()


# -- property: every command verifies the artifact or refuses it in one line -----------------

FIELDS = [
    ("image_size",), ("num_classes",), ("model_file",), ("labels",), ("target",),
    ("precision",), ("format_version",), ("input", "shape"), ("input", "mean"),
    ("input", "std"), ("input", "scale"), ("input", "crop_pct"), ("input", "interpolation"),
    ("output", "shape"), ("files",), ("files", 0, "path"), ("files", 0, "bytes"),
    ("files", 0, "sha256"), ("config",), ("parity",), ("quantization",),
]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
MUTATIONS = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(FIELDS), JSON_VALUES),
    st.tuples(st.just("delete"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**9), st.none()),
    st.tuples(st.just("extra"), st.sampled_from(["x.bin", "model.onnx.data"]), st.none()),
)


def _mutate(folder: Path, mutation) -> bool:
    """Apply one mutation; True when hashed bytes changed (then refusal is mandatory)."""
    kind, where, value = mutation
    if kind in ("field", "delete"):
        data = json.loads((folder / MANIFEST_NAME).read_text())
        parent = data
        try:
            for key in where[:-1]:
                parent = parent[key]
            if kind == "delete":
                del parent[where[-1]]
            else:
                parent[where[-1]] = value
        except (KeyError, IndexError, TypeError):
            return False
        (folder / MANIFEST_NAME).write_text(json.dumps(data))
        return False
    model = folder / "model.onnx"
    raw = bytearray(model.read_bytes())
    if kind == "flip":
        raw[where % len(raw)] ^= value
        model.write_bytes(bytes(raw))
        return True
    if kind == "truncate":
        model.write_bytes(bytes(raw[: where % len(raw)]))
        return True
    (folder / where).write_bytes(b"unlisted")
    return True


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutation=MUTATIONS)
def test_property_every_command_verifies_or_refuses(
    mutation, artifact, tmp_path_factory, photo_dir, tiny_checkpoint
):
    base = tmp_path_factory.mktemp("prop")
    folder = base / "art"
    shutil.copytree(artifact, folder)
    must_refuse = _mutate(folder, mutation)
    photo = sorted(photo_dir.iterdir())[0]
    golden_out, report = base / "golden", base / "report.json"
    commands = [
        ("predict", folder, photo),
        ("golden", folder, "--output", golden_out, "--images", 1),
        ("bench", folder, "--runs", 1, "--warmup", 0, "--no-memory", "--json", report),
        ("parity", folder, "--weights", tiny_checkpoint, "--limit", 2),
    ]
    for command in commands:
        code, _, err = cli_run(*command)
        if code != 0:
            assert_refused(code, err)
            assert not golden_out.exists() or command[0] != "golden"
            assert not report.exists() or command[0] != "bench"
        else:
            assert not must_refuse, f"{command[0]} accepted changed hashed bytes"
            verify_files(folder)
    if must_refuse:
        with pytest.raises(ArtifactError):
            verify_files(folder)
    leftovers = [p.name for p in base.iterdir() if ".partial-" in p.name]
    assert leftovers == []
