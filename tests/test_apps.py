"""Demo apps on golden vectors made in this run from fresh exports (format: apps/README.md).

- Android: the plain-JVM core (manifest parsing, Pillow-exact preprocessing, top-k) compiled with
  javac and run with JUnit 5 (Debian's junit5) on golden vectors of an ExecuTorch export.
- Web: the page's pure modules under Node, and the page itself in headless Chromium driven by
  playwright-core (apps/web/tests/e2e.mjs) on golden vectors of an ONNX export.
- apps/scripts/copy-export.py, which puts exports into the apps.

Needs java/javac + /usr/share/java (apt: default-jdk-headless junit5), node with
apps/web/node_modules (npm ci --prefix apps/web) and /usr/bin/chromium (apt: chromium). Without
them these tests skip with the reason, or fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CIFAR10_CLASSES, run_cli
from PIL import Image

from restv2_edge.golden import read_golden

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "apps" / "web"
ANDROID_MAIN = REPO / "apps" / "android" / "app" / "src" / "main" / "java"
ANDROID_TEST = REPO / "apps" / "android" / "app" / "src" / "test" / "java"
CORE = ANDROID_MAIN / "org" / "restv2edge" / "demo" / "core"
COPY_EXPORT = REPO / "apps" / "scripts" / "copy-export.py"
CIFAR10_PHOTOS = REPO / "apps" / "scripts" / "cifar10-photos.py"
CIFAR10_TABLE = REPO / "apps" / "scripts" / "cifar10-imagenet.tsv"
JAVA_LIBS = Path(os.environ.get("RESTV2_JAVA_LIBS", "/usr/share/java"))
JUNIT_CONSOLE = JAVA_LIBS / "junit-platform-console-standalone.jar"
JUNIT_COMPILE = ["junit-jupiter-api.jar", "apiguardian-api.jar", "opentest4j.jar"]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
PROB_TOL = 1e-3
# photos of the shared ImageNet sample that stress decoders: Adobe RGB ICC profile, greyscale
EDGE_PHOTOS = ["n01532829_house_finch.JPEG", "n02815834_beaker.JPEG"]
# odd sizes: upscaling on both axes, one axis unchanged (one resample pass), tiny, near-square
EDGE_SIZES = [(37, 23), (64, 200), (201, 64), (65, 67), (3, 5)]


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _need_java() -> None:
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            _missing(f"{tool} not found (apt-get install default-jdk-headless)")
    for jar in [JUNIT_CONSOLE.name, *JUNIT_COMPILE]:
        if not (JAVA_LIBS / jar).is_file():
            _missing(f"{JAVA_LIBS / jar} not found (apt-get install junit5)")


def _need_web(browser: bool) -> None:
    if shutil.which("node") is None:
        _missing("node not found (apt-get install nodejs npm)")
    for package in ("onnxruntime-web", "playwright-core"):
        if not (WEB / "node_modules" / package / "package.json").is_file():
            _missing(f"apps/web/node_modules/{package} missing (npm ci --prefix apps/web)")
    if browser and not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")


def _export(checkpoint: Path, target: str, output: Path) -> Path:
    # about a minute for ExecuTorch on 2 idle cores; far longer when other jobs share them
    result = run_cli(
        "export", "--target", target, "--weights", checkpoint, "--output", output, timeout=1800
    )
    assert result.returncode == 0, result.stderr
    return output


def _golden(artifact: Path, output: Path, *extra: str) -> Path:
    result = run_cli("golden", artifact, "--output", output, *extra)
    assert result.returncode == 0, result.stderr
    return output


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apps")


@pytest.fixture(scope="module")
def onnx_export(tiny_checkpoint: Path, work: Path) -> Path:
    return _export(tiny_checkpoint, "onnx", work / "export-onnx")


@pytest.fixture(scope="module")
def executorch_export(tiny_checkpoint: Path, work: Path) -> Path:
    from restv2_edge.converters.base import get_converter

    from restv2_edge.errors import BackendMissingError

    try:
        get_converter("executorch").check_installed()
    except BackendMissingError as exc:
        _missing(str(exc))
    return _export(tiny_checkpoint, "executorch", work / "export-executorch")


@pytest.fixture(scope="module")
def golden_onnx(onnx_export: Path, photo_dir: Path, work: Path) -> Path:
    return _golden(onnx_export, work / "golden-onnx", "--images", "4")


@pytest.fixture(scope="module")
def golden_executorch(executorch_export: Path, photo_dir: Path, work: Path) -> Path:
    return _golden(executorch_export, work / "golden-executorch", "--images", "4")


@pytest.fixture(scope="module")
def golden_edge(onnx_export: Path, photo_dir: Path, work: Path) -> Path:
    """Photos that stress decoders and the resampler: ICC, greyscale, odd sizes, upscaling."""
    folder = work / "edge-photos"
    folder.mkdir()
    for name in EDGE_PHOTOS:
        if (photo_dir / name).is_file():
            shutil.copyfile(photo_dir / name, folder / name)
    base = Image.open(sorted(photo_dir.iterdir())[0]).convert("RGB")
    for i, (w, h) in enumerate(EDGE_SIZES):
        crop = base.crop((100, 50, 100 + 2 * w, 50 + 2 * h)).resize((w, h), Image.NEAREST)
        crop.save(folder / f"odd{i}_{w}x{h}.png")
    count = len(list(folder.iterdir()))
    return _golden(onnx_export, work / "golden-edge", "--images", str(count), "--data", folder)


# -- Android: the plain-JVM core -------------------------------------------------------------


def test_android_core_has_no_android_imports():
    sources = list(CORE.glob("*.java")) + list(ANDROID_TEST.rglob("*.java"))
    assert sources
    for path in sources:
        imports = re.findall(r"^import\s+(?:static\s+)?([\w.]+)", path.read_text(), re.M)
        bad = [name for name in imports if name.startswith(("android.", "androidx."))]
        assert not bad, f"{path.name} imports {bad}: the core must run on a plain JVM"


@pytest.fixture(scope="module")
def jvm_classes(work: Path) -> Path:
    _need_java()
    out = work / "jvm-classes"
    sources = [str(p) for p in [*CORE.glob("*.java"), *ANDROID_TEST.rglob("*.java")]]
    classpath = os.pathsep.join(str(JAVA_LIBS / jar) for jar in JUNIT_COMPILE)
    result = subprocess.run(
        ["javac", "-Xlint:all", "-Werror", "-d", str(out), "-cp", classpath, *sources],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _junit(classes: Path, golden: Path, artifact: Path | None = None) -> dict[str, int]:
    props = [f"-Drestv2.golden={golden}"]
    if artifact is not None:
        props.append(f"-Drestv2.artifact={artifact}")
    options = ["--select-package", "org.restv2edge.demo.core", "--disable-banner"]
    options += ["--disable-ansi-colors", "--details=summary", "--fail-if-no-tests"]
    result = subprocess.run(
        ["java", *props, "-jar", str(JUNIT_CONSOLE), "-cp", str(classes), *options],
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = {key: int(n) for n, key in re.findall(r"\[\s+(\d+) tests (\w+)\s+\]", result.stdout)}
    diffs = re.findall(r"max \|input - golden\| = (\S+) \(Pillow-decoded pixels\)", result.stdout)
    assert diffs and all(float(d) == 0.0 for d in diffs), result.stdout
    return {**counts, "images": len(diffs)}


def test_android_core_on_executorch_golden(jvm_classes, golden_executorch, executorch_export):
    index = read_golden(golden_executorch)
    assert index["artifact"]["target"] == "executorch"
    counts = _junit(jvm_classes, golden_executorch, executorch_export)
    assert counts["failed"] == 0 and counts["aborted"] == 0, counts
    assert counts["successful"] >= 25, counts
    assert counts["images"] == len(index["images"]) == 4


def test_android_core_on_odd_sizes_and_decoders(jvm_classes, golden_edge):
    counts = _junit(jvm_classes, golden_edge)
    assert counts["failed"] == 0, counts
    assert counts["images"] == len(read_golden(golden_edge)["images"])


# -- Web --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["golden_onnx", "golden_edge"])
def test_web_modules_under_node(which, request):
    _need_web(browser=False)
    golden = request.getfixturevalue(which)
    result = subprocess.run(
        ["node", "--test", "tests/preprocess.test.mjs"],
        cwd=WEB,
        env={**os.environ, "GOLDEN_DIR": str(golden)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^# pass 6$", result.stdout, re.M), result.stdout
    assert re.search(r"^# skipped 0$", result.stdout, re.M), result.stdout


def _e2e(golden: Path, model: Path, work: Path, name: str, *extra: str, ok: bool = True) -> dict:
    """Run apps/web/tests/e2e.mjs; ``extra``: --webgpu, --ep MODE. ``ok``: it must pass."""
    report = work / f"{name}-report.json"
    screenshot = work / f"{name}.png"
    paths = ["--golden", golden, "--model", model, "--report", report, "--screenshot", screenshot]
    result = subprocess.run(
        ["node", "tests/e2e.mjs", *map(str, paths), *extra],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(result.stdout)
    if ok:
        assert result.returncode == 0, result.stdout + result.stderr
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.is_file(), result.stdout + result.stderr
    return json.loads(report.read_text())


def _check_backend(report: dict, mode: str = "auto") -> str:
    """The provider the page runs on follows what the browser itself reports about WebGPU
    (the e2e test asks navigator.gpu.requestAdapter() on a blank page first), and the page says
    it. Returns the provider, for the caller's own expectation."""
    probe, backend = report["webgpuProbe"], report["backend"]
    adapter = probe["adapter"]
    print(f"WebGPU probe: {probe}; page: {backend['shown']}")
    assert backend["shownEp"] == backend["ep"]
    if mode == "webgpu" or (mode == "auto" and adapter and not adapter["isFallbackAdapter"]):
        assert backend["ep"] == "webgpu" and backend["shown"].startswith("Runs on WebGPU")
        assert "(WebGPU)" in report["modelInfo"]
        return "webgpu"
    assert backend["ep"] == "wasm" and "(wasm, " in report["modelInfo"]
    reason = backend["fallbackReason"]
    assert reason and f"WebGPU not used: {reason}" in backend["shown"]
    if adapter is None:  # the browser has no adapter: the page says so
        assert "requestAdapter() returned no adapter" in reason or not probe["navigatorGpu"]
    elif mode == "auto":  # a software adapter only: declined, and said so
        assert "software" in reason and adapter["architecture"] in reason
    return "wasm"


def _check_against_golden(report: dict, golden: Path) -> None:
    """The page's answers, checked again here against the golden vectors."""
    index = read_golden(golden)
    by_name = {entry["name"]: entry for entry in index["images"]}
    seen = {(image["name"], image["via"]) for image in report["images"]}
    assert {(name, "file input") for name in by_name} <= seen
    for image in report["images"]:
        expected = by_name[image["name"]]["top5"]
        assert image["topPage"][0][0] == expected[0]["index"], image["name"]
        probs = image["pageProbabilities"]
        for entry in expected:
            assert abs(probs[entry["index"]] - entry["probability"]) <= PROB_TOL, image["name"]
    assert report["failures"] == []


def test_web_page_in_chromium(golden_onnx, onnx_export, work):
    _need_web(browser=True)
    model = work / "web-model"
    copied = subprocess.run(
        [sys.executable, str(COPY_EXPORT), "web", str(onnx_export), "--dest", str(model)],
        capture_output=True,
        text=True,
    )
    assert copied.returncode == 0, copied.stderr
    report = _e2e(golden_onnx, model, work, "web-onnx")
    _check_against_golden(report, golden_onnx)
    # Chromium as the tests start it (--disable-gpu) offers no WebGPU adapter: wasm, reason shown
    _check_backend(report)
    assert {image["via"] for image in report["images"]} == {"file input", "drop"}
    assert {tuple(image["feedShape"]) for image in report["images"]} == {(1, 3, 64, 64)}
    assert len(report["history"]) == len(read_golden(golden_onnx)["images"])
    # Chromium decodes these JPEGs exactly as Pillow does: the tensors are identical
    assert max(image["maxInputDiff"] for image in report["images"]) == 0.0
    message = report["checks"]["nonImage"]["message"]
    assert "notes.txt" in message and "not an image" in message


def test_web_page_on_odd_sizes_and_decoders(golden_edge, onnx_export, work):
    """Also the WebGPU decision where Chromium offers an adapter (--enable-unsafe-webgpu): here,
    without a GPU, SwiftShader's software adapter, which the page declines for wasm, saying why;
    with a GPU adapter the page must run on WebGPU and still match the golden vectors."""
    _need_web(browser=True)
    report = _e2e(golden_edge, onnx_export, work, "web-edge", "--webgpu")
    _check_against_golden(report, golden_edge)
    _check_backend(report)
    # no colour management and no resampling in the browser path: ICC, grey and PNG all exact
    assert max(image["maxInputDiff"] for image in report["images"]) == 0.0


@pytest.mark.slow
def test_web_page_on_webgpu(golden_onnx, onnx_export, work):
    """?ep=webgpu: the WebGPU execution provider on whatever adapter Chromium offers (without a
    GPU: SwiftShader, a software WebGPU, about a minute on 2 shared cores), against the golden
    vectors; where Chromium offers no adapter at all, the page refuses with the reason."""
    _need_web(browser=True)
    report = _e2e(golden_onnx, onnx_export, work, "web-webgpu", "--webgpu", "--ep", "webgpu",
                  ok=False)  # fmt: skip
    if report["webgpuProbe"]["adapter"] is None:
        print(f"no WebGPU adapter in this Chromium: {report['webgpuProbe']}")
        assert report["failures"] == [f"model did not load: {report['loadError']}"]
        assert report["loadError"].startswith("WebGPU was requested (?ep=webgpu) but ")
        return
    assert _check_backend(report, mode="webgpu") == "webgpu"
    _check_against_golden(report, golden_onnx)


@pytest.mark.slow
def test_web_page_runs_an_fp16_export(tiny_checkpoint, photo_dir, work):
    """The page is precision-agnostic: an fp16 ONNX export (float32 input/output) runs as is."""
    _need_web(browser=True)
    result = run_cli(
        "export", "--target", "onnx", "--precision", "fp16", "--weights", tiny_checkpoint,
        "--output", work / "export-onnx-fp16",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    golden = _golden(work / "export-onnx-fp16", work / "golden-onnx-fp16", "--images", "2")
    report = _e2e(golden, work / "export-onnx-fp16", work, "web-fp16")
    _check_against_golden(report, golden)
    assert "fp16" in report["modelInfo"]


def test_web_page_refuses_webgpu_without_adapter(golden_onnx, onnx_export, work):
    """?ep=webgpu where Chromium offers no adapter (--disable-gpu): no silent fallback."""
    _need_web(browser=True)
    report = _e2e(golden_onnx, onnx_export, work, "web-nogpu", "--ep", "webgpu", ok=False)
    assert report["webgpuProbe"]["adapter"] is None, report["webgpuProbe"]
    assert report["loadError"] == (
        "WebGPU was requested (?ep=webgpu) but navigator.gpu.requestAdapter() returned no "
        "adapter (no usable GPU, or WebGPU is disabled for it in this browser)"
    )
    assert report["images"] == [] and report["modelInfo"] == "No model loaded."


@pytest.mark.slow
def test_web_page_runs_a_dynamic_batch_export(tiny_checkpoint, photo_dir, work):
    """--dynamic-batch: the page feeds one image as batch 1 (no padding to the nominal batch)."""
    _need_web(browser=True)
    export = work / "export-onnx-dynamic"
    result = run_cli("export", "--target", "onnx", "--weights", tiny_checkpoint, "--dynamic-batch",
                     "--batch", "2", "--output", export)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((export / "manifest.json").read_text())["input"]["dynamic_batch"] is True
    golden = _golden(export, work / "golden-onnx-dynamic", "--images", "2")
    report = _e2e(golden, export, work, "web-dynamic")
    _check_against_golden(report, golden)
    assert {tuple(image["feedShape"]) for image in report["images"]} == {(1, 3, 64, 64)}


# -- apps/scripts: the demo photos and the screenshot -----------------------------------------


def _photos(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CIFAR10_PHOTOS), *map(str, args)], capture_output=True, text=True
    )


def _table_rows() -> list[list[str]]:
    """cifar10-imagenet.tsv: [cifar10, imagenet_index, synset, imagenet_name] rows."""
    lines = [line for line in CIFAR10_TABLE.read_text().splitlines() if not line.startswith("#")]
    assert lines[0] == "cifar10\timagenet_index\tsynset\timagenet_name"
    return [line.split("\t") for line in lines[1:]]


def test_cifar10_photo_table_matches_imagenet(shared_data):
    """Every row of cifar10-imagenet.tsv names a real ImageNet-1k class (index, synset, name
    as in the shared classes.tsv), and the CIFAR-10 classes are the fixture's own labels."""
    classes = {}
    for line in (shared_data / "imagenet-sample" / "classes.tsv").read_text().splitlines()[1:]:
        index, synset, name = line.split("\t")
        classes[synset] = (int(index), name)
    rows = _table_rows()
    assert len(rows) > 100
    for cifar, index, synset, name in rows:
        assert cifar in CIFAR10_CLASSES
        assert classes[synset] == (int(index), name), synset
    assert len({synset for _, _, synset, _ in rows}) == len(rows)


def test_cifar10_photos_pick_one_per_class(photo_dir, tmp_path):
    out = tmp_path / "photos"
    result = _photos("pick", out, "--data", photo_dir)
    assert result.returncode == 0, result.stderr
    table = {synset: cifar for cifar, _, synset, _ in _table_rows()}
    picked = sorted(out.iterdir())
    classes = [table[p.name.split("_", 1)[0]] for p in picked]
    # the sample (even ImageNet indices) has no horse (sorrel is 339) and ImageNet has no deer
    assert sorted(classes) == sorted(set(CIFAR10_CLASSES) - {"horse", "deer"})
    assert all(p.is_symlink() and p.resolve().parent == photo_dir.resolve() for p in picked)
    listed = _photos("list", "--data", photo_dir).stdout.split()
    assert {p.resolve() for p in picked} <= {Path(p).resolve() for p in listed}
    assert _photos("pick", out, "--data", photo_dir).returncode == 1  # never into an existing one


@pytest.mark.slow
def test_web_screenshot_pipeline(fixture_checkpoint, shared_data, tmp_path):
    """apps/scripts/web-screenshot.sh end to end: fixture export, copy, golden, page, score."""
    _need_web(browser=True)
    png = tmp_path / "demo.png"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # this restv2-edge
    result = subprocess.run(
        ["bash", str(REPO / "apps" / "scripts" / "web-screenshot.sh"), str(fixture_checkpoint),
         str(png)],
        capture_output=True, text=True, timeout=1800,
        env={**os.environ, "PATH": path},
    )  # fmt: skip
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "10 passed, 0 failed" in result.stdout
    listed = len(_photos("list").stdout.split())
    assert re.search(rf"for \d+ of {listed} photos", result.stdout), result.stdout


# -- apps/scripts/copy-export.py --------------------------------------------------------------


def _copy(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(COPY_EXPORT), *map(str, args)], capture_output=True, text=True
    )


def test_copy_export_checks_target_and_hashes(onnx_export, golden_onnx, tmp_path):
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "stale.bin").write_bytes(b"old")
    assert _copy("web", onnx_export, "--dest", dest).returncode == 0
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "model.onnx"]
    assert (dest / "model.onnx").read_bytes() == (onnx_export / "model.onnx").read_bytes()

    wrong = _copy("android", onnx_export, "--dest", tmp_path / "android")
    assert wrong.returncode == 1 and "--target executorch" in wrong.stderr
    assert not (tmp_path / "android").exists()

    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_export, tampered)
    with open(tampered / "model.onnx", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    bad = _copy("web", tampered, "--dest", tmp_path / "web2")
    assert bad.returncode == 1 and "sha256" in bad.stderr
    assert not (tmp_path / "web2").exists()

    not_export = _copy("web", tmp_path, "--dest", tmp_path / "web3")
    assert not_export.returncode == 1 and "no manifest.json" in not_export.stderr

    golden_copy = tmp_path / "golden"
    assert _copy("ios-golden", golden_onnx, "--dest", golden_copy).returncode == 0
    copied = read_golden(golden_copy)
    original = read_golden(golden_onnx)
    for a, b in zip(copied["images"], original["images"]):
        np.testing.assert_array_equal(a["input_array"], b["input_array"])
    assert _copy("ios-golden", onnx_export, "--dest", tmp_path / "g2").returncode == 1
