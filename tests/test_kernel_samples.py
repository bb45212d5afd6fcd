"""Kernel sampling with Linux perf (restv2_edge.kernel_samples): how sampled symbols are
grouped, and that a perf that cannot attach is one ProfileError line, not a hang."""

from __future__ import annotations

import shutil

import pytest

import restv2_edge.kernel_samples as kernel_samples
from restv2_edge.errors import ProfileError

# Lines as ``perf script -F ip,sym,dso`` prints them (perf 6.1, ai-edge-litert 2.3.0).
SCRIPT = """\
    7f8a201ec8b6 xnn_f32_igemm_minmax_ukernel_7x32__avx512f_broadcast (/venv/ai_edge_litert/libpywrap_litert_common.so)
    7f8a201ec8b6 xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast (/venv/ai_edge_litert/libpywrap_litert_common.so)
    7f8a201ec8b6 xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast (/venv/ai_edge_litert/libpywrap_litert_common.so)
    7f8a2025bab0 thread_parallelize_4d_tile_2d_dynamic (/venv/ai_edge_litert/libpywrap_litert_common.so)
    7f8a20100000 Eigen::internal::gebp_kernel<float, float, long, 8, 4, false, false>::operator() (/venv/ai_edge_litert/libpywrap_litert_common.so)
             b66 __vdso_clock_gettime ([vdso])
    ffffffff8100 finish_task_switch.isra.0 ([kernel.kallsyms])
    7f0000000000 [unknown] ([unknown])
"""  # noqa: E501


def test_samples_group_into_kernel_families() -> None:
    counts = kernel_samples.parse_samples(SCRIPT)
    gemm = ("xnn_f32_gemm_minmax_ukernel_7x32__avx512f_broadcast", "libpywrap_litert_common.so")
    assert counts[gemm] == 2 and sum(counts.values()) == 8
    ops = {op.name: op for op in kernel_samples.kernel_times(counts, runs=4, threads=2)}
    period_ms = kernel_samples.PERIOD_NS / 1e6
    assert ops[gemm[0]].ms == pytest.approx(2 * period_ms / 4 / 2)
    assert (ops[gemm[0]].op_type, ops[gemm[0]].delegated) == ("XNNPACK f32_gemm_minmax", True)
    igemm = ops["xnn_f32_igemm_minmax_ukernel_7x32__avx512f_broadcast"]
    assert igemm.op_type == "XNNPACK f32_igemm_minmax"
    eigen = next(op for name, op in ops.items() if name.startswith("Eigen::internal::gebp"))
    assert eigen.name.endswith("::operator()")  # parentheses in a symbol stay in it
    assert eigen.delegated is False and eigen.op_type.startswith("TFLite builtin")
    assert ops["thread_parallelize_4d_tile_2d_dynamic"].op_type.startswith("thread pool")
    assert ops["__vdso_clock_gettime"].op_type == "clock reads (vDSO)"
    assert ops["finish_task_switch.isra.0"].op_type == "operating system kernel"
    assert ops["[unknown]"].delegated is None


def test_a_perf_that_cannot_attach_is_one_line(monkeypatch) -> None:
    """A perf that exits at once (here ``false``) is reported, not waited for."""
    false = shutil.which("false")
    monkeypatch.setattr(kernel_samples.shutil, "which", lambda name: false)
    calls = []
    with pytest.raises(ProfileError) as info:
        kernel_samples.sample_calls(lambda: calls.append(1), 3, 1, "test")
    message = str(info.value)
    assert "could not attach" in message and "\n" not in message
    assert calls == []  # nothing ran unprofiled
    with pytest.raises(ProfileError, match="at least one run"):
        kernel_samples.sample_calls(lambda: None, 0, 1, "test")


@pytest.mark.skipif(shutil.which("perf") is None, reason="Linux perf is not installed")
def test_perf_samples_only_the_profiled_calls() -> None:
    """A pure-Python busy loop of ~60 ms CPU: its samples land in the interpreter, and their
    time is about the loop's CPU time (nothing before or after the calls is counted)."""
    import time

    def spin() -> None:
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass

    profile = kernel_samples.sample_calls(spin, 3, 1, "Python")
    total = sum(op.ms for op in profile.ops)
    assert profile.unit == "kernel" and profile.runs == 3
    assert 10 <= total <= 40, profile  # 20 ms of CPU per call
