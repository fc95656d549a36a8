"""The Ray backend on a real local Ray cluster (2 CPUs, started here): replicas, logs, hot swap, placement errors.

Skipped only where Ray is not installed; `.ci/run` installs the `ray` extra and sets FINALMILE_REQUIRE_RAY=1.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from subprocess import PIPE

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.backends.base import InferRequest
from finalmile.backends.config import deployment_config
from finalmile.errors import BadRequestError, FinalmileError
from finalmile.runtimes.generation import SINKS
from finalmile.streaming.supervisor import Supervisor
from tests.fixtures import BatchRowsModel, FlakyClassifier, PickyModel, tiny_language_models
from tests.integration.conftest import free_port, require_broker, start_server

if not os.environ.get("FINALMILE_REQUIRE_RAY"):
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'finalmile[ray]'")
importlib.import_module("finalmile.backends.ray")  # first: it sets Ray Serve's transport before Ray Serve reads it
import ray  # noqa: E402
from ray import serve  # noqa: E402

from finalmile.backends.ray import app_scope  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one Ray cluster per test run: every Ray test on one worker

X = pd.DataFrame(np.random.default_rng(3).normal(size=(600, 4)), columns=["a", "b", "c", "d"])
Y = (X.a + X.b > 0).astype(int)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    for side in ("REPLICA", "HANDLE"):  # autoscaling hears of load within a second (Ray's default: 10 s)
        os.environ[f"RAY_SERVE_{side}_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "0.5"
    ray.init("local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 1024**2, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def client(cluster: None, tmp_path: Path) -> Iterator[Client]:
    with Client(home=tmp_path / "home") as client:
        yield client
        for name in client.services.backend.deployed():
            client.undeploy_pipeline(name)


def _forest(client: Client, name: str = "forest", trees: int = 20) -> tuple[object, RandomForestClassifier]:
    model = RandomForestClassifier(trees, max_depth=5, random_state=0).fit(X, Y)
    return client.upload_model(name, model, sample=X.head(50)), model


def _logged(client: Client, pipeline: str, expected: int | set[str], timeout_s: float = 40.0) -> pd.DataFrame:
    """The log rows of `pipeline` once `expected` (a count, or request ids) are there: replicas compact their
    journals every few seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = client.query(f"select request_id, pipeline_version from logs where pipeline = '{pipeline}'")
        there = len(rows) >= expected if isinstance(expected, int) else expected <= set(rows.request_id)
        if there or time.monotonic() > deadline:
            return rows
        time.sleep(1.0)


def _scope(client: Client, pipeline: str) -> str:
    """How the names of `pipeline`'s Ray applications start, for this client's store (default workspace)."""
    return f"{app_scope(client.services.metadata.store_id, 'default')}.{pipeline}."


def _replica_requests(client: Client) -> dict[str, float]:
    text = client.services.metrics.exposition().decode()
    found = re.findall(r'finalmile_replica_requests_total\{pipeline="p",replica="([^"]+)"\} ([0-9.e+]+)', text)
    return {replica: float(value) for replica, value in found}


def test_the_ray_tests_run_on_one_worker_beside_one_cluster(request: pytest.FixtureRequest) -> None:
    """pytest-xdist keeps a group on one worker by tagging its tests' ids (`--dist loadgroup`, as `make test` runs).
    pytest 9.2 stores ids where pytest-xdist 3.8 cannot tag them: the Ray tests then ran on both workers, two Ray
    clusters at once, and a worker died with its cluster's GCS mid-run (pyproject.toml pins pytest below 9.2)."""
    if getattr(request.config.option, "loadgroup", False):  # set in xdist's workers under --dist loadgroup
        assert request.node.nodeid.endswith("@ray"), f"pytest {pytest.__version__} broke xdist_group: pin it"


def test_two_replicas_both_serve_and_every_row_lands_in_the_one_log(client: Client) -> None:
    mv, model = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    pipeline.deploy(backend="ray", replicas=2, replica_cpus=0.25)
    replicas = client.services.backend.ray().replicas("p")  # type: ignore[attr-defined]
    assert len(replicas) == 2 and len({pid for _, pid in replicas}) == 2

    failures: list[BaseException] = []
    scores: dict[int, float] = {}

    def send(start: int) -> None:
        for i in range(start, start + 40):
            try:
                scores[i] = float(pipeline.infer(X.iloc[[i]])["score"][0])
            except BaseException as exc:  # noqa: BLE001 - every failure is reported by the assertion below
                failures.append(exc)

    threads = [threading.Thread(target=send, args=(k * 40,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    expected = model.predict_proba(X.iloc[:320])[:, 1]
    np.testing.assert_allclose([scores[i] for i in range(320)], expected, rtol=1e-4, atol=1e-5)

    per_replica = _replica_requests(client)  # measured in each replica, reported with its results
    assert len(per_replica) == 2 and all(v > 0 for v in per_replica.values()) and sum(per_replica.values()) == 320
    logged = _logged(client, "p", 320)
    assert len(logged) == 320 and logged.request_id.nunique() == 320  # every replica's parts, nothing twice


def test_in_a_batch_on_ray_a_bad_request_fails_alone_and_is_an_error_row(client: Client) -> None:
    client.upload_model("picky", PickyModel, sample=X.head(20))
    client.build_pipeline("p").add_model_step("picky:1").deploy(backend="ray", replica_cpus=0.25, max_delay_ms=50)
    backend = client.services.backend.ray()
    frames = [X.iloc[[i]] for i in range(6)]
    frames.insert(2, X.iloc[[6]].assign(a=99.0))  # fails the batch it runs in: each then runs alone
    frames.insert(5, X.iloc[[7]].assign(b="x"))  # fails its own check on the replica, before the batch runs

    async def together() -> list[object]:  # submitted at once: the front's batcher takes all eight in one batch
        tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames]
        return await asyncio.gather(
            *(backend.target("p").infer(InferRequest("p", t)) for t in tables), return_exceptions=True
        )

    results = asyncio.run(together())
    schema, picky = results.pop(5), results.pop(2)
    assert isinstance(picky, FinalmileError) and "picky" in picky.message
    assert isinstance(schema, FinalmileError) and "'b'" in schema.message and schema.status_code == 422
    totals = [r.table.column("total")[0].as_py() for r in results]  # type: ignore[attr-defined]
    np.testing.assert_allclose(totals, X.head(6).sum(axis=1), rtol=1e-9)
    logged = _logged(client, "p", 8)  # the replica compacts its journal every few seconds
    assert len(logged) == 8
    errors = list(client.query("select error from logs where pipeline = 'p' and status = 'error'").error)
    assert len(errors) == 2 and any("'b'" in e for e in errors) and any("picky" in e for e in errors), errors


def test_a_rollout_on_ray_splits_in_the_replicas_and_rolls_back_a_candidate_that_errs(client: Client) -> None:
    _forest(client, "m")
    client.upload_model("m", FlakyClassifier().fit(X, Y))  # fails the requests holding a row whose `a` is over 0.84
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy(backend="ray", replica_cpus=0.25)
    rollout = pipeline.rollout("m:2", steps=[50, 100], step_every=0.1, min_rows=20, gates=["error_rate"])
    failed = 0
    for i in range(150):
        try:
            pipeline.infer(X.iloc[[i]])
        except FinalmileError:
            failed += 1
    assert 0 < failed < 60
    _logged(client, "p", 150)  # the replica's rows, errors included
    after = next(r for r in client.run_rollouts() if r.id == rollout.id)
    assert after.state == "rolled_back" and after.reason.startswith("error_rate: champion 0, candidate"), after.reason
    errors = client.query("select variant, count(*) as n from logs where status = 'error' group by 1")
    assert errors.to_dict("records") == [{"variant": "candidate", "n": failed}]
    deployed = next(d for d in client.deployments() if d["name"] == "p")
    assert deployed["version"] == 1 and deployed["config"]["backend"] == "ray"


def test_a_replica_runs_what_a_front_packed_in_batches_of_at_most_the_batch_size(client: Client) -> None:
    client.upload_model("rows", BatchRowsModel, sample=X.head(20))
    client.build_pipeline("p").add_model_step("rows:1").deploy(
        backend="ray", replica_cpus=0.25, max_batch_size=100, max_delay_ms=200
    )
    backend = client.services.backend.ray()
    frames = [X.iloc[30 * i : 30 * i + 30] for i in range(8)]  # 240 rows: one call (up to 800), three batches

    async def together() -> list[object]:
        tables = [pa.Table.from_pandas(f, preserve_index=False) for f in frames]
        return await asyncio.gather(*(backend.target("p").infer(InferRequest("p", t)) for t in tables))

    results = asyncio.run(together())
    sizes = [r.table.column("batch_rows").to_pylist() for r in results]  # type: ignore[attr-defined]
    assert [len(s) for s in sizes] == [30] * 8
    assert all(len(set(s)) == 1 and s[0] <= 100 for s in sizes), sizes  # never more than max_batch_size rows
    assert sorted(s[0] for s in sizes) == [60, 60, 90, 90, 90, 90, 90, 90], sizes  # in order, 3 requests a batch
    assert len(_logged(client, "p", 240)) == 240


def test_text_streams_from_a_ray_replica_as_it_is_decoded(client: Client, tmp_path: Path) -> None:
    """A generative model decodes in its replica: each piece of text reaches the front's sink as it is decoded (the
    OpenAI route streams from that sink), and the pieces make the completion."""
    pytest.importorskip("transformers")
    causal, _ = tiny_language_models(tmp_path / "models")
    client.upload_model("lm", causal)
    pipeline = client.build_pipeline("chat").add_model_step("lm:1")
    pipeline.deploy(backend="ray", replica_cpus=0.25)
    pieces: list[str] = []
    SINKS.open("ray-sink", pieces.append)
    try:
        rows = {"prompt": ["hello"], "max_tokens": [6], "temperature": [0.0]}
        streamed = pipeline.infer(pd.DataFrame(rows | {"stream_id": ["ray-sink"]}))
    finally:
        SINKS.close("ray-sink")
    assert "".join(pieces) == streamed.completion[0] and len(pieces) >= 2
    plain = pipeline.infer(pd.DataFrame(rows))  # no stream: the plain call, the same answer
    assert plain.completion[0] == streamed.completion[0]


def test_hot_swap_under_load_fails_no_request_and_undeploy_frees_the_replicas(client: Client) -> None:
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    pipeline.deploy(backend="ray", replica_cpus=0.25)
    stop = threading.Event()
    failures: list[BaseException] = []
    versions: list[int] = []

    def load() -> None:
        while not stop.is_set():
            try:
                versions.append(pipeline.infer_with_metadata(X.head(3)).version)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    other = client.upload_model("lr", LogisticRegression().fit(X, Y), sample=X.head(50))
    client.build_pipeline("p").add_model_step(other).deploy(backend="ray", replica_cpus=0.25)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [] and versions[0] == 1 and versions[-1] == 2 and set(versions) == {1, 2}

    client.undeploy_pipeline("p")
    deadline = time.monotonic() + 30
    while any(name.startswith(_scope(client, "p")) for name in serve.status().applications):
        assert time.monotonic() < deadline, f"replicas still up: {list(serve.status().applications)}"
        time.sleep(0.5)


def test_the_server_default_backend_and_bad_placements(client: Client, tmp_path: Path) -> None:
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    with pytest.raises(BadRequestError) as bad:
        pipeline.deploy(backend="ray", replicas=0)
    assert bad.value.detail == {"field": "replicas"}
    with pytest.raises(BadRequestError) as bad:
        pipeline.deploy(backend="ray", autoscaling={"min_replicas": 3, "max_replicas": 2})
    assert "autoscaling" in bad.value.detail["field"] and "max_replicas" in bad.value.message
    assert client.services.pipelines.deployment("p") is None  # nothing refused was recorded

    definition = tmp_path / "p.yaml"
    definition.write_text(
        "name: q\nsteps:\n  - model: forest:1\n"
        "deployment:\n  backend: ray\n  replica_cpus: 0.25\n  autoscaling: {min_replicas: 1, max_replicas: 2}\n"
    )
    client.apply_pipeline(definition, deploy=True)
    record = client.services.pipelines.deployment("q")
    assert record is not None and record.config["backend"] == "ray"
    assert record.config["autoscaling"]["max_replicas"] == 2
    assert client.pipeline("q").infer(X.head(2)).shape[0] == 2
    assert any(name.startswith(_scope(client, "q")) for name in serve.status().applications)


def test_replicas_that_cannot_be_placed_are_refused_in_time_and_the_server_goes_on(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray waits for ever for a replica no node can place: the deploy (and every later one) used to hang."""
    monkeypatch.setenv("FINALMILE_RAY_START_TIMEOUT_S", "123")
    with Client(home=tmp_path / "home") as client:
        mv, _ = _forest(client)
        client.build_pipeline("served").add_model_step(mv).deploy(backend="ray", replica_cpus=0.25)
        ray_backend = client.services.backend.ray()
        assert ray_backend.start_timeout_s == 123  # type: ignore[attr-defined]
        ray_backend.start_timeout_s = 4  # type: ignore[attr-defined]  # a replica that loads takes 2-10 s here
        pipeline = client.build_pipeline("p").add_model_step(mv)
        started = time.monotonic()
        with pytest.raises(BadRequestError) as refused:  # more CPUs than the cluster's one node has
            pipeline.deploy(backend="ray", replica_cpus=8)
        assert time.monotonic() - started < 30
        assert refused.value.detail["field"] == "replica_cpus", refused.value.message
        assert "asks for 8 CPUs" in refused.value.message and "largest node" in refused.value.message
        with pytest.raises(FinalmileError) as busy:  # fits the node, not beside what already runs there
            pipeline.deploy(backend="ray", replica_cpus=1.9)
        assert busy.value.status_code == 503 and "did not start within 4 s" in busy.value.message
        assert "asks for 1.9 CPUs" in busy.value.message, busy.value.message
        assert client.services.pipelines.deployment("p") is None  # nothing refused was recorded
        assert not _waiting_in_serve(), "a thread still waits for the refused application"
        deadline = time.monotonic() + 30
        while any(n.startswith(_scope(client, "p")) for n in serve.status().applications):
            assert time.monotonic() < deadline, "the refused applications were not deleted"
            time.sleep(0.5)
        assert client.pipeline("served").infer(X.head(2)).shape[0] == 2

        # A stored deployment that cannot be placed (recorded when the cluster was larger): a server's sync gives
        # it up after the timeout, then leaves it for a minute instead of waiting again at every sync.
        version = client.services.pipelines.get_version("p").version
        config = deployment_config(backend="ray", replica_cpus=8).model_dump(mode="json")
        client.services.pipelines.set_deployment("p", version, config)
        started = time.monotonic()
        client.services.sync()
        assert 3.5 < time.monotonic() - started < 30
        started = time.monotonic()
        client.services.sync()
        assert time.monotonic() - started < 3
        assert "p" not in client.services.backend.deployed()
        assert client.pipeline("served").infer(X.head(2)).shape[0] == 2
        assert not _waiting_in_serve()

        ray_backend.start_timeout_s = 123  # type: ignore[attr-defined]
        pipeline.deploy(backend="ray", replica_cpus=0.25)  # the server deploys again
        assert client.pipeline("p").infer(X.head(3)).shape[0] == 3
        for name in client.services.backend.deployed():
            client.undeploy_pipeline(name)


def _waiting_in_serve() -> list[str]:
    """Threads inside Serve's wait for an application: one left there outlives the application and, once Ray has
    shut down, starts a cluster of its own that dies with it (what lost a test worker)."""
    return [
        str(ident)
        for ident, frame in sys._current_frames().items()
        if any("wait_for_application_running" in f.name for f in traceback.extract_stack(frame))
    ]


def test_replicas_that_never_fit_the_cluster_are_named_by_their_field() -> None:
    from finalmile.backends.ray_cluster import never_fits

    def refused(nodes: list[float], **config: object) -> tuple[str, str] | None:
        error = never_fits("pipeline 'p' version 1", deployment_config(backend="ray", **config), nodes)
        return None if error is None else (error.detail["field"], error.message)

    assert refused([2.0], replica_cpus=0.5, replicas=4) is None
    assert refused([2.0, 1.0], replica_cpus=1.0, replicas=3) is None
    assert refused([2.0], replica_cpus=3) == (
        "replica_cpus",
        "deployment replica_cpus: each replica of pipeline 'p' version 1 asks for 3 CPUs and the largest node of "
        "the Ray cluster has 2",
    )
    assert refused([2.0], replica_cpus=0.5, replicas=5) == (
        "replicas",
        "deployment replicas: pipeline 'p' version 1 starts 5 replicas of 0.5 CPUs and the Ray cluster's nodes "
        "(2 CPUs) hold 4",
    )
    assert refused([1.5, 1.5], replica_cpus=1.0, replicas=3) is not None  # no replica spans two nodes
    assert refused([1.0], replica_cpus=0.1, replicas=10) is None  # 1.0 / 0.1 is 9.999... in floats
    scaling = {"min_replicas": 3, "max_replicas": 8}
    assert refused([2.0], replica_cpus=1.0, autoscaling=scaling)[0] == "autoscaling.min_replicas"  # type: ignore[index]
    assert refused([2.0], replica_cpus=1.0, autoscaling=scaling | {"min_replicas": 0}) is None  # starts one


def test_a_cluster_joined_through_ray_address_is_not_taken_for_one_started_here(cluster: None) -> None:
    """`ray.init()` joins RAY_ADDRESS when given no address: such a cluster was taken for one this process started,
    so closing the server shut Serve down on it (every application of every server), and `never_fits` would have
    refused what its autoscaler could place."""
    env = os.environ | {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    code = "from finalmile.backends.ray import connect; import ray; print('started', connect(None)); ray.shutdown()"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "started False" in done.stdout, done.stdout + done.stderr[-2000:]


def test_without_an_address_finalmile_starts_a_cluster_of_its_own_even_where_ray_start_left_one(
    cluster: None, tmp_path: Path
) -> None:
    """A bare `ray.init()` joins the cluster `ray start` last started on the machine (named in Ray's temp dir).
    There finalmile asked Ray for the label of a cluster of its own, which Ray refuses on one it joins, so every Ray
    deploy answered 503; and file inference ran on that cluster. Both now start a labelled cluster of their own."""
    home = tmp_path / "home"
    with Client(home=home) as client:
        mv, _ = _forest(client)
        client.build_pipeline("p").add_model_step(mv).deploy()
    X.head(100).to_parquet(tmp_path / "in.parquet")
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: the new clusters' sockets live under it
    (ray_tmp / "ray").mkdir()
    gcs = ray.get_runtime_context().gcs_address
    (ray_tmp / "ray" / "ray_current_cluster").write_text(gcs)  # what `ray start` leaves
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "RAY_TMPDIR": str(ray_tmp),
        "FINALMILE_HOME": str(home),
    }
    report = (
        "from finalmile.backends.ray_cluster import fixed_node_cpus;"
        f"print('own', fixed_node_cpus() is not None, ray.get_runtime_context().gcs_address != {gcs!r}); ray.shutdown()"
    )
    codes = {
        "serving": f"import ray; from finalmile.backends.ray import connect; print('started', connect(None)); {report}",
        "file inference": "import finalmile, ray; c = finalmile.Client(); c.services.sync(); "
        f"c.pipeline('p').infer_file('in.parquet', 'out.parquet', progress=False, backend='ray'); {report}",
    }
    runs = {
        what: subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, text=True, stdout=PIPE, stderr=PIPE)
        for what, code in codes.items()
    }
    said = {what: run.communicate(timeout=180) for what, run in runs.items()}
    shutil.rmtree(ray_tmp, ignore_errors=True)
    for what, (out, err) in said.items():
        assert "own True True" in out, f"{what}: {out}{err[-3000:]}"  # labelled, and not the cluster in the file
    assert "started True" in said["serving"][0]  # so closing it shuts down what it started, and only that
    assert len(pd.read_parquet(tmp_path / "out.parquet")) == 100


def test_a_replica_refuses_a_model_whose_stored_bytes_changed_and_nothing_is_recorded(client: Client) -> None:
    mv, _ = _forest(client)
    artifacts = client.services.artifacts
    for sha in (mv.record.artifact_sha256, mv.record.onnx_sha256):
        assert sha is not None
        path = artifacts.path_of(sha)
        path.chmod(0o644)
        path.write_bytes(path.read_bytes()[:-1] + b"!")  # one byte changed on the shared disk
    with pytest.raises(FinalmileError) as refused:
        client.build_pipeline("p").add_model_step(mv).deploy(backend="ray", replica_cpus=0.25)
    assert refused.value.status_code == 503, refused.value.message
    assert "did not start" in refused.value.message, refused.value.message
    assert "IntegrityError" in refused.value.message and "tampered with" in refused.value.message  # the replica's
    assert client.services.pipelines.deployment("p") is None
    assert "p" not in client.services.backend.deployed()


def test_two_stores_sharing_a_cluster_never_adopt_or_delete_each_others_replicas(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging and production on one Ray cluster, each deploying the same pipeline version: each gets replicas of
    its own, which load its artifacts and log into its home, and neither's clean-up deletes the other's."""
    import finalmile.backends.ray as ray_backend

    with Client(home=tmp_path / "staging") as staging, Client(home=tmp_path / "production") as production:
        for client in (staging, production):
            mv, _ = _forest(client)
            client.build_pipeline("p").add_model_step(mv).deploy(backend="ray", replica_cpus=0.25)
        names = {c.services.backend.ray().apps["p"].app for c in (staging, production)}  # type: ignore[attr-defined]
        assert len(names) == 2
        staging.pipeline("p").infer(X.head(3))
        production.pipeline("p").infer(X.head(5))
        assert len(_logged(staging, "p", 3)) == 3 and len(_logged(production, "p", 5)) == 5

        monkeypatch.setattr(ray_backend, "STALE_AFTER_S", 0.0)  # what nothing of its own wants goes at once
        monkeypatch.setattr(ray_backend, "STALE_CHECK_S", 0.0)
        production.services.backend.sync()
        assert names <= set(serve.status().applications)  # staging's application is not production's to delete
        for client in (staging, production):
            client.undeploy_pipeline("p")


def test_a_killed_replica_is_replaced_and_every_answered_request_is_in_the_log(client: Client) -> None:
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    pipeline.deploy(backend="ray", replicas=2, replica_cpus=0.25, durability="strict")
    backend = client.services.backend.ray()
    before = dict(backend.replicas("p"))  # type: ignore[attr-defined]
    stop = threading.Event()
    answered: list[str] = []
    failures: list[BaseException] = []

    def load() -> None:
        while not stop.is_set():
            try:
                answered.append(pipeline.infer_with_metadata(X.head(2)).request_id)
            except BaseException as exc:  # noqa: BLE001 - checked below: only the requests the dead replica held
                failures.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    victim = next(iter(before.values()))
    os.kill(victim, 9)
    deadline = time.monotonic() + 60
    while True:  # Ray Serve notices the dead actor and starts another in its place
        now = dict(backend.replicas("p"))  # type: ignore[attr-defined]
        if len(now) == 2 and victim not in now.values():
            break
        assert time.monotonic() < deadline, f"not replaced: {now}"
        time.sleep(0.5)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert len(failures) <= 8, failures  # at most what was in flight on the dead replica (2 calls of 4 requests)
    assert all("Ray replica" in str(f) for f in failures), failures  # a 503 that says so, never a wrong answer
    logged = _logged(client, "p", set(answered), timeout_s=60)  # the dead one's journal is recovered by its heir
    per_request = logged.request_id.value_counts()
    assert set(answered) <= set(per_request.index) and set(per_request) == {2}  # 2 rows each, none twice


def test_a_stream_message_scored_on_ray_is_on_the_replicas_disk_when_it_is_answered(client: Client) -> None:
    """A stream acknowledges a message once its answer is back: a replica killed right after must not take the
    message's log row with it (`fast` durability, which HTTP requests keep, holds rows up to a second in memory)."""
    mv, _ = _forest(client)
    client.build_pipeline("p").add_model_step(mv).deploy(backend="ray", replicas=1, replica_cpus=0.25)
    [(_, pid)] = client.services.backend.ray().replicas("p")  # type: ignore[attr-defined]
    dataplane = client.services.dataplane
    table = pa.Table.from_pandas(X.head(4))

    async def as_a_stream_sends_them() -> None:
        await dataplane.infer_each("p", table.slice(0, 3), ["m1", "m2", "m3"], durable=True)  # a batch as one
        await dataplane.infer(InferRequest("p", table.slice(3, 1), None, True, "m4", durable=True))  # a message alone

    asyncio.run(as_a_stream_sends_them())
    os.kill(pid, 9)  # at once: well inside the second that `fast` durability may hold rows in memory
    ids = ["m1", "m2", "m3", "m4"]
    assert client.services.reader.logged_ids("p", ids) == set(ids)  # what a redelivery looks up: the dead one's journal
    logged = _logged(client, "p", set(ids), timeout_s=60)  # compacted by the replica that replaces it
    assert sorted(logged.request_id) == ids  # each once


def test_a_stream_on_ray_acknowledges_only_what_the_replica_has_on_disk(client: Client) -> None:
    """End to end through the stream supervisor and the machine's Redis: every message acknowledged is in the log,
    even when its replica is killed the moment the acknowledgement is seen."""
    require_broker("redis")
    import redis

    r = redis.Redis()
    subject = f"ray-{uuid.uuid4().hex[:8]}"
    mv, _ = _forest(client)
    client.build_pipeline("p").add_model_step(mv).deploy(backend="ray", replicas=1, replica_cpus=0.25)
    [(_, pid)] = client.services.backend.ray().replicas("p")  # type: ignore[attr-defined]
    ids = [r.xadd(f"{subject}.in", {"data": json.dumps(row)}).decode() for row in X.head(30).to_dict("records")]
    client.services.apply_stream(
        {
            "name": "s",
            "pipeline": "p",
            "source": {"broker": "redis", "subject": f"{subject}.in"},
            "sink": {"broker": "redis", "subject": f"{subject}.out"},
        }
    )
    stop = threading.Event()

    async def supervise() -> None:
        supervisor = Supervisor(lambda: [client.services])
        supervisor.start()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        await supervisor.stop()

    thread = threading.Thread(target=asyncio.run, args=(supervise(),))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # every message delivered to the group and acknowledged
            groups = r.xinfo_groups(f"{subject}.in")  # none until the stream has started
            if groups and groups[0]["entries-read"] == len(ids) and groups[0]["pending"] == 0:
                break
            assert time.monotonic() < deadline, groups
            time.sleep(0.01)
        os.kill(pid, 9)
        assert client.services.reader.logged_ids("p", ids) == set(ids)
    finally:
        stop.set()
        thread.join(timeout=30)
        r.delete(f"{subject}.in", f"{subject}.out")


def test_autoscaling_adds_a_replica_under_load_and_removes_it_after(client: Client) -> None:
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    scaling = {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 1,
        "upscale_delay_s": 0.5,
        "downscale_delay_s": 2,
        "look_back_period_s": 11,
    }
    pipeline.deploy(backend="ray", autoscaling=scaling, replica_cpus=0.25, max_delay_ms=0)
    name = client.services.backend.ray().apps["p"].app  # type: ignore[attr-defined]

    def running() -> int:
        replicas = serve.status().applications[name].deployments["replica"].replica_states
        return int(replicas.get("RUNNING", 0))

    assert running() == 1
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            pipeline.infer(X.head(50))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    try:
        while running() < 2:
            assert time.monotonic() < deadline, "autoscaling did not add a replica under load"
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    deadline = time.monotonic() + 60
    while running() > 1:
        assert time.monotonic() < deadline, "autoscaling did not remove the idle replica"
        time.sleep(0.5)


def test_file_inference_on_ray_equals_the_local_path_row_for_row(client: Client, tmp_path: Path) -> None:
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    pipeline.deploy()  # file inference on Ray needs no Ray deployment: its actors load the version themselves
    rows = pd.DataFrame(np.random.default_rng(9).normal(size=(300_000, 4)), columns=["a", "b", "c", "d"])
    source = tmp_path / "in.parquet"
    rows.to_parquet(source, row_group_size=7_000)  # row groups that straddle the batches
    local = pipeline.infer_file(source, tmp_path / "local.parquet", batch_size=5_000, progress=False)
    on_ray = pipeline.infer_file(source, tmp_path / "ray.parquet", batch_size=5_000, progress=False, backend="ray")
    assert local.rows == on_ray.rows == 300_000 and on_ray.batches == 60
    pd.testing.assert_frame_equal(pd.read_parquet(on_ray.output), pd.read_parquet(local.output))
    csv = tmp_path / "in.csv"
    rows.head(20_000).to_csv(csv, index=False)
    from_csv = pipeline.infer_file(csv, tmp_path / "csv.parquet", batch_size=3_000, progress=False, backend="ray")
    expected = pd.read_parquet(local.output).head(20_000)
    pd.testing.assert_frame_equal(pd.read_parquet(from_csv.output), expected, atol=1e-6)

    bad = tmp_path / "bad.parquet"
    rows.rename(columns={"a": "z"}).to_parquet(bad)
    with pytest.raises(FinalmileError) as refused:  # the model's error, said as itself (not Ray's wrapping)
        pipeline.infer_file(bad, tmp_path / "out.parquet", progress=False, backend="ray")
    assert "'a'" in refused.value.message or "a" in str(refused.value.detail)
    assert not (tmp_path / "out.parquet").exists()
    with pytest.raises(BadRequestError):
        pipeline.infer_file(source, tmp_path / "x.parquet", backend="spark")


def test_file_inference_actors_ask_what_is_free_up_to_a_whole_cpu() -> None:
    from finalmile.jobs.files_ray import actor_cpus

    assert actor_cpus(2.0, 2) == 1.0 and actor_cpus(7.5, 4) == 1.0
    assert actor_cpus(0.5, 1) == 0.5 and actor_cpus(1.0, 4) == 0.25 and actor_cpus(1.0, 3) == 0.3333
    assert actor_cpus(0.0, 1) == 1.0  # nothing free: a whole CPU, once one frees or a node is added


def test_file_inference_on_ray_runs_beside_replicas_that_leave_less_than_a_cpu_free(
    client: Client, tmp_path: Path
) -> None:
    """Its actors each asked a whole CPU: beside replicas holding 1.5 of the cluster's 2, it waited for ever."""
    mv, _ = _forest(client)
    pipeline = client.build_pipeline("p").add_model_step(mv)
    pipeline.deploy(backend="ray", replica_cpus=1.5)
    source = tmp_path / "in.parquet"
    X.to_parquet(source)
    outcome: dict[str, object] = {}

    def run() -> None:
        out = tmp_path / "ray.parquet"
        outcome["result"] = pipeline.infer_file(source, out, batch_size=100, progress=False, backend="ray")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "file inference on Ray waited for a CPU the replicas hold"
    scored = pd.read_parquet(tmp_path / "ray.parquet")
    assert len(scored) == len(X) and scored["label"].tolist() == pipeline.infer(X)["label"].tolist()


def test_serve_backend_ray_answers_v2_exactly_as_the_local_backend(cluster: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Client(home=home) as client:
        mv, _ = _forest(client)
        for name in ("onray", "local"):
            client.build_pipeline(name).add_model_step(mv).create_version()
        onray = _scope(client, "onray")
    address = ray.get_runtime_context().gcs_address
    server = start_server(home, args=("--backend", "ray", "--ray-address", address), timeout=120)
    try:
        deployed = httpx.post(f"{server.url}/api/v1/pipelines/onray/deploy", json={"replica_cpus": 0.25}, timeout=120)
        assert deployed.status_code == 200, deployed.text
        local = httpx.post(f"{server.url}/api/v1/pipelines/local/deploy", json={"backend": "local"}, timeout=60)
        assert local.status_code == 200, local.text
        bad = httpx.post(f"{server.url}/api/v1/pipelines/onray/deploy", json={"replicas": 0}, timeout=60)
        assert bad.status_code == 422 and "replicas" in bad.text
        assert any(n.startswith(onray) for n in serve.status().applications)
        body = {
            "inputs": [{"name": c, "shape": [3], "datatype": "FP64", "data": X[c].head(3).tolist()} for c in X.columns]
        }
        big = pd.concat([X] * 500, ignore_index=True)  # 300,000 rows: past gRPC's 4 MB default, both ways
        large = {"inputs": [{"name": c, "shape": [len(big)], "datatype": "FP64", "data": big[c].tolist()} for c in X]}
        for request in (body, large):
            answers = {}
            for name in ("onray", "local"):
                response = httpx.post(f"{server.url}/v2/models/{name}/infer", json=request, timeout=120)
                assert response.status_code == 200, response.text
                answers[name] = response.json()
            for answer in answers.values():  # what names the pipeline and the request differs; nothing else may
                answer.pop("model_name"), answer.pop("id", None)
                answer["parameters"].pop("request_id"), answer["parameters"].pop("pipeline")
            assert answers["onray"] == answers["local"]
    finally:
        server.stop()
        for name in [n for n in serve.status().applications if n.startswith(onray)]:
            serve.delete(name)


def _descendants(pid: int) -> dict[int, str]:
    """The processes under `pid` (pid: command line), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child in [p for p, pp in parents.items() if pp == parent]:
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            frontier.append(child)
    return found


def test_serve_workers_on_ray_share_one_local_cluster(tmp_path: Path) -> None:
    """`--workers 2 --backend ray` and no address: the supervising process starts one cluster that both workers
    join (each used to start its own, with its own replicas, and answered 503 for the other's deployments)."""
    home = tmp_path / "home"
    with Client(home=home) as client:
        mv, _ = _forest(client)
        client.build_pipeline("p").add_model_step(mv).create_version()
        other = client.upload_model("lr", LogisticRegression().fit(X, Y), sample=X.head(50))
        client.build_pipeline("p").add_model_step(other).create_version()
        scope = _scope(client, "p")
    server = start_server(home, args=("--backend", "ray", "--workers", "2"), timeout=120)
    deploy = f"{server.url}/api/v1/pipelines/p/deploy"
    try:
        # Replicas that never fit: the workers know their supervisor's cluster cannot grow (no autoscaler), so the
        # 400 comes at once instead of after the start timeout (300 s), and nothing is recorded.
        started = time.monotonic()
        too_large = httpx.post(deploy, json={"version": 1, "replica_cpus": 64}, timeout=120)
        too_many = httpx.post(deploy, json={"version": 1, "replica_cpus": 1, "replicas": 64}, timeout=120)
        assert time.monotonic() - started < 60  # Ray's first connection included
        assert too_large.status_code == 400 and too_large.json()["detail"]["field"] == "replica_cpus", too_large.text
        assert "asks for 64 CPUs" in too_large.json()["error"], too_large.text
        assert too_many.status_code == 400 and too_many.json()["detail"]["field"] == "replicas", too_many.text
        assert httpx.get(f"{server.url}/api/v1/pipelines/p", timeout=30).json()["deployment"] is None
        deployed = httpx.post(deploy, json={"version": 1, "replica_cpus": 0.25}, timeout=120)
        assert deployed.status_code == 200, deployed.text
        body = {"inputs": [{"name": c, "shape": [1], "datatype": "FP64", "data": [0.5]} for c in X.columns]}
        deadline, answered = time.monotonic() + 60, 0
        while answered < 40 and time.monotonic() < deadline:  # the other worker adopts the deployment within ~1 s
            ok = httpx.post(f"{server.url}/v2/models/p/infer", json=body, timeout=30).status_code == 200
            answered = answered + 1 if ok else 0
        assert answered == 40, server.log.read_text()[-3000:]
        under = _descendants(server.process.pid)
        clusters = [pid for pid, command in under.items() if "gcs_server" in command]
        replicas = [pid for pid, command in under.items() if f"ServeReplica:{scope}" in command]
        assert len(clusters) == 1 and len(replicas) == 1, under

        # A hot swap under load, through one worker: the other adopts the new version before the old one is
        # deleted, so neither fails a request.
        stop, answers = threading.Event(), []

        def load() -> None:
            with httpx.Client(timeout=30) as http:
                while not stop.is_set():
                    answer = http.post(f"{server.url}/v2/models/p/infer", json=body)
                    answers.append((answer.status_code, answer.json().get("model_version")))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        swapped = httpx.post(deploy, json={"version": 2, "replica_cpus": 0.25}, timeout=120)
        time.sleep(4.0)  # past the other worker's next sync and the old application's deletion
        stop.set()
        for t in threads:
            t.join()
        assert swapped.status_code == 200, swapped.text
        assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200][:3]
        assert answers[0][1] == "1" and answers[-1][1] == "2", (answers[0], answers[-1])
    finally:
        server.stop()
    deadline = time.monotonic() + 30  # the cluster goes with the process that started it
    while Path(f"/proc/{clusters[0]}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not Path(f"/proc/{clusters[0]}").exists()


def test_a_ray_cluster_that_cannot_be_joined_is_a_503_that_says_why(cluster: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with Client(home=home) as client:
        mv, _ = _forest(client)
        client.build_pipeline("p").add_model_step(mv).create_version()
    nothing_there = f"127.0.0.1:{free_port()}"
    listener = socket.create_server(("127.0.0.1", 0))  # takes connections, speaks no gRPC: Ray retried it for ever
    cases = [  # (address, the server's environment, what the error must say)
        (nothing_there, {}, "nothing answers there"),
        (f"127.0.0.1:{listener.getsockname()[1]}", {}, "is not Ray"),
        (ray.get_runtime_context().gcs_address, {"RAY_AUTH_MODE": "disabled"}, "RAY_AUTH_MODE=token"),  # no token
    ]
    for address, env, reason in cases:
        server = start_server(home, env=env, args=("--backend", "ray", "--ray-address", address))
        try:
            refused = httpx.post(f"{server.url}/api/v1/pipelines/p/deploy", json={"replica_cpus": 0.25}, timeout=120)
            assert refused.status_code == 503, refused.text
            assert address in refused.json()["error"] and reason in refused.json()["error"], refused.text
            assert refused.json()["detail"]["field"] == "ray_address"
            assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
            assert httpx.get(f"{server.url}/v2/models/p/ready").status_code != 200  # nothing was deployed
        finally:
            server.stop()
    listener.close()


def test_a_local_cluster_that_does_not_start_in_time_says_why_and_leaves_nothing_running() -> None:
    """Ray gives up on its GCS server after RAY_gcs_server_port_wait_time_s (0 here: at once); the processes it had
    started were left running, and their handles warned when collected, in whatever test ran next."""
    script = """
import gc, os, warnings
from pathlib import Path
import finalmile.backends.ray
from finalmile.backends.ray_cluster import join
from finalmile.errors import BackendUnavailable

def children():
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            name, rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        except OSError:  # gone meanwhile
            continue
        state, ppid = rest.split()[:2]
        if int(ppid) == os.getpid() and state != "Z":
            yield name.partition("(")[2]

warnings.simplefilter("error")
try:
    join(None)
except BackendUnavailable as exc:
    print("refused:", exc)
gc.collect()
print("running:", list(children()))
"""
    env = {**os.environ, "RAY_gcs_server_port_wait_time_s": "0", "RAY_ADDRESS": ""}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: cannot join a local Ray cluster: Timed out waiting for file" in out.stdout, out.stdout
    assert "running: []" in out.stdout and "ResourceWarning" not in out.stderr, out.stdout + out.stderr[-2000:]


def test_a_traced_request_on_ray_spans_the_hop_and_its_log_row_names_the_trace(cluster: None, tmp_path: Path) -> None:
    """Tracing on, `--backend ray`: the front's batch span has a `ray replica` span for the call to the replica, and
    the row the replica logged carries the client's trace id (the front sends the batch's trace ids with the call)."""
    pytest.importorskip("opentelemetry.sdk")
    from tests.integration.test_tracing import PARENT, TRACE, Receiver

    home = tmp_path / "home"
    with Client(home=home) as client:
        mv, _ = _forest(client)
        client.build_pipeline("traced").add_model_step(mv).create_version()
        scope = _scope(client, "traced")
    receiver = Receiver()
    env = {"FINALMILE_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "FINALMILE_LOG_COMPACT_S": "0.5"}  # fmt: skip
    address = ray.get_runtime_context().gcs_address
    server = start_server(home, env=env, args=("--backend", "ray", "--ray-address", address), timeout=120)
    try:
        deployed = httpx.post(f"{server.url}/api/v1/pipelines/traced/deploy", json={"replica_cpus": 0.25}, timeout=120)
        assert deployed.status_code == 200, deployed.text
        headers = {"content-type": "application/json", "traceparent": f"00-{TRACE}-{PARENT}-01"}
        answer = httpx.post(f"{server.url}/pipelines/traced/infer", content=X.head(1).to_json(orient="records"),
                            headers=headers)  # fmt: skip
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "ray replica" not in {s.name for s in receiver.of(TRACE)}:
            time.sleep(0.2)
        spans = {s.name: s for s in receiver.of(TRACE)}
        assert {"infer traced", "queue", "batch", "ray replica"} <= set(spans), set(spans)
        assert spans["ray replica"].parent_span_id == spans["batch"].span_id
        assert spans["batch"].start_time_unix_nano <= spans["ray replica"].start_time_unix_nano
        assert spans["ray replica"].end_time_unix_nano <= spans["batch"].end_time_unix_nano
        request_id = answer.headers["finalmile-request-id"]
        with Client(home=home) as client:
            deadline, rows = time.monotonic() + 40, None  # the replica compacts its journal every few seconds
            while time.monotonic() < deadline:
                try:
                    rows = client.query(f"SELECT trace_id FROM logs WHERE request_id = '{request_id}'")
                except FinalmileError:  # not in a sealed part yet: no trace_id column so far
                    rows = None
                if rows is not None and len(rows):
                    break
                time.sleep(0.5)
        assert rows is not None and list(rows.trace_id) == [TRACE]
    finally:
        server.stop()
        for name in [n for n in serve.status().applications if n.startswith(scope)]:
            serve.delete(name)
