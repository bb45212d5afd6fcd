"""`eval --ray` and `bench matrix --ray` on a real local Ray head (127.0.0.1, two workers).

One head per module (``ray start --head`` in its own process group, a temp dir, no dashboard,
no usage stats); the finalizer ends exactly the processes of that group and their children.
Distributed results are compared with a local eval of the same artifacts, run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _missing, assert_one_line_error, run_cli

from restv2_edge.errors import ArtifactError, ClusterError, OutputError
from restv2_edge.evaluate import LocalExecutor, evaluate_models, plan_eval, run_plan
from restv2_edge.scale.head import LOOPBACK_ENV, start_head
from restv2_edge.scale.shards import make_shards

LIMIT, SHARD, BATCH = 96, 16, 8  # 6 shards per artifact
RAY_ENV = {**LOOPBACK_ENV, "RAY_DEDUP_LOGS": "0"}


@pytest.fixture(scope="module")
def ray_head():
    """The address of a fresh head on 127.0.0.1 with 2 CPUs (two worker processes); this
    process is connected to it as a driver for the module."""
    saved = {key: os.environ.get(key) for key in RAY_ENV}
    os.environ.update(RAY_ENV)  # before ray is imported: it reads them once
    try:
        import ray
    except ImportError:
        _missing("ray is not installed (pip install 'restv2-edge[ray]')")
    try:
        head = start_head(2, timeout=120)
    except ClusterError as exc:
        _missing(f"a local Ray head could not start: {exc}")
    try:
        ray.init(address=head.address, log_to_driver=False)
        nodes = ray.nodes()
        assert [node["NodeManagerAddress"] for node in nodes] == ["127.0.0.1"], nodes
    except Exception as exc:
        head.stop()
        _missing(f"the local Ray head could not be joined: {exc}")
    address = head.address
    yield address
    ray.shutdown()
    head.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def artifacts(tiny_artifact):
    """Two fixture artifacts of different runtimes (the session's tiny exports)."""
    return [str(tiny_artifact("onnx", "fp32")[0]), str(tiny_artifact("openvino", "fp32")[0])]


@pytest.fixture(scope="module")
def local_reports(artifacts, cifar_test_tar):
    """The reference: a plain local eval of the same artifacts and images."""
    return evaluate_models(artifacts, cifar_test_tar, limit=LIMIT, batch_size=BATCH,
                           shard_size=SHARD, executor=LocalExecutor(threads=1))  # fmt: skip


def ray_executor(**options):
    import ray

    from restv2_edge.scale.executor import RayEvalExecutor

    return RayEvalExecutor(ray, **options)


def same(reports, reference):
    """Equal reports: every prediction, count and accuracy (timings aside)."""
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in reports]
    expected = [{k: v for k, v in r.items() if k != "seconds"} for r in reference]
    return strip == expected


def test_shards_are_deterministic_and_cover_the_list():
    items = [(f"k{i}", i % 3) for i in range(50)]
    shards = make_shards(items, 12, 8)  # rounded up to 16
    assert [s.id for s in shards] == ["s000000-000016", "s000016-000032", "s000032-000048",
                                      "s000048-000050"]  # fmt: skip
    assert [item for s in shards for item in s.items] == items
    assert make_shards(items, 12, 8) == shards


def test_local_report_has_per_class_and_worst_classes(local_reports):
    report = local_reports[0]
    assert report["images"] == LIMIT and report["shards"] == LIMIT // SHARD
    per_class = report["per_class"]
    assert sum(entry["images"] for entry in per_class.values()) == LIMIT
    hits = [row[0] == t for row, t in zip(report["predictions"]["top5"],
                                          report["predictions"]["targets"])]  # fmt: skip
    assert report["top1"] == sum(hits) / LIMIT
    worst = report["worst_classes"]
    assert [w["top1"] for w in worst] == sorted(w["top1"] for w in worst)
    assert len({tuple(row) for row in report["predictions"]["top5"]}) > 1  # not a constant


def test_ray_eval_equals_local_eval(ray_head, artifacts, cifar_test_tar, local_reports):
    from restv2_edge.scale.payload import BYTES, SHARED

    pids: set[int] = set()
    for ship in (BYTES, SHARED):  # the files through the object store, or only their paths
        reports = evaluate_models(artifacts, cifar_test_tar, limit=LIMIT, batch_size=BATCH,
                                  shard_size=SHARD, executor=ray_executor(ship=ship),
                                  on_result=lambda ident, r: pids.add(r["pid"]))  # fmt: skip
        assert same(reports, local_reports), ship
    assert pids and os.getpid() not in pids  # computed by the workers, not by the driver


def test_a_shard_reported_twice_counts_once(artifacts, cifar_test_tar, local_reports):
    class Twice(LocalExecutor):
        def run(self, plan, tasks, on_result):
            def both(ident, result):
                on_result(ident, result)
                on_result(ident, dict(result, top5=[[0] * 5] * len(result["top5"])))

            super().run(plan, tasks, both)

    seen: list[str] = []
    reports = evaluate_models(artifacts, cifar_test_tar, limit=LIMIT, batch_size=BATCH,
                              shard_size=SHARD, executor=Twice(threads=1),
                              on_result=lambda ident, r: seen.append(ident))  # fmt: skip
    assert len(seen) == len(set(seen)) == 2 * LIMIT // SHARD
    assert same(reports, local_reports)


def test_killed_worker_still_gives_the_complete_result(ray_head, artifacts, cifar_test_tar,
                                                       local_reports):  # fmt: skip
    killed: list[int] = []
    after: list[int] = []

    def kill_first_worker(ident, result):
        if not killed:
            killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)  # it is already on its next shard
        else:
            after.append(result["pid"])

    reports = evaluate_models(artifacts, cifar_test_tar, limit=LIMIT, batch_size=BATCH,
                              shard_size=SHARD, executor=ray_executor(retries=3),
                              on_result=kill_first_worker)  # fmt: skip
    assert same(reports, local_reports)
    assert killed and killed[0] not in after


def test_resume_runs_only_the_missing_shards(ray_head, artifacts, cifar_test_tar, local_reports,
                                             tmp_path):  # fmt: skip
    from restv2_edge.scale.resume import ShardStore

    plan = plan_eval(artifacts, cifar_test_tar, limit=LIMIT, batch_size=BATCH, shard_size=SHARD)
    store = ShardStore(tmp_path / "report.json.shards", plan.fingerprint)
    store.start(resume=False)
    total = len(plan.task_ids())

    def interrupt_after_three(ident, result):
        store.save(ident, result)
        if len(list(store.folder.glob("*-s*.json"))) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, ray_executor(), on_result=interrupt_after_three)
    kept = ShardStore(store.folder, plan.fingerprint).start(resume=True)
    assert len(kept) == 3
    computed: list[str] = []
    reports = run_plan(plan, ray_executor(), kept, lambda ident, r: computed.append(ident))
    assert len(computed) == total - 3 and not set(computed) & set(kept)
    assert same(reports, local_reports)
    changed = dict(plan.fingerprint, limit=LIMIT + 1)
    with pytest.raises(OutputError, match="another run"):
        ShardStore(store.folder, changed).start(resume=True)


@pytest.mark.slow  # a second driver process: its own workers start and import the runtimes
def test_cli_eval_ray(ray_head, artifacts, cifar_test_tar, local_reports, tmp_path):
    report = tmp_path / "eval.json"
    args = ["eval", *artifacts, "--data", cifar_test_tar, "--limit", LIMIT, "--shard-size",
            SHARD, "--json", report, "--predictions"]  # fmt: skip
    env_run = dict(os.environ, **RAY_ENV)
    command = [sys.executable, "-m", "restv2_edge.cli", *map(str, args), "--ray", ray_head]
    result = subprocess.run(command, capture_output=True, text=True, env=env_run, timeout=300)
    assert result.returncode == 0, result.stderr
    written = json.loads(report.read_text())["results"]
    for got, expected in zip(written, local_reports):
        assert got["predictions"] == expected["predictions"]
        assert got["top1"] == expected["top1"] and got["per_class"] == expected["per_class"]
    assert not (tmp_path / "eval.json.shards").exists()  # a complete run keeps no shards


def test_cli_refuses_bad_ray_options_at_parse_time(artifacts, cifar_test_tar, tmp_path):
    report = tmp_path / "r.json"
    base = ["eval", artifacts[0], "--data", cifar_test_tar, "--json", report]
    assert_one_line_error(run_cli(*base, "--ray", "10.0.0.1:99999"), "port")
    assert_one_line_error(run_cli(*base, "--ray", "not an address"), "ray address")
    # a bare --ray before an artifact takes the path as its address: the line says so
    ahead = ["eval", "--ray", artifacts[0], "--data", cifar_test_tar, "--json", report]
    assert_one_line_error(run_cli(*ahead), "put --ray last")
    assert_one_line_error(run_cli("eval", artifacts[0], "--data", cifar_test_tar, "--resume"),
                          "--resume needs --json")  # fmt: skip
    assert_one_line_error(run_cli(*base, "--retries", "2"), "--retries", "without --ray")
    assert_one_line_error(run_cli(*base, "--resume"), "nothing to resume")
    assert_one_line_error(run_cli(*base, "--device", "NPU"), "device NPU")
    matrix = ("bench", "matrix", "--output", tmp_path / "m", "--json", report)
    assert_one_line_error(run_cli(*matrix, "--ray", "head:0x10"), "ray address")
    assert not (tmp_path / "m").exists()
    assert not report.exists() and not (tmp_path / "r.json.shards").exists()


def test_tampered_shipped_artifact_is_refused_on_the_worker(artifacts, tmp_path, monkeypatch):
    from restv2_edge.scale import payload as shipping
    from restv2_edge.scale.tasks import open_on_worker

    monkeypatch.setattr(shipping, "cache_root", lambda: tmp_path / "cache")
    packed = shipping.pack_artifact(artifacts[0])
    model_file = next(name for name in packed["files"] if name != "manifest.json")
    blob = packed["files"][model_file]
    packed["files"][model_file] = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(ArtifactError, match="sha256"):
        open_on_worker(packed, 1, None)


@pytest.mark.slow  # two onnx exports of the tiny model (one here, one on a worker)
def test_bench_matrix_on_ray_gives_the_local_table(ray_head, tiny_checkpoint, photo_dir,
                                                   cifar_test_tar, tmp_path):  # fmt: skip
    import ray

    from restv2_edge.bench.matrix import run_matrix
    from restv2_edge.scale.executor import MatrixCells
    from restv2_edge.scale.payload import BYTES

    settings = {"variant": None, "weights": tiny_checkpoint, "targets": ["onnx"], "warmup": 0,
                "runs": 1,
                "parity_data": photo_dir, "parity_limit": 4, "accuracy_data": cifar_test_tar,
                "accuracy_limit": 32, "gemm_size": 64, "threads": 1}  # fmt: skip
    local = run_matrix(output=tmp_path / "local", **settings)
    remote = run_matrix(output=tmp_path / "ray", cluster=MatrixCells(ray, ray_head, BYTES),
                        **settings)  # fmt: skip

    def table(report):
        keep = ("key", "status", "parity", "accuracy", "size_mb")
        return [{k: row.get(k) for k in keep} for row in report["rows"]]

    assert table(remote) == table(local)
    assert remote["rows"][1]["status"] == "ok" and "median_ms" in remote["rows"][1]
    assert Path(remote["rows"][1]["artifact"]).parent == tmp_path / "ray"
    assert remote["settings"]["ray"]["ship"] == BYTES


def test_nothing_imports_ray_without_the_ray_option():
    code = ("import sys\n"
            "import restv2_edge.cli, restv2_edge.bench.cli, restv2_edge.evaluate\n"
            "import restv2_edge.scale.command, restv2_edge.scale.executor\n"
            "assert 'ray' not in sys.modules, 'ray imported'\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
