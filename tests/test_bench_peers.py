"""scripts/bench_peers.py and restv2_edge.bench.peers: the plan from the registry, the work
folder's reuse and verification, peers (fake ones here; the targets' own in the slow test)
timed beside the project's artifacts, accuracy against the reference model, the goals, and
bad options refused in one line with nothing written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import oracle_logits, oracle_model
from restv2_edge.calibration.recipes import int8_targets
from restv2_edge.converters.base import (
    PeerPipeline,
    get_descriptor,
    installed_targets,
    target_names,
)

from restv2_edge.bench import peers as lib
from restv2_edge.errors import DataError
from restv2_edge.factory import create_model
from restv2_edge.manifest import MANIFEST_NAME, Manifest

ROOT = Path(__file__).resolve().parent.parent


def _script(name: str = "bench_peers"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _eager_peer(model, example, calibration, workdir):
    """A stand-in peer: the reference model itself in eager PyTorch."""
    return lambda x: oracle_logits(model, x)


def _failing_peer(model, example, calibration, workdir):
    raise RuntimeError("toolchain exploded\nsecond line of the traceback")


FAKE_PEERS = [
    ("onnx", PeerPipeline("fake eager reference", "fp32", _eager_peer)),
    ("onnx", PeerPipeline("fake broken toolchain", "fp32", _failing_peer)),
]


def test_plan_reads_the_registry() -> None:
    targets = target_names()  # the plan needs no backend (installed_targets imports them)
    plan = lib.project_plan(targets)
    for target in targets:
        floats = get_descriptor(target).precisions
        expected = {*floats, *(["int8"] if target in int8_targets() else [])}
        assert {p for t, p in plan if t == target} == expected
        first = next(p for t, p in plan if t == target)
        assert first == "fp32"  # fp32, then the half precisions, then int8
    assert {p for _, p in lib.project_plan(targets, ["fp32"])} == {"fp32"}
    assert lib.precision_class("fp16") == lib.precision_class("bf16") == "half"
    extra = {targets[0]: (FAKE_PEERS[0][1],)}
    peers = lib.peer_plan(targets, ["fp32"], extra)
    assert (targets[0], FAKE_PEERS[0][1]) in peers
    assert all(peer.precision == "fp32" for _, peer in peers)


def _row(side, target, precision, ms, label=""):
    row = lib._row(side, target, precision, f"{side} {target}/{precision}", label)
    return {**row, "status": "ok", "ms": ms}


def test_goals_are_judged_with_their_margins() -> None:
    rows = [
        _row("project", "a", "fp32", 8.0),
        _row("project", "a", "fp16", 5.0),
        _row("project", "a", "int8", 3.0),
        _row("peer", "a", "fp32", 10.0, "a's plain fp32"),
        _row("peer", "a", "half", 5.0, "a's CPU default"),
        _row("peer", "a", "int8", 9.0, "a's int8"),
        _row("project", "b", "fp32", 12.0),
        _row("project", "b", "int8", 7.0),
        _row("peer", "b", "int8", 6.5, "b's int8"),
    ]
    rows[0]["accuracy"] = {"images": 4, "max_abs_diff": 2e-4, "cosine_min": 1.0}
    rows[2]["accuracy"] = {"images": 4, "max_abs_diff": 0.1, "cosine_min": 0.9995}
    found = {goal["goal"]: goal for goal in lib.goals(rows)}
    fp32 = found["a fp32 <= 0.85x its peer"]
    assert fp32["value"] == pytest.approx(0.8) and fp32["status"] == "pass"
    half = found["a half <= 0.85x its peer"]
    assert half["status"] == "miss" and half["margin"] == pytest.approx(1.0 / 0.85 - 1)
    assert lib.margin_text(half) == "miss (17.6% above the limit)"
    assert found["a int8 >= 2x its own fp32"]["value"] == pytest.approx(8.0 / 3.0)
    speedup = found["b int8 >= 2x its own fp32"]
    assert speedup["status"] == "miss" and speedup["value"] == pytest.approx(12 / 7)
    best = found["best int8 <= 0.5x the best peer int8"]
    assert best["value"] == pytest.approx(3.0 / 6.5) and best["status"] == "pass"
    assert found["best int8 faster than the best half-precision row"]["value"] == 0.6
    assert found["project a/fp32 max |dlogit| <= 0.0001"]["status"] == "miss"
    assert found["project a/int8 cosine >= 0.999 per photo"]["status"] == "pass"
    assert "b fp32 <= 0.85x its peer" not in found  # b has no fp32 peer


def test_speed_goals_compare_rows_round_by_round() -> None:
    """Hand-made rounds: the project is 0.8x its peer in every round while the machine slows
    3x in the last two; the rows' medians (taken from other rounds' extremes) say otherwise."""
    rounds_project = [8.0, 8.0, 24.0, 24.0]
    rounds_peer = [10.0, 10.0, 30.0, 30.0]
    rows = [
        {**_row("project", "a", "fp32", 9.0), "rounds_ms": rounds_project},
        {**_row("peer", "a", "fp32", 10.0, "a's plain fp32"), "rounds_ms": rounds_peer},
    ]
    goal = next(g for g in lib.goals(rows) if g["goal"] == "a fp32 <= 0.85x its peer")
    assert goal["value"] == pytest.approx(0.8) and goal["status"] == "pass"
    rows[1]["rounds_ms"] = rounds_peer[:3]  # rounds that do not pair: the medians' ratio
    goal = next(g for g in lib.goals(rows) if g["goal"] == "a fp32 <= 0.85x its peer")
    assert goal["value"] == pytest.approx(0.9) and goal["status"] == "miss"


def test_separate_runs_merge_into_medians_and_keep_each_runs_goals() -> None:
    def report(project_ms: float, peer_ms: float, rate: float) -> dict:
        rows = [_row("project", "a", "fp32", project_ms), _row("peer", "a", "fp32", peer_ms)]
        rows[0]["rounds_ms"], rows[1]["rounds_ms"] = [project_ms] * 2, [peer_ms] * 2
        return {
            "model": {"weights": {"sha256": "x"}, "macs": 10**9},
            "settings": {"threads": 2},
            "machine": {},
            "peak_rates": {"fp32": rate, "int8": None},
            "rows": rows,
            "goals": lib.goals(rows),
            "command": f"run {project_ms}",
        }

    runs = [report(8.0, 10.0, 1e11), report(9.0, 9.0, 3e11), report(5.0, 20.0, 2e11)]
    merged = lib.merge_reports(runs)
    project = next(row for row in merged["rows"] if row["side"] == "project")
    assert project["ms"] == 8.0 and project["ms_runs"] == [8.0, 9.0, 5.0]
    assert project["rounds_ms"] == [8.0, 8.0, 9.0, 9.0, 5.0, 5.0]  # every run's rounds
    goal = next(g for g in merged["goals"] if g["goal"] == "a fp32 <= 0.85x its peer")
    assert goal["value"] == pytest.approx(0.8)  # per-round ratios 0.8, 0.8, 1, 1, 0.25, 0.25 pooled
    assert merged["peak_rates"] == {"fp32": 2e11, "int8": None}
    assert merged["settings"]["processes"] == 3
    assert [p["command"] for p in merged["processes"]] == ["run 8.0", "run 9.0", "run 5.0"]
    assert "command" not in merged  # the merge's own command is the script's to record
    other = report(8.0, 10.0, 1e11)
    other["model"] = {"weights": {"sha256": "y"}, "macs": 10**9}
    with pytest.raises(DataError, match="different weights"):
        lib.merge_reports([report(8.0, 10.0, 1e11), other])
    rebuilt = report(8.0, 10.0, 1e11)  # the artifact re-exported in another form in between
    rebuilt["rows"][0]["graph_form"] = "native-pointwise"
    with pytest.raises(DataError, match="project a/fp32 was measured in different graph forms"):
        lib.merge_reports([report(8.0, 10.0, 1e11), rebuilt])


@pytest.fixture(scope="module")
def seeded_work(tiny_artifact, tiny_checkpoint, tmp_path_factory):
    """A work folder holding the session's tiny onnx fp32 artifact, recorded as built from
    the tiny checkpoint (no export of its own)."""
    folder, _ = tiny_artifact("onnx", "fp32")
    work = tmp_path_factory.mktemp("peers-work")
    model = create_model(weights=tiny_checkpoint)
    target = lib.artifact_folder(work, "onnx", "fp32")
    shutil.copytree(folder, target)
    record = lib.new_work_record(model, tiny_checkpoint)
    digest = lib.file_digest(target / MANIFEST_NAME)
    record["artifacts"]["onnx/fp32"] = {"status": "ok", "manifest_sha256": digest}
    lib.write_work_record(work, record)
    return work, model


def test_work_folder_is_reused_and_verified(seeded_work, tiny_checkpoint, tmp_path, monkeypatch):
    work, model = seeded_work
    copy = tmp_path / "work"
    shutil.copytree(work, copy)

    def no_export(*args, **kwargs):
        raise AssertionError("a verified artifact was exported again")

    monkeypatch.setattr(lib, "export_one", no_export)
    steps: list[str] = []
    plan = [("onnx", "fp32")]
    record = lib.build_project(model, copy, tiny_checkpoint, plan, lambda: None, 4, steps.append)
    assert steps == ["reuse onnx/fp32"] and record["artifacts"]["onnx/fp32"]["status"] == "ok"
    converter = get_descriptor("onnx").converter
    with monkeypatch.context() as patch:  # the converter now chooses another graph form
        patch.setattr(type(converter), "graph_form_for", lambda self, request: "decomposed")
        folder = lib.artifact_folder(copy, "onnx", "fp32")
        assert not lib.reusable(folder, record["artifacts"]["onnx/fp32"], "onnx", "fp32")

    model_file = next(p for p in lib.artifact_folder(copy, "onnx", "fp32").iterdir()
                      if p.name != MANIFEST_NAME)  # fmt: skip
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    rows = lib.open_project_rows(copy, record, plan, 1)
    assert rows[0]["status"] == "failed" and "does not verify" in rows[0]["error"]
    exported = []

    def fake_export(model, target, precision, folder, calibration, parity_limit):
        exported.append((target, precision))
        return {"status": "failed", "error": "ExportError: stand-in"}

    monkeypatch.setattr(lib, "export_one", fake_export)
    record = lib.build_project(model, copy, tiny_checkpoint, plan, lambda: None, 4, steps.append)
    assert exported == [("onnx", "fp32")]
    assert lib.open_project_rows(copy, record, plan, 1)[0]["error"] == "ExportError: stand-in"

    other = tmp_path / "other.safetensors"
    other.write_bytes(tiny_checkpoint.read_bytes() + b"\0")
    assert not lib.same_build(record, lib.new_work_record(model, other))


def test_measure_times_project_and_peers_against_the_reference(seeded_work, tiny_checkpoint):
    work, model = seeded_work
    reference = oracle_model(tiny_checkpoint, **_tiny_spec(model))
    report = lib.measure(
        model, reference, work, [("onnx", "fp32")], FAKE_PEERS, lambda: None,
        threads=1, warmup=0, runs=2, photo_limit=4, gemm_size=64,
    )  # fmt: skip
    rows = {row["label"]: row for row in report["rows"]}
    project = rows["restv2-edge onnx fp32"]
    assert project["status"] == "ok" and project["latency"]["runs"] == 2
    manifest = Manifest.read(lib.artifact_folder(work, "onnx", "fp32"))
    assert project["graph_form"] == manifest.graph_form == "native-pointwise"
    assert project["accuracy"]["max_abs_diff"] <= 1e-4
    assert rows["fake eager reference"]["accuracy"]["max_abs_diff"] < 1e-5  # batch 1 vs 16
    broken = rows["fake broken toolchain"]
    assert broken["status"] == "failed"
    assert broken["error"] == "RuntimeError: toolchain exploded"
    assert report["floors"]["fp32"]["ms"] > 0 and report["peak_rates"]["fp32"] > 0
    goals = {goal["goal"] for goal in report["goals"]}
    assert "onnx fp32 <= 0.85x its peer" in goals
    assert "photos:" in report["settings"]["photos"]
    assert all("_run" not in row for row in report["rows"])
    json.dumps(report)  # plain data


def test_a_row_that_fails_on_the_photos_is_a_failed_row(tiny_checkpoint, photo_dir) -> None:
    from restv2_edge.parity import load_inputs

    model = create_model(weights=tiny_checkpoint)
    reference = oracle_model(tiny_checkpoint, **_tiny_spec(model))

    def crash(x):
        raise ValueError("bad input\ndetails")

    good = {**lib._row("peer", "t", "fp32", "good"), "_run": lambda x: oracle_logits(reference, x)}
    bad = {**lib._row("peer", "t", "fp32", "bad"), "status": "ok", "_run": crash}
    lib.accuracy([good, bad], reference, load_inputs(model.preprocessing, photo_dir, 2))
    assert good["accuracy"]["images"] == 2 and "_run" in good
    assert bad["status"] == "failed" and "_run" not in bad
    assert bad["error"] == "on the photos: ValueError: bad input"


def _tiny_spec(model) -> dict:
    config = model.config.to_dict()
    keys = ("embed_dims", "num_heads", "depths", "sr_ratios", "num_classes")
    return {key: config[key] for key in keys}


def test_script_writes_the_table_goals_and_chart(
    seeded_work, tiny_checkpoint, tmp_path, monkeypatch
):
    work, _ = seeded_work
    script = _script()
    monkeypatch.setattr(script.lib, "peer_plan", lambda targets, classes: FAKE_PEERS)
    out = {suffix: tmp_path / f"peers.{suffix}" for suffix in ("json", "md", "png")}
    code = script.main([
        "--weights", str(tiny_checkpoint), "--work", str(work), "--phase", "time",
        "--targets", "onnx", "--precisions", "fp32", "--threads", "1", "--warmup", "0",
        "--runs", "2", "--photos", "2", "--gemm-size", "64", "--json", str(out["json"]),
        "--markdown", str(out["md"]), "--plot", str(out["png"]),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out["json"].read_text())
    assert [row["status"] for row in report["rows"]] == ["ok", "ok", "failed"]
    text = out["md"].read_text()
    assert "| onnx | fp32 | restv2-edge onnx fp32 | ok |" in text
    assert f"graph forms: onnx/fp32 {report['rows'][0]['graph_form']}" in text
    assert "failed: RuntimeError: toolchain exploded" in text
    assert "max \\|dlogit\\|" in text and "## Goals" in text
    assert report["machine"]["cpu"] in text
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_refuses_bad_options_in_one_line(tmp_path, capsys) -> None:
    script = _script()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    reports = ["--json", str(tmp_path / "p.json"), "--markdown", "none", "--plot", "none"]
    cases = [
        (["--runs", "0"], "--runs"),
        (["--targets", "nope"], "nope"),
        (["--image-size", "65"], "--image-size"),
        (["--precisions", "fp64"], "--precisions"),
        (["--phase", "later"], "--phase"),
        (["--variant", "Q"], "unknown variant"),
        (["--weights", str(tmp_path / "missing.pth")], "not a file"),
        (["--work", str(blocker)], "not a folder"),
        (["--json", str(blocker / "x.json")], "--json"),
    ]
    for args, fragment in cases:
        with pytest.raises(SystemExit) as info:
            script.main([*reports, "--work", str(tmp_path / "work"), *args])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_reports_default_to_the_machine_they_were_measured_on(tmp_path) -> None:
    script = _script()
    args = script.parse_args(["--markdown", "none", "--json", str(tmp_path / "r.json")])
    paths = script.report_paths(args, {"cpu": "AMD EPYC", "cpu_id": "family 26, model 2"})
    assert paths == {"json": tmp_path / "r.json", "plot": script.DOCS / "peers-zen5.png"}


@pytest.mark.slow
def test_every_target_builds_and_its_peers_run(tiny_checkpoint, tmp_path) -> None:
    """The whole pipeline on the tiny model: every installed target and precision exported,
    every declared peer built on the reference model and timed; fp32 rows match it."""
    script = _script()
    out = tmp_path / "peers.json"
    code = script.main([
        "--weights", str(tiny_checkpoint), "--work", str(tmp_path / "work"), "--warmup", "0",
        "--runs", "2", "--photos", "4", "--calib-size", "16", "--gemm-size", "64",
        "--json", str(out), "--markdown", str(tmp_path / "p.md"), "--plot", "none",
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    declared = sum(len(get_descriptor(t).peers) for t in installed_targets())
    assert sum(row["side"] == "peer" for row in report["rows"]) == declared
    for row in report["rows"]:
        print(row["key"], row["status"], row.get("ms"), row.get("accuracy"), row.get("error"))
        assert row["status"] == "ok" or row["error"]
        if row["status"] == "ok" and row["class"] == "fp32":
            assert row["accuracy"]["max_abs_diff"] <= 1e-3, row


def test_summary_holds_a_goal_only_where_every_machine_passes(tmp_path, capsys) -> None:
    """Two hand-made machine reports: a goal both pass, one only the first passes, one only
    the second measured; each machine's page is linked from the summary's folder."""

    def machine_report(cpu: str, project_ms: float, extra: list) -> dict:
        rows = [_row("project", "a", "fp32", project_ms), _row("peer", "a", "fp32", 10.0)]
        rows += extra
        return {
            "rows": rows,
            "model": {"variant": "T", "image_size": [224, 224]},
            "machine": {"cpu": cpu, "isa": ["avx2"], "usable_cores": 2, "logical_cpus": 2},
            "floors": {"fp32": {"ms": 4.0}},
            "goals": lib.goals(rows),
        }

    int8_rows = [_row("project", "a", "int8", 2.0)]
    int8_rows[0]["graph_form"] = "native"
    first = machine_report("CPU one", 8.0, [])
    second = machine_report("CPU two", 9.0, int8_rows)
    pages = tmp_path / "pages"
    pages.mkdir()
    paths = []
    for name, report in (("one", first), ("two", second)):
        paths.append(pages / f"peers-{name}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "summary.md"
    script = _script("peers_summary")
    assert script.main([*map(str, paths), "--markdown", str(out)]) == 0
    lines = {line.split(" | ")[0]: line for line in out.read_text().splitlines()}
    assert lines["| a fp32 <= 0.85x its peer"].endswith("| no |")  # 0.8 pass, 0.9 miss
    assert "0.8: pass (5.9% below the limit)" in lines["| a fp32 <= 0.85x its peer"]
    int8 = lines["| a int8 >= 2x its own fp32"]
    assert "| not measured |" in int8 and int8.endswith("| not on every machine |")
    text = out.read_text()
    assert "[peers-one.md](pages/peers-one.md)" in text and "CPU two" in text
    # the forms each machine timed: the int8 row only on the second, fp32 from a run
    # that did not record its form
    assert "| project a/int8 | not measured | native |" in text
    assert "| project a/fp32 | not recorded | not recorded |" in text

    capsys.readouterr()
    second["model"]["variant"] = "S"
    paths[1].write_text(json.dumps(second))
    paths.append(tmp_path / "broken.json")
    paths[-1].write_text("{")
    for args, fragment in (
        ([str(paths[0]), str(paths[1])], "different models"),
        ([str(paths[2])], "not a peers report"),
        ([str(tmp_path / "missing.json")], "not a file"),
    ):
        out.unlink(missing_ok=True)
        try:
            code = script.main([*args, "--markdown", str(out)])
        except SystemExit as exit_:
            code = exit_.code
        assert code != 0 and not out.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err
