"""oxiflow.airflow on a real Airflow 3.3 (SQLite, ``dag.test()``) and S3 on moto.

One module, so Airflow's import and database set-up are paid once: the
fixture ``airflow_env`` points ``AIRFLOW_HOME`` at a temporary directory,
migrates its SQLite database and configures the state-store backend, all
before Airflow is first imported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from conftest import OXIFLOW_BIN, REPO, S3

import oxiflow

EXAMPLE_DAG = REPO / "examples" / "airflow" / "oxiflow_orders_dag.py"
SHARDS_DAG = REPO / "examples" / "airflow" / "oxiflow_shards_dag.py"


@pytest.fixture(scope="module")
def airflow_env(s3: S3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A migrated Airflow home, the store on moto (``OXIFLOW_*``: this process, the CLI and child
    processes alike), the oxiflow state-store backend configured."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        "OXIFLOW_BACKEND": f"s3://{s3.bucket}/py-airflow-{uuid.uuid4().hex[:12]}",
        "OXIFLOW_ENDPOINT": s3.endpoint,
        "OXIFLOW_ALLOW_HTTP": "true",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAG.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__STATE_STORE__BACKEND": "oxiflow.airflow.state_store.OxiflowStateStoreBackend",
        "AIRFLOW__OXIFLOW__STATE_STORE_PREFIX": "airflow-state",
        "OXIFLOW_EXAMPLE_DATA": str(home / "data"),
    }
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != str(home):
        pytest.fail("Airflow was imported before this module's fixture configured it")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        migrate = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ.copy()
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        yield env


def load_example(path: Path = EXAMPLE_DAG) -> ModuleType:
    """An example DAG file as a module (not through ``examples/`` on sys.path: its ``airflow`` folder would shadow Airflow)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_show(pipeline: str) -> dict[str, Any]:
    """``oxiflow state show PIPELINE --json`` as a separate process, with this process's OXIFLOW_* settings."""
    assert OXIFLOW_BIN.exists(), f"{OXIFLOW_BIN} is missing: cargo build --release -p oxiflow"
    out = subprocess.run([str(OXIFLOW_BIN), "state", "show", pipeline, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    view: dict[str, Any] = json.loads(out.stdout)
    return view


def step_of(view: dict[str, Any], step: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in view["steps"] if s["step_id"] == step)
    return found


def fake_context(task_id: str, try_number: int = 1) -> Any:
    """What the operators read of Airflow's context: the task instance."""
    ti = SimpleNamespace(dag_id="unit", task_id=task_id, map_index=-1, run_id="manual__2026-01-01T00:00:00+00:00", try_number=try_number)
    return {"ti": ti, "params": {}}


# --- the example DAG: a crash half-way and Airflow's retry --------------------------------


def test_example_dag_retry_resumes_from_the_bookmark(airflow_env: dict[str, str]) -> None:
    example = load_example()
    pipeline = f"orders-{uuid.uuid4().hex[:8]}"
    run = example.dag.test(run_conf={"pipeline": pipeline, "fail_transform_at_batch": 6})

    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        tis = {ti.task_id: ti for ti in session.query(TaskInstance).filter_by(dag_id="oxiflow_orders", run_id=run.run_id)}
        assert {t: ti.state for t, ti in tis.items()} == {t: TaskInstanceState.SUCCESS for t in ("extract", "transform", "load")}
        assert (tis["extract"].try_number, tis["transform"].try_number, tis["load"].try_number) == (1, 2, 1)
        results = {t: ti.xcom_pull(task_ids=t, key="return_value", session=session) for t, ti in tis.items()}
    # The first try of transform checkpointed batches 1-5, wrote batch 6 and crashed before its
    # checkpoint; the retry resumed after order-0050 and ran batches 6-10 (6 again).
    assert results["transform"] == {
        "pipeline": pipeline,
        "partition": "transform",
        "batches": 5,
        "records": 50,
        "bookmark": "order-0100",
        "completed": True,
        "skipped": False,
    }
    assert results["extract"]["records"] == results["load"]["records"] == 100

    loaded = sorted((Path(airflow_env["OXIFLOW_EXAMPLE_DATA"]) / pipeline / "load").glob("batch-*.jsonl"))
    rows = [json.loads(line) for path in loaded for line in path.read_text().splitlines()]
    assert len(loaded) == 10
    assert [r["id"] for r in rows] == [f"order-{i:04d}" for i in range(1, 101)]
    assert sum(r["cents"] for r in rows) == 125 * 100 * 101 // 2

    view = state_show(pipeline)
    assert view["status"] == "completed"
    assert view["records_processed"] == 300
    for step in ("extract", "transform", "load"):
        (part,) = step_of(view, step)["partitions"]
        assert (part["records_processed"], part["batch_number"], part["last_processed_id"]) == (100, 10, "order-0100"), step
        assert "completed" in part["status"], part
    (transform,) = step_of(view, "transform")["partitions"]
    assert transform["total_errors"] == 1
    assert "simulated crash after writing batch 6" in json.dumps(view["recent_errors"])
    assert sum(step_of(view, s)["partitions"][0]["total_errors"] for s in ("extract", "load")) == 0

    # load noted its end in Airflow's task state store: through the Execution API into this backend
    from airflow.state import TaskScope, get_state_backend

    noted = get_state_backend().get(TaskScope(dag_id="oxiflow_orders", run_id=run.run_id, task_id="load"), "loaded")
    assert noted is not None and json.loads(noted) == {"through": "order-0100", "batches": 10}

    # A re-run of the same DAG with the pipeline completed redoes nothing.
    again = example.dag.test(run_conf={"pipeline": pipeline, "fail_transform_at_batch": 0})
    assert again.state == DagRunState.SUCCESS
    assert state_show(pipeline)["records_processed"] == 300


def test_shards_dag_defers_a_held_shard_until_it_is_free(airflow_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Four mapped shard tasks; shard 2 is held elsewhere, so its task defers to the trigger (run
    inline by dag.test) and claims it on the trigger's next poll after the holder let go."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    from oxiflow.airflow import OxiflowStepTrigger

    example = load_example(SHARDS_DAG)
    pipeline = f"scan-{uuid.uuid4().hex[:8]}"
    state = oxiflow.State()
    state.create_pipeline(pipeline, steps=["scan:4"])
    holder = state.claim(pipeline, "scan@2", worker="elsewhere")
    polls: list[dict[str, Any] | None] = []
    check = OxiflowStepTrigger.check

    def check_then_let_go(self: OxiflowStepTrigger, state: oxiflow.State) -> dict[str, Any] | None:
        payload = check(self, state)
        polls.append(payload)
        if payload is None and holder.active:
            holder.release()  # the other worker finishes with it after the trigger's first look
        return payload

    monkeypatch.setattr(OxiflowStepTrigger, "check", check_then_let_go)
    run = example.dag.test(run_conf={"pipeline": pipeline})

    assert run.state == DagRunState.SUCCESS
    assert polls == [None, {"status": "claimable", "target": "scan@2", "message": None}]
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id="oxiflow_shards", run_id=run.run_id).all()
        assert sorted((ti.task_id, ti.map_index, ti.state, ti.try_number) for ti in tis) == [
            ("scan", i, TaskInstanceState.SUCCESS, 1) for i in range(4)
        ] + [("scanned", -1, TaskInstanceState.SUCCESS, 1)]
    view = state_show(pipeline)
    assert view["status"] == "completed" and view["records_processed"] == 400
    for i, part in enumerate(step_of(view, "scan")["partitions"]):
        assert (part["partition"], part["records_processed"], part["batch_number"]) == (f"scan@{i}", 100, 4)
        assert part["last_processed_id"] == str(100 * (i + 1))
        assert part["worker_id"].startswith(f"airflow-oxiflow_shards-scan-m{i}-try1-")
    assert step_of(view, "scan")["partitions"][2]["attempts"] == 2  # elsewhere's claim, then the task's


# --- the operator waits instead of failing ---------------------------------------------------


def test_operator_reschedules_or_defers_while_the_lease_is_held(airflow_env: dict[str, str]) -> None:
    from airflow.sdk.exceptions import AirflowRescheduleException, TaskDeferred

    from oxiflow.airflow import Batch, OxiflowStepOperator, OxiflowStepTrigger

    pipeline = f"held-{uuid.uuid4().hex[:8]}"
    state = oxiflow.State()
    state.create_pipeline(pipeline, steps=["only"])
    holder = state.claim(pipeline, "only", worker="someone-else")

    calls: list[str | None] = []

    def one_batch(cursor: Any, context: Any) -> Batch | None:
        calls.append(cursor.bookmark)
        return Batch(last_id="x-1", records=3, done=True)

    op = OxiflowStepOperator(task_id="only", pipeline=pipeline, partition="only", python_callable=one_batch, wait_interval=7)
    before = time.time()
    with pytest.raises(AirflowRescheduleException) as rescheduled:
        op.execute(fake_context("only"))
    assert 6 <= rescheduled.value.reschedule_date.timestamp() - before <= 9

    deferrable = OxiflowStepOperator(
        task_id="only", pipeline=pipeline, partition="only", python_callable=one_batch, deferrable=True, wait_interval=7
    )
    with pytest.raises(TaskDeferred) as deferred:
        deferrable.execute(fake_context("only"))
    trigger = deferred.value.trigger
    assert isinstance(trigger, OxiflowStepTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.check(state) is None  # still held
    assert calls == []

    holder.release()
    assert trigger.check(state) == {"status": "claimable", "target": "only", "message": None}
    classpath, kwargs = trigger.serialize()
    assert classpath == "oxiflow.airflow.triggers.OxiflowStepTrigger"
    async def first_event() -> Any:
        async for event in OxiflowStepTrigger(**kwargs).run():
            return event

    event = asyncio.run(first_event())
    assert event.payload["status"] == "claimable"

    assert deferrable.execute_complete(fake_context("only", 2), event.payload)["records"] == 3
    assert calls == [None]
    # completed: a later try does not run the callable again
    assert op.execute(fake_context("only", 3))["skipped"] is True
    assert calls == [None]


def test_operator_on_kill_gives_the_partition_back(airflow_env: dict[str, str]) -> None:
    from oxiflow.airflow import Batch, Cursor, OxiflowStepOperator

    pipeline = f"killed-{uuid.uuid4().hex[:8]}"
    oxiflow.State().create_pipeline(pipeline, steps=["only"])
    seen: list[str | None] = []

    def killed_on_second_batch(cursor: Cursor, context: Any) -> Batch | None:
        seen.append(cursor.bookmark)
        if cursor.batch_number == 1 and len(seen) == 2:
            op.on_kill()  # what Airflow's task runner calls on SIGTERM, before the task's exception
            raise RuntimeError("terminated")
        return Batch(last_id=f"id-{cursor.batch_number + 1}", records=1, done=cursor.batch_number == 2)

    op = OxiflowStepOperator(task_id="only", pipeline=pipeline, partition="only", python_callable=killed_on_second_batch)
    with pytest.raises(RuntimeError, match="terminated"):
        op.execute(fake_context("only"))
    (part,) = oxiflow.State().view(pipeline)["steps"][0]["partitions"]
    assert (part["batch_number"], part["last_processed_id"], part["total_errors"]) == (1, "id-1", 0)
    assert part["readiness"]["state"] == "ready"  # released: the next try claims at once, no wait for the ttl
    assert op.execute(fake_context("only", 2))["records"] == 2
    assert seen == [None, "id-1", "id-1", "id-2"]


# --- the sensor --------------------------------------------------------------------------------


def test_sensor_pokes_until_the_step_completes_and_fails_fast_on_a_failed_step(airflow_env: dict[str, str]) -> None:
    from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

    from oxiflow.airflow import OxiflowStepSensor, OxiflowStepTrigger

    pipeline = f"sense-{uuid.uuid4().hex[:8]}"
    state = oxiflow.State()
    state.create_pipeline(pipeline, steps=["a", "b"])
    on_a = OxiflowStepSensor(task_id="wait_a", pipeline=pipeline, step="a", mode="reschedule", poke_interval=5)
    on_all = OxiflowStepSensor(task_id="wait_all", pipeline=pipeline, deferrable=True, poke_interval=5)
    ctx = fake_context("wait")

    assert on_a.poke(ctx) is False
    with pytest.raises(TaskDeferred) as deferred:
        on_all.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, OxiflowStepTrigger) and trigger.check(state) is None

    with state.claim(pipeline, "a", worker="w1") as lease:
        lease.checkpoint(last_id="a-7", records=7)
        lease.complete()
    assert on_a.poke(ctx) is True
    assert trigger.check(state) is None  # b is still to run

    with state.claim(pipeline, "b", worker="w1") as lease:
        lease.fail("bad input", retryable=False)
    with pytest.raises(AirflowFailException, match="bad input"):
        OxiflowStepSensor(task_id="wait_b", pipeline=pipeline, step="b").poke(ctx)
    payload = trigger.check(state)
    assert payload is not None and payload["status"] == "failed" and "bad input" in payload["message"]
    with pytest.raises(AirflowFailException, match="bad input"):
        on_all.execute_complete(ctx, payload)


# --- the state-store backend ----------------------------------------------------------------


def test_state_store_backend_is_what_airflow_resolves(airflow_env: dict[str, str]) -> None:
    from airflow.state import AssetScope, TaskScope, get_state_backend

    from oxiflow.airflow.state_store import OxiflowStateStoreBackend, decode_segment, encode_segment

    backend = get_state_backend()
    assert isinstance(backend, OxiflowStateStoreBackend)
    assert backend.prefix == "airflow-state"

    task = TaskScope(dag_id="d.1", run_id="manual__2026-01-01T00:00:00+00:00", task_id="t/x", map_index=0)
    other_map = TaskScope(dag_id="d.1", run_id=task.run_id, task_id="t/x", map_index=1)
    asset = AssetScope(asset_id=42)
    assert backend.get(task, "k") is None
    backend.set(task, "k", '{"a": 1}')
    backend.set(task, "k2", "[1, 2]")
    backend.set(other_map, "k", '"other"')
    backend.set(asset, "watermark", '"2026-01-01"')
    assert backend.get(task, "k") == '{"a": 1}'
    backend.set(task, "k", '{"a": 2}')
    assert (backend.get(task, "k"), backend.revision(task, "k")) == ('{"a": 2}', 2)
    assert asyncio.run(backend.aget(asset, "watermark")) == '"2026-01-01"'

    key = backend.object_key(task, "k")
    assert key.startswith("airflow-state/task/") and ".." not in key and "//" not in key
    for odd in ("manual__2026-01-01T00:00:00+00:00", "a/b", "..", ".x", "ünï", "x.y", "_5F"):
        encoded = encode_segment(odd)
        assert decode_segment(encoded) == odd and not encoded.startswith(".") and ".." not in encoded
    long_a, long_b = encode_segment("d" * 300), encode_segment("d" * 299 + "e")
    assert long_a != long_b and len(long_a) <= 255
    backend.set(TaskScope(dag_id="d" * 250, run_id="r" * 250, task_id="t" * 250), "k" * 250, "1")

    backend.delete(task, "k2")
    backend.delete(task, "never-set")  # no-op
    assert backend.get(task, "k2") is None
    backend.clear(task)  # this map index only
    assert (backend.get(task, "k"), backend.get(other_map, "k")) == (None, '"other"')
    backend.set(task, "k", "1")
    backend.clear(task, all_map_indices=True)
    assert (backend.get(task, "k"), backend.get(other_map, "k")) == (None, None)
    assert backend.get(asset, "watermark") == '"2026-01-01"'
    asyncio.run(backend.aclear(asset))
    assert backend.get(asset, "watermark") is None

    # cleanup() deletes what expired, and only that
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    backend.set(task, "old", "1", expires_at=now - timedelta(seconds=1))
    backend.set(task, "fresh", "2", expires_at=now + timedelta(hours=1))
    backend.set(task, "forever", "3")
    backend.cleanup()
    assert [backend.get(task, k) for k in ("old", "fresh", "forever")] == [None, "2", "3"]


WRITER = textwrap.dedent(
    """
    import sys
    from airflow.state import TaskScope
    from oxiflow.airflow.state_store import OxiflowStateStoreBackend

    n, name = int(sys.argv[1]), sys.argv[2]
    backend = OxiflowStateStoreBackend()
    scope = TaskScope(dag_id="race", run_id="r1", task_id="count")
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    for i in range(n):
        backend.update(scope, "counter", lambda old: str(int(old or "0") + 1))
        backend.set(scope, "last", f'"{name}-{i}"')
    print("done", backend.conflicts, flush=True)
    """
)


def test_state_store_two_processes_lose_no_update(airflow_env: dict[str, str], tmp_path: Path) -> None:
    """Two writer processes started together, each N times: update() a counter, set() another key.

    The counter ends at 2N (no increment lost), and each key's revision at 2N (every write applied once).
    """
    from airflow.state import TaskScope

    from oxiflow.airflow.state_store import OxiflowStateStoreBackend

    n = 30
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "AIRFLOW__OXIFLOW__STATE_STORE_PREFIX": f"race-{uuid.uuid4().hex[:8]}"}
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(n), name], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        for name in ("a", "b")
    ]
    for w in writers:
        assert w.stdout is not None and w.stdout.readline() == "ready\n"
    for w in writers:
        assert w.stdin is not None
        w.stdin.write("go\n")
        w.stdin.flush()
    conflicts = 0
    for w in writers:
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0 and out.startswith("done "), out
        conflicts += int(out.split()[1])
    print(f"{4 * n} writes, {conflicts} conflicts retried")

    backend = OxiflowStateStoreBackend(oxiflow.State().store, env["AIRFLOW__OXIFLOW__STATE_STORE_PREFIX"])
    scope = TaskScope(dag_id="race", run_id="r1", task_id="count")
    assert backend.get(scope, "counter") == str(2 * n)
    assert backend.revision(scope, "counter") == 2 * n
    # every set() applied once, one after the other; the value is one writer's last
    assert backend.revision(scope, "last") == 2 * n
    assert backend.get(scope, "last") in (f'"a-{n - 1}"', f'"b-{n - 1}"')


# --- the provider entry ---------------------------------------------------------------------


def test_provider_info_matches_airflow_schema(airflow_env: dict[str, str]) -> None:
    import jsonschema  # type: ignore[import-untyped]

    import airflow

    from oxiflow.airflow import get_provider_info

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    from airflow.providers_manager import ProvidersManager

    found = ProvidersManager().providers["oxiflow"]  # type: ignore[no-untyped-call]  # through the package's entry point
    assert found.data["package-name"] == "oxiflow" and found.data["config"] == info["config"]
    for group in ("operators", "sensors", "triggers"):
        for module in info[group][0]["python-modules"]:
            importlib.import_module(module)
