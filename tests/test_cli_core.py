"""The command line for the core: info table, packaging rules, one-line errors."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time

import pytest
import torch
from conftest import assert_one_line_error, official_checkpoint, run_cli

PUBLISHED = {  # paper, Table 1: params (M), GMACs @224, GMACs @384
    "T": (30, 4.1, 12.7),
    "S": (41, 6.0, 18.4),
    "B": (56, 7.9, 24.3),
    "L": (87, 13.8, 42.4),
}


@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_info_matches_published_table(variant):
    params_m, gmacs_224, gmacs_384 = PUBLISHED[variant]
    for size, gmacs in ((224, gmacs_224), (384, gmacs_384)):
        result = run_cli("info", "--variant", variant, "--image-size", size, "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert abs(report["params"] / 1e6 - params_m) / params_m <= 0.02
        assert abs(report["macs"] / 1e9 - gmacs) / gmacs <= 0.02
        assert sum(stage["macs"] for stage in report["stages"]) == report["macs"]


def test_info_table_renders():
    result = run_cli("info", "--variant", "T")
    assert result.returncode == 0
    assert "stage3" in result.stdout + result.stderr and "total" in result.stdout + result.stderr


def test_import_and_help_load_no_backend(tmp_path):
    code = (
        "import sys, restv2_edge, restv2_edge.cli\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'executorch',"
        " 'coremltools', 'nncf') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    started = time.perf_counter()
    help_run = run_cli("--help", cwd=tmp_path)
    assert help_run.returncode == 0 and "export" in help_run.stdout
    assert time.perf_counter() - started < 2.0


def test_no_generic_top_level_modules_installed(tmp_path):
    code = (
        "import importlib.util as u\n"
        "print([m for m in ('converters', 'calibration') if u.find_spec(m)])\n"
        "import restv2_edge.converters.base, restv2_edge.calibration\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["info", "--variant", "Q"], "unknown variant"),
        (["info", "--image-size", "100"], "multiple of 32"),
        (["info", "--image-size", "32"], "multiple of 32"),
        (["export", "--target", "onnx", "--weights", "/nonexistent.pth"], "not found"),
        (["export", "--target", "tflite"], "tflite"),
    ],
)
def test_bad_input_is_one_line(args, fragment, tmp_path):
    result = run_cli(*args, "--output", tmp_path / "out") if args[0] == "export" else run_cli(*args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_bad_checkpoints_are_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    assert_one_line_error(run_cli("export", "--target", "onnx", "--weights", corrupt,
                                  "--output", tmp_path / "a"), "corrupt")  # fmt: skip
    small = official_checkpoint(tmp_path / "small.pth", "custom", embed_dims=[16, 32, 64, 128],
                                num_heads=[1, 2, 4, 8], depths=[1, 1, 1, 1])  # fmt: skip
    result = run_cli("export", "--target", "onnx", "--variant", "T", "--weights", small,
                     "--output", tmp_path / "b")  # fmt: skip
    assert_one_line_error(result, "stem.proj.0.weight")
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"model": _RunsCode()}, protocol=2))
    assert_one_line_error(run_cli("export", "--target", "onnx", "--weights", evil,
                                  "--output", tmp_path / "c"), "code execution")  # fmt: skip
    state = torch.load(small, weights_only=True)["model"]
    state.pop("head.bias")
    torch.save(state, tmp_path / "missing.pth")
    result = run_cli(
        "export",
        "--target",
        "onnx",
        "--variant",
        json.dumps(
            {"embed_dims": [16, 32, 64, 128], "num_heads": [1, 2, 4, 8], "depths": [1, 1, 1, 1]}
        ),
        "--image-size",
        "64",
        "--weights",
        tmp_path / "missing.pth",
        "--output",
        tmp_path / "d",
    )
    assert_one_line_error(result, "missing keys: head.bias")
    assert not any((tmp_path / name).exists() for name in "abcd")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_missing_backend_names_the_extra(tmp_path):
    """A backend that cannot be imported is reported with the pip extra to install."""
    blocker = tmp_path / "blocked" / "openvino"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked for this test')\n")
    result = subprocess.run(
        [sys.executable, "-m", "restv2_edge.cli", "export", "--target", "openvino",
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ,
                                             "PYTHONPATH": str(tmp_path / "blocked")},
    )  # fmt: skip
    assert_one_line_error(result, "restv2-edge[openvino]")
    assert not (tmp_path / "out").exists()
