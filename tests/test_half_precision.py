"""Half precision: OpenVINO fp16/bf16 run at a native half type, and say which.

The precision actually executed is read back from OpenVINO's compiled model here, not from the
code under test; the gates are judged against the independent reference model on photos.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("openvino")

from conftest import oracle_logits, oracle_model, run_cli
from restv2_edge.converters.base import ExportRequest, get_descriptor, target_names

from restv2_edge.artifact import open_artifact
from restv2_edge.errors import ExportError
from restv2_edge.export import export_artifact
from restv2_edge.factory import create_model
from restv2_edge.parity import THRESHOLDS, compare, failures, load_inputs

DOC = Path(__file__).parent.parent / "docs" / "precision.md"


def compiled_precision(xml: Path, config: dict) -> str:
    """What OpenVINO itself compiles the IR to on CPU with ``config``."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
    return compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_fp16_runs_at_the_cpu_default_and_records_it(tiny_artifact) -> None:
    folder, manifest = tiny_artifact("openvino", "fp16")
    native = compiled_precision(folder / "model.xml", {})
    assert manifest.export["inference_precision"] is None  # no hint: the device's default
    assert manifest.export["execution_precision"] == native
    assert native == ("bf16" if cpu_has_bf16() else "f32")
    _, runner = open_artifact(folder)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == native
    assert f"INFERENCE_PRECISION_HINT={native}" in manifest.parity["runner"]
    assert manifest.parity["status"] == "passed"
    # judged by what it computed in: bf16's gate where it ran bf16, fp16's where it did not
    gate = "bf16" if native == "bf16" else "fp16"
    assert runner.executes == ("bf16" if native == "bf16" else "fp32")
    assert manifest.parity["gate"] == gate
    assert manifest.parity["thresholds"] == THRESHOLDS[gate]


def test_true_fp16_keeps_the_tighter_gate(tiny_artifact) -> None:
    """An fp16 artifact whose runtime reports no other type is judged by fp16's own gate,
    which is stricter than bf16's."""
    _, manifest = tiny_artifact("onnx", "fp16")
    assert manifest.parity["gate"] == "fp16"
    assert manifest.parity["thresholds"] == THRESHOLDS["fp16"]
    assert THRESHOLDS["fp16"]["cosine_min"] > THRESHOLDS["bf16"]["cosine_min"]
    assert THRESHOLDS["fp16"]["top1_agreement_clear"] > THRESHOLDS["bf16"]["top1_agreement_clear"]


def test_an_fp16_artifact_recorded_with_the_f32_hint_still_runs_f32(tiny_artifact, tmp_path):
    folder = shutil.copytree(tiny_artifact("openvino", "fp16")[0], tmp_path / "old")
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data["export"]["inference_precision"] = "f32"  # what fp16 exports recorded before
    path.write_text(json.dumps(data))
    _, runner = open_artifact(folder)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"


def test_bf16_is_offered_by_openvino_and_pinned(tiny_artifact) -> None:
    assert "bf16" in get_descriptor("openvino").precisions
    if not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16 (the refusal is tested below)")
    folder, manifest = tiny_artifact("openvino", "bf16")
    assert manifest.precision == "bf16"
    assert manifest.export["inference_precision"] == "bf16"
    assert manifest.export["execution_precision"] == "bf16"
    assert manifest.export["weights"] == "float16"
    assert manifest.parity["thresholds"] == THRESHOLDS["bf16"]
    assert manifest.parity["status"] == "passed"
    _, runner = open_artifact(folder)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"


def test_bf16_export_is_refused_without_native_bf16(tiny_checkpoint, monkeypatch, tmp_path):
    import restv2_edge.converters.openvino as target

    monkeypatch.setattr(target, "native_bf16", lambda device="CPU": False)
    out = tmp_path / "bf16"
    with pytest.raises(ExportError, match=r"native bf16.*--precision fp16"):
        export_artifact(
            create_model(weights=tiny_checkpoint), "openvino", out, ExportRequest(precision="bf16")
        )
    assert not out.exists()


def test_export_help_says_what_each_precision_is_for() -> None:
    result = run_cli("export", "--help")
    text = " ".join(result.stdout.split())
    assert "docs/precision.md" in text and "bf16" in text and "slower" in text


def test_precision_doc_covers_every_declared_precision() -> None:
    """docs/precision.md has a row per target and names every precision its descriptor lists."""
    text = DOC.read_text()
    for name in target_names():
        rows = [line for line in text.splitlines() if re.match(rf"\|\s*{name}\s*\|", line)]
        assert rows, f"docs/precision.md has no row for {name}"
        for precision in get_descriptor(name).precisions:
            assert precision in rows[0], (name, precision)


def test_fp16_and_bf16_gates_fail_a_real_error() -> None:
    """The half gates are not vacuous: two flips in 16 photos and a cosine of 0.998 miss."""
    metrics = {"cosine_min": 0.998, "top1_agreement_clear": 14 / 16}
    for precision in ("fp16", "bf16"):
        assert len(failures(metrics, precision)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_t_half_precision_passes_its_gate_on_photos(
    precision, t_checkpoint, photo_dir, tmp_path
) -> None:
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("this CPU has no native bf16")
    out = tmp_path / f"t-{precision}"
    result = run_cli("export", "--target", "openvino", "--weights", t_checkpoint,
                     "--precision", precision, "--output", out)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest, runner = open_artifact(out)
    inputs = load_inputs(manifest.preprocessing(), photo_dir, 32)
    expected = oracle_logits(oracle_model(t_checkpoint, "T"), inputs.images)
    metrics = compare(expected, runner(inputs.images))
    print(precision, manifest.export["execution_precision"], metrics)
    assert not failures(metrics, precision), metrics
