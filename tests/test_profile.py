"""``restv2-edge profile``: aggregation by op type, top ops, delegation counts and the sum
against the end-to-end latency; a runtime without a profiler and bad options are one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from restv2_edge.converters.base import OpProfile, OpTime, Runner

from restv2_edge.errors import ProfileError
from restv2_edge.profile import (
    SUM_TOLERANCE,
    by_op_type,
    delegation,
    merge_profiles,
    profile_runner,
    sum_check,
    top_ops,
)

OPS = (
    OpTime("mm1", "MatMul", 3.0, True),
    OpTime("mm2", "MatMul", 1.0, True),
    OpTime("ln", "LayerNorm", 0.5, False),
    OpTime("add", "Add", 0.5, True),
)


class FakeRunner(Runner):
    """Zeros for logits; a fixed profile (or none, like a runtime without a profiler)."""

    description = "fake runtime"

    def __init__(self, ops: tuple[OpTime, ...] | None = OPS) -> None:
        super().__init__(1)
        self.ops = ops
        self.calls = 0

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.zeros((x.shape[0], 10), np.float32)

    def profile(self, x: np.ndarray, runs: int) -> OpProfile:
        if self.ops is None:
            return super().profile(x, runs)
        return OpProfile("fake profiler", runs, self.ops, ("a note",))


def test_aggregation_by_op_type_top_ops_and_delegation() -> None:
    profile = OpProfile("fake", 4, OPS)
    types = by_op_type(profile)
    assert [(t["op_type"], t["count"]) for t in types] == [
        ("MatMul", 2),
        ("Add", 1),
        ("LayerNorm", 1),
    ]
    assert types[0]["ms"] == pytest.approx(4.0)
    assert types[0]["share"] == pytest.approx(4.0 / 5.0)
    assert sum(t["share"] for t in types) == pytest.approx(1.0)
    assert [op["name"] for op in top_ops(profile, 2)] == ["mm1", "mm2"]
    share = delegation(profile)
    assert (share["delegated"], share["fallback"]) == (3, 1)
    assert share["fallback_ms"] == pytest.approx(0.5)
    assert share["fallback_types"] == ["LayerNorm"]
    no_delegates = OpProfile("fake", 1, tuple(OpTime(o.name, o.op_type, o.ms) for o in OPS))
    assert delegation(no_delegates) is None


def test_sum_check_flags_outside_the_tolerance() -> None:
    assert SUM_TOLERANCE == 0.30
    inside = sum_check(8.0, 10.0)
    assert inside["ratio"] == pytest.approx(0.8) and inside["within"]
    assert not sum_check(6.5, 10.0)["within"]
    assert not sum_check(13.5, 10.0)["within"]
    assert sum_check(12.9, 10.0)["within"]
    # per round: a slow spell in one round's normal calls no longer decides the verdict
    paired = sum_check(8.0, 5.0, [0.9, 1.6, 0.95])
    assert paired["ratio"] == pytest.approx(0.95) and paired["within"]
    assert not sum_check(8.0, 10.0, [1.4, 1.5, 0.9])["within"]


def test_rounds_merge_into_one_profile_weighted_by_their_runs() -> None:
    first = OpProfile("p", 1, (OpTime("a", "Gemm", 4.0), OpTime("b", "Add", 1.0)), ("n",))
    second = OpProfile("p", 3, (OpTime("a", "Gemm", 2.0),))
    merged = merge_profiles([first, second])
    assert merged.runs == 4 and merged.profiler == "p" and merged.notes[0] == "n"
    times = {op.name: op.ms for op in merged.ops}
    assert times["a"] == pytest.approx((4.0 + 3 * 2.0) / 4)
    assert times["b"] == pytest.approx(1.0 / 4)  # absent from a round: 0 there


def test_profile_runner_reports_the_profile_beside_normal_calls() -> None:
    runner = FakeRunner()
    x = np.zeros((1, 3, 8, 8), np.float32)
    report = profile_runner(runner, x, runs=3, top=2)
    assert runner.calls >= 3  # the end-to-end latency came from normal calls
    assert report["profiler"] == "fake profiler" and report["notes"][0] == "a note"
    assert report["sum"]["sum_ms"] == pytest.approx(5.0)
    rounds = report["sum"]["round_ratios"]
    assert rounds and report["sum"]["ratio"] == pytest.approx(float(np.median(rounds)))
    median = report["end_to_end"]["median_ms"]
    assert min(rounds) <= 5.0 / median * 1.5 and max(rounds) >= 5.0 / median / 1.5
    assert len(report["top_ops"]) == 2
    with pytest.raises(ProfileError, match="no per-op profiler"):
        profile_runner(FakeRunner(None), x, runs=1)


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console script in-process (its error boundary included): (exit code, out, err)."""
    from restv2_edge import cli

    monkeypatch.setattr(sys, "argv", ["restv2-edge", *args])
    with pytest.raises(SystemExit) as info:
        cli.run()
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def _one_error_line(err: str, fragment: str) -> None:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert fragment.lower() in errors[0].lower(), errors[0]


def test_bad_options_are_one_line(monkeypatch, capsys, tmp_path) -> None:
    cases = [
        ((), "give ARTIFACT"),
        (("--eager", str(tmp_path)), "not both"),
        ((str(tmp_path), "--variant", "T"), "--variant does nothing without --eager"),
        (("--eager", "--device", "CPU"), "--device does nothing with --eager"),
        ((str(tmp_path), "--runs", "0"), "--runs"),
        ((str(tmp_path), "--top", "x"), "--top"),
        (("--eager", "--image-size", "65"), "--image-size"),
        (("--eager", "--variant", "Q"), "unknown variant"),
        ((str(tmp_path / "missing"),), "missing"),
    ]
    for args, fragment in cases:
        code, _, err = _cli(monkeypatch, capsys, "profile", *args)
        assert code != 0
        _one_error_line(err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_a_runtime_without_profiler_is_one_line(monkeypatch, capsys, tiny_artifact) -> None:
    import restv2_edge.artifact as artifact

    folder, manifest = tiny_artifact("onnx", "fp32")
    monkeypatch.setattr(artifact, "open_artifact", lambda *a, **k: (manifest, FakeRunner(None)))
    code, _, err = _cli(monkeypatch, capsys, "profile", str(folder))
    assert code == 1
    _one_error_line(err, "no per-op profiler")


def test_profile_an_onnx_artifact(tiny_artifact) -> None:
    """The onnx runner's own profiler (onnxruntime session profiling) on the photos."""
    from restv2_edge.cli import main

    folder, _ = tiny_artifact("onnx", "fp32")
    result = CliRunner().invoke(main, ["profile", str(folder), "--json", "--runs", "3"])
    if isinstance(result.exception, ProfileError):
        pytest.skip(f"the onnx runner has no profiler yet: {result.exception}")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == "onnx" and not report["synthetic"]
    assert "onnxruntime" in report["profiler"]
    types = {row["op_type"] for row in report["op_types"]}
    assert "Conv" in types  # the stem's convolutions, as onnxruntime names them
    assert report["sum"]["sum_ms"] > 0
    rounds = report["sum"]["round_ratios"]  # each profiled round against its normal calls
    assert len(rounds) >= 1 and all(ratio > 0 for ratio in rounds)
    assert report["sum"]["ratio"] == pytest.approx(float(np.median(rounds)))
    assert report["ops"] >= len(report["top_ops"]) > 0


def test_profile_eager_with_torch_profiler(tiny_checkpoint) -> None:
    from restv2_edge.cli import main

    args = ["profile", "--eager", "--weights", str(tiny_checkpoint), "--runs", "2", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == "pytorch" and report["image_size"] == [64, 64]
    assert "torch.profiler" in report["profiler"]
    types = {row["op_type"] for row in report["op_types"]}
    assert any("conv" in name for name in types), types
    assert any(name in types for name in ("aten::addmm", "aten::mm", "aten::linear")), types
    text = CliRunner().invoke(main, ["profile", "--eager", "--weights", str(tiny_checkpoint),
                                     "--runs", "1", "--top", "2"])  # fmt: skip
    assert text.exit_code == 0 and "top ops:" in text.stdout and "end-to-end" in text.stdout


def test_profile_report_needs_a_built_work_folder(tmp_path, capsys) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "profile_report.py"
    spec = importlib.util.spec_from_file_location("profile_report", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "profile.md"
    for args, fragment in ((["--work", str(tmp_path)], "--phase build"),
                           (["--runs", "0", "--work", str(tmp_path)], "--runs")):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            script.main([*args, "--markdown", str(out)])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
    assert not out.exists()


def test_the_report_prints_profiler_names_verbatim() -> None:
    """Sampled symbols such as ``[vdso]`` are text, not rich markup; kernels are called so."""
    import io

    from rich.console import Console

    from restv2_edge.cli_profile import _print
    from restv2_edge.profile import summarize_profile

    ops = (OpTime("__vdso_clock_gettime", "other ([vdso])", 1.0), OpTime("x[0]", "Gemm", 2.0))
    profile = OpProfile("sampler", 2, ops, ("a [note]",), unit="kernel")
    report = summarize_profile(profile, {"median_ms": 3.0, "runs": 4})
    report.update(artifact="art", runner="r", input="photos", synthetic=False)
    buffer = io.StringIO()
    _print(report, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "other ([vdso]) (1 kernels)" in text and "x[0] (Gemm)" in text
    assert "note: a [note]" in text
