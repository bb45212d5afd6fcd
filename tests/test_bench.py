"""restv2-edge bench: artifacts, the export matrix, and the GPU reference path (CPU smoke)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, TINY_IMAGE_SIZE, assert_one_line_error, run_cli
from restv2_edge.converters.base import ExportRequest, get_converter, installed_targets

from restv2_edge import bench
from restv2_edge.errors import RunnerUnavailableError

REPO = Path(__file__).resolve().parents[1]
TINY_JSON = json.dumps(TINY_CONFIG)
# Everything the GPU path must run without: a plain checkout with torch and numpy only.
BLOCKED = ("click", "rich", "safetensors", "PIL", "onnx", "onnxruntime", "openvino",
           "executorch", "coremltools", "matplotlib", "restv2_edge.converters")  # fmt: skip
pytestmark = pytest.mark.skipif("onnx" not in installed_targets(), reason="onnx not installed")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    from restv2_edge.export import export_artifact
    from restv2_edge.factory import create_model

    model = create_model(weights=tiny_checkpoint)
    folder = tmp_path_factory.mktemp("bench") / "tiny-onnx"
    export_artifact(model, "onnx", folder, ExportRequest(), parity_limit=2)
    return folder


# -- pieces --------------------------------------------------------------------------------------


def test_summarize_median_p90_throughput() -> None:
    stats = bench.summarize([i / 1000 for i in range(1, 11)], batch=4)  # 1..10 ms
    assert stats["runs"] == 10
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.1)  # linear interpolation between 9 and 10
    assert stats["min_ms"] == pytest.approx(1.0)
    assert stats["images_per_s"] == pytest.approx(4 / 0.0055)


def test_round_robin_interleaves_every_round() -> None:
    calls: list[str] = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = bench.time_round_robin(candidates, warmup=2, runs=3, progress=lambda s: None)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 5 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({r[0] for r in rounds}) == 3  # the start rotates


def test_round_robin_in_blocks_settles_before_timing() -> None:
    calls: list[str] = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    times = bench.time_round_robin(candidates, warmup=1, runs=7, progress=lambda s: None, block=3)
    assert {k: len(v) for k, v in times.items()} == {"a": 7, "b": 7}
    # warm-up round (1 call each), then rounds of 1 settling + 3, 3, 1 timed calls each
    assert len(calls) == 2 * (1 + 4 + 4 + 2)
    assert calls[2:10] == ["b"] * 4 + ["a"] * 4  # the start rotates; blocks stay together


def test_machine_info_names_cpu_and_isa() -> None:
    info = bench.machine_info()
    assert info["cpu"] and info["usable_cores"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text()
        line = next(x for x in text.splitlines() if x.startswith(("flags", "Features")))
        flags = set(line.split(":", 1)[1].split())
        assert set(info["isa"]) == {f for f in bench.ISA_FLAGS if f in flags}
        assert info["usable_cores"] == len(os.sched_getaffinity(0))
        family = next((x for x in text.splitlines() if x.startswith("cpu family")), None)
        if family is not None:  # x86: the family and model that tell CPU generations apart
            model = next(x for x in text.splitlines() if x.split(":")[0].strip() == "model")
            expected = f"family {family.split(':')[1].strip()}, model {model.split(':')[1].strip()}"
            assert info["cpu_id"] == expected
            assert expected in bench.describe_machine(info)


def test_cpu_kind_names_the_machines_seen() -> None:
    from restv2_edge.bench.machine import cpu_kind

    amx = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_id": "family 6, model 143",
           "isa": ["avx512f", "amx_tile", "amx_int8"]}  # fmt: skip
    zen5 = {"cpu": "AMD EPYC", "cpu_id": "family 26, model 2", "isa": ["avx512f"]}
    zen4 = {"cpu": "AMD EPYC 9R14", "cpu_id": "family 25, model 17", "isa": ["avx512f"]}
    zen3 = {"cpu": "AMD EPYC 7R13", "cpu_id": "family 25, model 1", "isa": ["avx2"]}
    assert [cpu_kind(m) for m in (amx, zen5, zen4)] == ["intel-amx", "zen5", "zen4"]
    assert cpu_kind(zen3) == "amd-epyc-7r13-family-25-model-1"
    assert cpu_kind({"cpu": "", "cpu_id": None, "isa": []}) == "unknown"


def test_floors_and_rates() -> None:
    rates = {"fp32": 1e11, "bf16": 4e11, "fp16": 2e11, "int8": 8e11}
    assert bench.rate_for("fp16", rates) == ("bf16", 4e11)
    assert bench.rate_for("int8", rates) == ("int8", 8e11)
    assert bench.floor_ms(4_000_000_000, 2, 1e11) == pytest.approx(160.0)
    assert bench.floor_ms(1, 1, None) is None
    measured = bench.peak_rates(threads=1, size=128, reps=1)
    assert set(measured) == {"fp32", "bf16", "fp16", "int8"}
    assert measured["fp32"] and measured["fp32"] > 1e6  # even a starved CPU core does 1 MFLOP/s


def test_a_dtype_rate_is_its_fastest_kernel() -> None:
    """Hand-made timings: two fp32 kernels, the second twice as fast; no fp16 kernel."""
    cases = {name: (lambda: None, 1e9) for name in ("fp32", "fp32-onednn", "int8")}
    times = {"fp32": [0.02, 0.01], "fp32-onednn": [0.005, 0.006], "int8": [0.001]}
    rates = bench.rates_from(cases, times)
    assert rates == {"fp32": pytest.approx(2e11), "bf16": None, "fp16": None, "int8": 1e12}


def test_onednn_fp32_gemm_computes_the_product() -> None:
    """The oneDNN case is a real a @ b (so its rate is a GEMM's), beside torch.mm's."""
    import torch

    from restv2_edge.bench.floors import _onednn_linear

    a, b = torch.randn(64, 32), torch.randn(32, 48)
    with torch.inference_mode():
        call = _onednn_linear(a, b)
        if call is None:
            pytest.skip("this torch build has no oneDNN")
        assert torch.allclose(call().to_dense(), a @ b, atol=1e-4)
    assert "fp32-onednn" in bench.gemm_cases(64)


def test_plot_without_matplotlib_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RunnerUnavailableError, match="matplotlib"):
        bench.plot_matrix({"rows": []}, tmp_path / "x.png")


# -- artifacts -----------------------------------------------------------------------------------


def test_bench_artifacts_cli(tiny_onnx: Path, tmp_path: Path) -> None:
    import onnxruntime

    out = tmp_path / "bench.json"
    result = run_cli("bench", tiny_onnx, "--threads", "1", "--warmup", "1", "--runs", "3",
                     "--batch", "2", "--json", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "tiny-onnx" in result.stdout and "onnx" in result.stdout
    report = json.loads(out.read_text())
    assert report["versions"]["onnxruntime"] == onnxruntime.__version__
    assert report["machine"]["cpu"] and report["settings"]["batch"] == 2
    (row,) = report["rows"]
    on_disk = sum(p.stat().st_size for p in tiny_onnx.iterdir() if p.name != "manifest.json")
    assert row["size_mb"] == pytest.approx(on_disk / 1e6)
    assert row["runs"] == 3 and 0 < row["min_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["images_per_s"] == pytest.approx(2e3 / row["median_ms"])
    assert "onnxruntime" in row["runner"]
    memory = row["memory"]
    assert memory["peak_rss_mb"] > memory["load_run_mb"] > 0


def test_peak_memory_is_the_child_not_the_parent(tiny_onnx: Path) -> None:
    ballast = np.ones(400 * 2**20 // 8)  # this process now holds > 400 MB
    probe = bench.peak_memory(tiny_onnx, threads=1, batch=1, calls=1)
    assert probe["peak_rss_mb"] < 400, probe  # ru_maxrss would inherit this process's peak
    assert probe["peak_rss_mb"] > probe["load_run_mb"] > 0
    del ballast


def test_bench_errors_are_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("bench"), "ARTIFACT_DIR")
    assert_one_line_error(run_cli("bench", tmp_path / "missing"), "missing")


# -- the matrix ------------------------------------------------------------------------------------


def precisions(target: str) -> tuple[str, ...]:
    """The converter's float precisions, plus int8 where calibration/ has a recipe."""
    from restv2_edge.calibration.recipes import has_int8_recipe

    floats = get_converter(target).precisions
    return floats + (("int8",) if has_int8_recipe(target) else ())


def test_matrix_tiny(tiny_checkpoint: Path, cifar_test_tar: Path, tmp_path: Path) -> None:
    targets = ["onnx"]
    out, png, doc = tmp_path / "m.json", tmp_path / "m.png", tmp_path / "cpu.md"
    result = run_cli(
        "bench", "--matrix", "--weights", tiny_checkpoint, "--int8", "--targets", ",".join(targets),
        "--threads", "1", "--warmup", "1", "--runs", "2", "--parity-limit", "4",
        "--calib-size", "4", "--accuracy-data", cifar_test_tar, "--accuracy-limit", "10",
        "--output", tmp_path / "x", "--json", out, "--plot", png, "--markdown", doc,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = {row["key"]: row for row in report["rows"]}
    expected = {"pytorch/fp32"}
    for target in targets:
        supported = precisions(target)
        expected |= {f"{target}/{p}" for p in ("fp32", "fp16", "int8") if p in supported}
    assert set(rows) == expected
    for key, row in rows.items():
        assert row["status"] in ("ok", "reference"), (key, row.get("error"))
        assert row["median_ms"] > 0 and row["speedup_vs_eager"] > 0
        assert row["floor_ms"] > 0
        assert 0.0 <= row["accuracy"]["top1"] <= 1.0 and row["accuracy"]["images"] == 10
        parity = row["parity"]
        assert parity["cosine_mean"] is not None and parity["top1_agreement"] is not None
    fp32 = rows["onnx/fp32"]
    assert fp32["parity"]["status"] == "passed" and fp32["parity"]["cosine_min"] > 0.9999
    # same function, same images: the fp32 artifact classifies like PyTorch eager
    assert fp32["accuracy"]["top1"] == rows["pytorch/fp32"]["accuracy"]["top1"]
    assert report["model"]["macs"] > 0 and report["peak_rates"]["fp32"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = doc.read_text()
    assert report["machine"]["cpu"] in text and "bench --matrix" in text
    assert "| onnx | fp32 |" in text


@pytest.mark.slow
def test_matrix_every_installed_target(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    result = run_cli("bench", "--matrix", "--weights", tiny_checkpoint, "--int8", "--threads", "1",
                     "--warmup", "1", "--runs", "2", "--parity-limit", "4", "--calib-size", "8",
                     "--output", tmp_path / "x", "--json", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    for target in installed_targets():
        for precision in precisions(target):
            if precision in ("fp32", "fp16", "int8"):
                assert any(r["key"] == f"{target}/{precision}" for r in rows)


# -- GPU reference path ----------------------------------------------------------------------

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"blocked import: {{name}}")
        return None
sys.meta_path.insert(0, Block())
sys.argv = ["gpu_bench", *{argv!r}]
try:
    runpy.run_module({module!r}, run_name="__main__")
finally:
    loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
    assert not loaded, loaded
"""


def run_blocked(*argv: str, module: str = "restv2_edge.bench.gpu") -> subprocess.CompletedProcess:
    """``PYTHONPATH=. python -m restv2_edge.bench.gpu`` (or ``module``) with extras unimportable."""
    code = BLOCKER.format(blocked=BLOCKED, argv=list(argv), module=module)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=900)  # fmt: skip


def test_gpu_bench_cpu_smoke_needs_only_torch_numpy(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = run_blocked(
        "--device", "cpu", "--variant", TINY_JSON, "--image-size", str(TINY_IMAGE_SIZE),
        "--batch", "1", "2", "--dtype", "fp32", "bf16", "--warmup", "0", "--runs", "1",
        "--matmul-size", "128", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["variant"], r["dtype"], r["batch"]) for r in rows] == [
        ("custom", d, b) for d in ("fp32", "bf16") for b in (1, 2)
    ]
    for row in rows:
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / row["median_ms"])
        assert row["floor_ms"] > 0 and row["paper_v100_img_s"] is None  # 64 px: no paper figure
    assert "paper V100" in result.stdout


def test_gpu_bench_without_cuda_is_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    # the older module name, kept as an alias
    result = run_blocked("--device", "cuda", "--variant", "T", "S", "--batch", "1", "64",
                         module="restv2_edge.gpu_bench")  # fmt: skip
    assert_one_line_error(result, "no CUDA GPU")
    via_cli = run_cli("bench", "--device", "cuda", "--variant", "T", "S", "B", "L",
                      "--image-size", "224", "384", "--batch", "1", "64", "256",
                      "--dtype", "fp32", "tf32", "fp16", "bf16", "--compile")  # fmt: skip
    assert_one_line_error(via_cli, "no CUDA GPU")


def test_gpu_macs_match_published_t() -> None:
    from restv2_edge.bench.gpu import PAPER_V100
    from restv2_edge.complexity import total_macs
    from restv2_edge.config import VARIANTS
    from restv2_edge.model import ResTV2

    macs = total_macs(ResTV2(VARIANTS["T"], 224))
    assert macs == pytest.approx(4.1e9, rel=0.03)  # paper: 4.1 GMACs at 224
    assert PAPER_V100[224]["T"] == 826 and PAPER_V100[384]["L"] == 141


def test_macs_by_op_add_up_and_match_the_linear_layers_by_hand() -> None:
    """T@224's linear MACs from the architecture alone: per block q and proj over the N
    tokens, k and v over the N / sr^2 reduced ones, the 4x MLP; then the classifier."""
    from restv2_edge.complexity import count_macs_by_op, total_macs
    from restv2_edge.config import VARIANTS
    from restv2_edge.model import ResTV2

    config = VARIANTS["T"]
    model = ResTV2(config, 224)
    by_op = count_macs_by_op(model)
    assert sum(by_op.values()) == total_macs(model)
    linear = config.num_classes * config.embed_dims[-1]
    for stage, (dim, depth, sr) in enumerate(
        zip(config.embed_dims, config.depths, config.sr_ratios, strict=True)
    ):
        tokens = (224 // 2 ** (stage + 2)) ** 2
        per_block = 2 * tokens * dim * dim + 2 * (tokens // sr**2) * dim * dim
        linear += depth * (per_block + 8 * tokens * dim * dim)
    assert by_op["linear"] == linear
    assert by_op["conv"] > 0 and by_op["attention"] > 0


# -- the bench commands ----------------------------------------------------------------------


def test_bench_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, restv2_edge.cli; "
        "heavy = [m for m in ('numpy', 'torch', 'rich') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_bench_subcommand_help() -> None:
    from click.testing import CliRunner

    from restv2_edge.cli import main

    runner = CliRunner()
    group = runner.invoke(main, ["bench", "--help"])
    assert group.exit_code == 0 and all(c in group.output for c in ("run", "matrix", "gpu"))
    matrix = runner.invoke(main, ["bench", "matrix", "--help"])
    assert matrix.exit_code == 0, matrix.output
    assert "--int8" in matrix.output and "--markdown" in matrix.output
    gpu = runner.invoke(main, ["bench", "gpu", "--help"])
    assert gpu.exit_code == 0 and "--compile" in gpu.output
    assert runner.invoke(main, ["bench", "--matrix", "--help"]).output == matrix.output
    assert runner.invoke(main, ["bench", "--device", "cuda", "--help"]).output == gpu.output


def test_expand_lists() -> None:
    from restv2_edge.bench.cli import expand_lists

    names = {"--batch", "--variant"}
    assert expand_lists(["--batch", "1", "64", "--compile", "--variant=T", "S"], names) == [
        "--batch", "1", "--batch", "64", "--compile", "--variant=T", "--variant", "S",
    ]  # fmt: skip
    assert expand_lists(["--runs", "3", "--", "--batch", "x"], names) == [
        "--runs", "3", "--", "--batch", "x",
    ]  # fmt: skip


def test_aliases_route_to_the_same_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench --matrix`` is ``bench matrix``; ``bench --device`` is ``bench gpu``."""
    from click.testing import CliRunner

    from restv2_edge.bench import gpu, matrix
    from restv2_edge.cli import main

    calls: list[tuple[str, tuple, dict]] = []

    def fake(name: str) -> object:
        def record(*args: object, **kwargs: object) -> None:
            calls.append((name, args, kwargs))
            raise RunnerUnavailableError(f"{name} reached")

        return record

    monkeypatch.setattr(matrix, "run_matrix", fake("matrix"))
    monkeypatch.setattr(gpu, "run", fake("gpu"))
    runner = CliRunner()
    matrix_args = ["--targets", "onnx", "--int8", "--runs", "2", "--image-size", "64"]
    gpu_args = ["--device", "cpu", "--variant", "T", "S", "--batch", "1", "64", "--dtype",
                "fp32", "bf16", "--image-size", "224", "384", "--compile"]  # fmt: skip
    for argv in (
        ["bench", "matrix", *matrix_args],
        ["bench", "--matrix", *matrix_args],
        ["bench", "gpu", *gpu_args],
        ["bench", *gpu_args],
    ):
        result = runner.invoke(main, argv)
        assert isinstance(result.exception, RunnerUnavailableError), result.output
    for _, _, kwargs in calls:
        kwargs.pop("progress", None)  # a fresh lambda per call
    (m1, m2, g1, g2) = calls
    assert m1 == m2 and m1[0] == "matrix"
    assert m1[2]["targets"] == ["onnx"] and m1[2]["int8"] is True and m1[2]["image_size"] == 64
    assert g1 == g2 and g1[0] == "gpu"
    assert (g1[2]["variants"], g1[2]["image_sizes"]) == (["T", "S"], [224, 384])
    assert (g1[2]["batches"], g1[2]["dtypes"]) == ([1, 64], ["fp32", "bf16"])
    assert (g1[2]["device"], g1[2]["compile_model"]) == ("cpu", True)


def test_bench_gpu_cpu_smoke(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = run_cli(
        "bench", "gpu", "--device", "cpu", "--variant", TINY_JSON, "--image-size",
        str(TINY_IMAGE_SIZE), "--batch", "1", "2", "--dtype", "fp32", "--warmup", "0",
        "--runs", "1", "--matmul-size", "64", "--json", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["dtype"], r["batch"]) for r in rows] == [("fp32", 1), ("fp32", 2)]
    assert "paper V100" in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ("bench", "{missing}", "--json", "{bad}"),
        ("bench", "run", "{missing}", "--json", "{bad}"),
        ("bench", "matrix", "--json", "{bad}"),
        ("bench", "--matrix", "--markdown", "{bad}"),
        ("bench", "matrix", "--plot", "{bad}"),
        ("bench", "gpu", "--device", "cuda", "--json", "{bad}"),
        ("bench", "--device", "cuda", "--json", "{bad}"),
    ],
)
def test_unwritable_report_path_fails_first(argv: tuple[str, ...], tmp_path: Path) -> None:
    """Checked while parsing: before the missing artifact, the export, the CUDA check."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = blocker / "report.json"  # its folder is a file
    args = [a.format(missing=tmp_path / "missing", bad=bad) for a in argv]
    result = run_cli(*args, timeout=120)
    assert result.returncode == 1, result.stderr
    assert_one_line_error(result, "cannot write", "a-file")
    assert not (tmp_path / "missing").exists()


def test_per_round_ratio_cancels_drift_between_rounds():
    """Hand-made timings: B is 0.9x A in every round while the machine slows 2x in round 2;
    the partial last round is left out; no full round is an error."""
    from restv2_edge.bench.timing import per_round_ratio
    from restv2_edge.errors import DataError

    a = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0]
    b = [0.9, 0.9, 0.9, 1.8, 1.8, 1.8, 0.1]
    assert per_round_ratio({"a": a, "b": b}, "a", "b", block=3) == pytest.approx(0.9)
    assert np.median(b) / np.median(a) != pytest.approx(0.9)  # what the overall medians say
    with pytest.raises(DataError):
        per_round_ratio({"a": a[:2], "b": b[:2]}, "a", "b", block=3)
