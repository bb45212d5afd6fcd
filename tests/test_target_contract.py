"""The contract every registered target keeps, checked for each one without naming it.

Parametrized over ``target_names()`` at collection time, so a new target is covered by adding
its module. On the tiny config (64x64, randomized official-layout weights) and real photos,
for every float precision a descriptor declares:

- the manifest: required fields, ``files`` hashes (hashed here and by ``verify_files``), the
  model file's suffix, the descriptor's ``manifest_fields`` in ``export``, a passed parity
  record that names the photos;
- the runner (``open_artifact``) against the independent official-structure model
  (tests/reference_restv2.py) with the same weights: fp32 max |dlogit| <= 1e-4, the
  product's promise, stricter than parity.py's 1e-3 gate; fp16 parity.py's gate plus exact
  top-1 on these photos; parity.py's own gate always;
- reproducible bytes: the default precision exported again through the CLI in a fresh process
  (another hash seed, fresh process-wide state) gives the files of the in-process export; the
  exceptions are listed in ``NOT_BYTE_REPRODUCIBLE``, each file with its reason, and compared
  after the one normalization that reason allows;
- refused precisions: one ``error:`` line from the CLI, nothing written; ``bf16`` through the
  API is refused naming the target;
- a missing backend: ``BackendMissingError`` naming the package and
  ``pip install 'restv2-edge[<extra>]'``, in-process and as the CLI's one line.

Artifacts come from conftest's session-scoped ``tiny_artifact`` (exported once per target and
precision, shared with the per-target modules). What is particular to a target (delegation,
op types, Core ML spec, QDQ placement...) stays in its own tests/test_<target>.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CIFAR10_CLASSES,
    TINY_CONFIG,
    TINY_IMAGE_SIZE,
    _missing,
    assert_one_line_error,
    file_hashes,
    oracle_logits,
    oracle_model,
    run_cli,
)
from restv2_edge.calibration.recipes import supported_precisions
from restv2_edge.converters.base import ExportRequest, get_descriptor, target_names

import restv2_edge
from restv2_edge.artifact import open_artifact
from restv2_edge.errors import BackendMissingError, ExportError, RunnerUnavailableError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.manifest import FORMAT_VERSION, Manifest, verify_files
from restv2_edge.parity import THRESHOLDS, compare, failures, gate_precision, load_inputs
from restv2_edge.preprocess import Preprocessing

# coremltools and torch.export internals
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

TARGETS = target_names()
PAIRS = [
    pytest.param(target, precision, id=f"{target}-{precision}")
    for target in TARGETS
    for precision in get_descriptor(target).precisions
]
#: every float precision some target declares: the CLI's --precision choices
FLOATS = sorted({p for t in TARGETS for p in get_descriptor(t).precisions})

#: photos the runner is compared on (the export's own parity gate ran on 8 of them)
REFERENCE_PHOTOS = 24
#: the product's promise for fp32 against the official-structure model (parity.py gates 1e-3)
FP32_MAX_ABS_DIFF = 1e-4


def _package_items(path: Path) -> tuple:
    """An .mlpackage's Manifest.json without its item identifiers: the format version, the
    items (sorted), and which item is the root."""
    data = json.loads(path.read_text())
    items = data["itemInfoEntries"]
    assert set(data) == {"fileFormatVersion", "itemInfoEntries", "rootModelIdentifier"}, data
    return (
        data["fileFormatVersion"],
        sorted(json.dumps(item, sort_keys=True) for item in items.values()),
        items[data["rootModelIdentifier"]],
    )


def _protobuf_deterministic(path: Path) -> bytes:
    """A Core ML spec re-serialized by the protobuf runtime with sorted map entries."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    return spec.SerializeToString(deterministic=True)


#: target -> {file: (normalization, why the raw bytes vary)}. Every other file must be
#: byte-identical; a listed file must be identical after its normalization. Core ML's entries
#: are a product defect found by this contract (no test checked Core ML's bytes before): its
#: manifest ``files`` hashes change on every export of the same checkpoint.
NOT_BYTE_REPRODUCIBLE: dict[str, dict[str, tuple[Callable[[Path], object], str]]] = {
    "coreml": {
        "model.mlpackage/Manifest.json": (
            _package_items,
            "coremltools' package writer (MLModel.save) keys the spec and weights items by a "
            "fresh uuid4 on every save (and lists them in the identifiers' order)",
        ),
        "model.mlpackage/Data/com.apple.CoreML/model.mlmodel": (
            _protobuf_deterministic,
            "coremltools serializes the spec without deterministic=True: its protobuf maps "
            "(metadata, op inputs and attributes) come out in a per-process order; the parsed "
            "spec is identical",
        ),
    },
}

# the manifest keys every artifact writes (manifest.Manifest.to_json), whatever the target
MANIFEST_KEYS = {
    "format_version", "target", "precision", "variant", "config", "image_size", "num_classes",
    "model_file", "files", "input", "output", "labels", "versions", "parity", "graph_form",
    "export", "quantization",
}  # fmt: skip


@pytest.fixture(scope="module")
def reference_batch(tiny_checkpoint: Path, photo_dir: Path):
    """``reference_batch(preprocessing)`` -> (photos as the artifact takes them, the
    official-structure model's logits for them); computed once per preprocessing."""
    model = oracle_model(tiny_checkpoint, **TINY_CONFIG)
    cache: dict[Preprocessing, tuple[np.ndarray, np.ndarray]] = {}

    def get(pre: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
        if pre not in cache:
            inputs = load_inputs(pre, photo_dir, REFERENCE_PHOTOS)
            assert inputs.images.shape[0] == REFERENCE_PHOTOS and not inputs.synthetic
            cache[pre] = inputs.images, oracle_logits(model, inputs.images)
        return cache[pre]

    return get


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint: Path):
    return create_model(weights=tiny_checkpoint)


def _installed(target: str) -> None:
    try:
        get_descriptor(target).check_installed()
    except BackendMissingError as exc:
        _missing(str(exc))


# -- the manifest ------------------------------------------------------------------------------


@pytest.mark.parametrize("target, precision", PAIRS)
def test_manifest_contract(tiny_artifact, photo_dir: Path, target: str, precision: str) -> None:
    descriptor = get_descriptor(target)
    folder, _ = tiny_artifact(target, precision)
    data = json.loads((folder / "manifest.json").read_text())
    assert set(data) == MANIFEST_KEYS, sorted(set(data) ^ MANIFEST_KEYS)
    manifest = Manifest.read(folder)
    assert data["format_version"] == FORMAT_VERSION
    assert (manifest.target, manifest.precision) == (target, precision)
    assert manifest.image_size == TINY_IMAGE_SIZE and manifest.num_classes == 10
    assert {key: manifest.config[key] for key in TINY_CONFIG} == TINY_CONFIG
    assert manifest.variant is None  # a custom config, not a published variant
    assert manifest.labels == CIFAR10_CLASSES
    chosen_form = descriptor.converter.graph_form_for(ExportRequest(precision=precision))
    assert manifest.graph_form == chosen_form
    assert manifest.quantization is None

    # input and output: static, float32, NCHW, the checkpoint's preprocessing
    pre = Preprocessing(TINY_IMAGE_SIZE, crop_pct=1.0)
    spec = manifest.input
    assert isinstance(spec["name"], str) and spec["name"]
    assert spec["shape"] == [1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE]
    assert (spec["dtype"], spec["layout"]) == ("float32", "NCHW")
    assert (spec["mean"], spec["std"]) == (list(pre.mean), list(pre.std))
    assert (spec["scale"], spec["crop_pct"], spec["interpolation"]) == (
        pre.scale, pre.crop_pct, pre.interpolation
    )  # fmt: skip
    assert manifest.preprocessing() == pre
    assert isinstance(manifest.output["name"], str) and manifest.output["name"]
    assert manifest.output["shape"] == [1, 10]

    # versions: the package, torch, and the backend's own
    assert manifest.versions["restv2_edge"] == restv2_edge.__version__
    assert manifest.versions["torch"] == torch.__version__
    backend = {k: v for k, v in manifest.versions.items() if k not in ("restv2_edge", "torch")}
    assert backend and all(isinstance(v, str) and v for v in backend.values()), manifest.versions

    # files: every file is listed with its size and sha256, hashed here independently
    verify_files(folder)
    listed = {entry["path"]: entry for entry in manifest.files}
    assert {path: entry["sha256"] for path, entry in listed.items()} == file_hashes(folder)
    for path, entry in listed.items():
        assert entry["bytes"] == (folder / path).stat().st_size, path
    model_file = manifest.model_file
    assert model_file.endswith(descriptor.suffix), (model_file, descriptor.suffix)
    assert model_file in listed or any(p.startswith(model_file + "/") for p in listed)

    # export: the descriptor's fields, and the (empty) target options of a default request
    assert set(descriptor.manifest_fields) <= set(manifest.export), manifest.export
    assert manifest.export["options"] == {}

    # parity: ran in the target's runtime on the photos, within parity.py's gate
    parity = manifest.parity
    if parity["status"] == "not run":
        pytest.skip(f"{target} parity not run on this machine: {parity['reason']}")
    assert parity["status"] == "passed", parity
    assert parity["precision"] == precision and parity["runner"]
    assert parity["synthetic"] is False
    images = parity["metrics"]["images"]
    assert images == 8 and parity["data"] == f"photos: {photo_dir} ({images})", parity["data"]
    # judged by the type the runtime computed in: its precision, or bf16 for an fp16 IR
    gate = parity["gate"]
    assert gate == precision or (precision == "fp16" and gate == "bf16"), parity
    assert parity["thresholds"] == THRESHOLDS[gate]
    assert parity["failures"] == [] and failures(parity["metrics"], gate) == []


# -- the runner against the official-structure model -------------------------------------------


@pytest.mark.parametrize("target, precision", PAIRS)
def test_runner_matches_reference_model(
    tiny_artifact, reference_batch, target: str, precision: str
) -> None:
    folder, _ = tiny_artifact(target, precision)
    try:
        manifest, runner = open_artifact(folder)
    except RunnerUnavailableError as exc:
        pytest.skip(f"{target} runner unavailable here: {exc}")
    images, expected = reference_batch(manifest.preprocessing())
    got = runner(images)
    assert got.shape == expected.shape and got.dtype == np.float32
    metrics = compare(expected, got)
    gate = gate_precision(precision, runner)
    assert failures(metrics, gate) == [], metrics  # parity.py's gate
    assert metrics["top1_agreement"] == 1.0, metrics
    if precision == "fp32":
        assert metrics["max_abs_diff"] <= FP32_MAX_ABS_DIFF, metrics
    else:
        assert metrics["cosine_min"] >= THRESHOLDS[gate]["cosine_min"], metrics


# -- reproducible bytes ------------------------------------------------------------------------


def _assert_same_files(target: str, first: Path, second: Path) -> None:
    """The two artifacts hold the same files, byte for byte, but for the listed exceptions."""
    a, b = file_hashes(first), file_hashes(second)
    assert sorted(a) == sorted(b)
    exceptions = NOT_BYTE_REPRODUCIBLE.get(target, {})
    differ = sorted(path for path in a if a[path] != b[path])
    assert set(differ) <= set(exceptions), f"{target}: {differ} differ between two exports"
    for path in differ:
        normalize, why = exceptions[path]
        assert normalize(first / path) == normalize(second / path), f"{target} {path}: {why}"
    if not differ:
        assert Manifest.read(first).files == Manifest.read(second).files


@pytest.mark.parametrize("target", TARGETS)
def test_same_checkpoint_gives_the_same_files_in_a_fresh_process(
    tiny_artifact, tiny_checkpoint: Path, photo_dir: Path, tmp_path: Path, target: str
) -> None:
    """The default precision twice, each through the CLI in a fresh process: same files.

    (A fresh export compared with one made late in a long test process differed for onnx:
    an open reproducibility question, see docs/graph-forms.md.)"""
    precision = get_descriptor(target).default_precision
    outs = [tmp_path / "cli-a", tmp_path / "cli-b"]

    def export(out: Path):
        return run_cli("export", "--target", target, "--precision", precision, "--weights",
                       tiny_checkpoint, "--output", out, "--parity-data", photo_dir,
                       "--parity-limit", "1")  # fmt: skip

    # two processes at once: a conversion is mostly one core's work
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(export, outs))
    for out, result in zip(outs, results):
        assert result.returncode == 0, result.stderr
        assert "parity passed" in result.stderr
        assert Manifest.read(out).precision == precision
    _assert_same_files(target, *outs)


# -- refused precisions ------------------------------------------------------------------------


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert not list(tmp_path.glob(f".{out.name}.partial-*"))


@pytest.mark.parametrize("target", TARGETS)
def test_undeclared_precision_is_a_one_line_error(
    tiny_model, tiny_checkpoint: Path, photo_dir: Path, tmp_path: Path, target: str
) -> None:
    declared = get_descriptor(target).precisions
    for precision in [p for p in FLOATS if p not in declared]:
        out = tmp_path / f"cli-{precision}"
        result = run_cli("export", "--target", target, "--precision", precision, "--output", out)
        assert_one_line_error(result, target, precision, *declared)
        _nothing_written(tmp_path, out)
    # int8 is never a --precision: it is --int8 with a calibration set
    out = tmp_path / "cli-int8"
    assert_one_line_error(
        run_cli("export", "--target", target, "--precision", "int8", "--output", out), "int8"
    )
    _nothing_written(tmp_path, out)
    if "int8" not in supported_precisions(target):  # no INT8 recipe: --int8 is refused
        out = tmp_path / "cli-int8-recipe"
        result = run_cli("export", "--target", target, "--int8", "--weights",
                         tiny_checkpoint, "--calib-data", photo_dir, "--calib-size", "2",
                         "--output", out)  # fmt: skip
        assert_one_line_error(result, target, "int8")
        _nothing_written(tmp_path, out)
    # a precision no target has, through the API: the converter names itself and its choices
    _installed(target)
    out = tmp_path / "api-fp8"
    with pytest.raises(ExportError, match=f"{target} cannot export precision fp8") as info:
        export_artifact(tiny_model, target, out, ExportRequest(precision="fp8"))
    assert all(p in str(info.value) for p in declared)
    _nothing_written(tmp_path, out)


# -- a missing backend -------------------------------------------------------------------------

# One process runs ``restv2-edge export`` once per target, each time with the target's first
# package unimportable (as on a machine without the extra), and prints what each run wrote.
_BLOCKED_CLI = """
import contextlib, importlib.util, io, json, sys
from restv2_edge.cli import run
real_find_spec = importlib.util.find_spec
results = {}
for target, package, *args in json.loads(sys.argv[1]):
    saved = {name: sys.modules.pop(name) for name in list(sys.modules)
             if name == package or name.startswith(package + ".")}
    sys.modules[package] = None
    importlib.util.find_spec = lambda name, *a, **k: (
        None if name.split(".")[0] == package else real_find_spec(name, *a, **k)
    )
    sys.argv = ["restv2-edge", *args]
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        importlib.util.find_spec = real_find_spec
        del sys.modules[package]
        sys.modules.update(saved)
    results[target] = [code, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def blocked_cli(tiny_checkpoint: Path, tmp_path_factory) -> dict:
    """target -> (the CompletedProcess of its blocked export, the output folder it named)."""
    root = tmp_path_factory.mktemp("blocked")
    runs = [
        [t, get_descriptor(t).packages[0], "export", "--target", t, "--weights",
         str(tiny_checkpoint), "--output", str(root / t)]
        for t in TARGETS
    ]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", _BLOCKED_CLI, json.dumps(runs)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        target: (subprocess.CompletedProcess(run[2:], *results[target]), root / target)
        for target, run in zip(TARGETS, runs)
    }


@pytest.mark.parametrize("target", TARGETS)
def test_missing_backend_names_the_extra(
    tiny_artifact,
    tiny_model,
    blocked_cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    descriptor = get_descriptor(target)
    install = f"pip install 'restv2-edge[{descriptor.extra}]'"
    first = descriptor.packages[0]

    # the CLI, in a process where the package cannot be imported: one line, nothing written
    result, out = blocked_cli[target]
    assert_one_line_error(result, first, install)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))

    # each package the descriptor checks, missing alone, is the one named
    for package in descriptor.packages:
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, package, None)
            with pytest.raises(BackendMissingError) as info:
                descriptor.check_installed()
        assert (info.value.package, info.value.extra) == (package, descriptor.extra)
        assert package in str(info.value) and install in str(info.value)

    # export and open: the first package missing
    _installed(target)
    folder, _ = tiny_artifact(target, descriptor.default_precision)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, first, None)
        with pytest.raises(BackendMissingError, match=re.escape(install)):
            export_artifact(tiny_model, target, out, ExportRequest())
        with pytest.raises(BackendMissingError, match=re.escape(install)):
            open_artifact(folder)
    _nothing_written(tmp_path, out)
