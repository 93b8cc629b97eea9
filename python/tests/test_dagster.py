"""oxiflow.dagster on a real Dagster (``materialize``, ``build_sensor_context``) and S3 on moto."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import OXIFLOW_BIN, REPO, S3
from dagster import DagsterInstance, SensorResult, build_sensor_context, materialize

import oxiflow
from oxiflow.dagster import OxiflowResource, completed_steps, oxiflow_step_sensor

EXAMPLE = REPO / "examples" / "dagster" / "oxiflow_assets.py"


@pytest.fixture
def on_s3(s3: S3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, str]]:
    """oxiflow pointed at moto through ``OXIFLOW_*`` (a fresh prefix; the CLI reads the same), example output in ``tmp_path``."""
    env = {
        "OXIFLOW_BACKEND": f"s3://{s3.bucket}/py-dagster-{uuid.uuid4().hex[:12]}",
        "OXIFLOW_ENDPOINT": s3.endpoint,
        "OXIFLOW_ALLOW_HTTP": "true",
        "OXIFLOW_EXAMPLE_DATA": str(tmp_path / "data"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


def load_example() -> ModuleType:
    """The example as a module (its ``DATA`` read from ``OXIFLOW_EXAMPLE_DATA`` at import)."""
    spec = importlib.util.spec_from_file_location(f"oxiflow_assets_{uuid.uuid4().hex[:6]}", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Dagster resolves the assets' annotations through it
    spec.loader.exec_module(module)
    return module


def partition(view: dict[str, Any], step: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in view["steps"] if s["step_id"] == step)["partitions"][0]
    return found


def test_assets_resume_after_a_failed_run(on_s3: dict[str, str]) -> None:
    example = load_example()
    pipeline = f"orders-{uuid.uuid4().hex[:8]}"
    assets = [example.orders_extract, example.orders_transform]
    resources = {"oxiflow": OxiflowResource()}
    config = {"pipeline": pipeline}

    first = materialize(
        assets,
        resources=resources,
        run_config={"ops": {"orders_extract": {"config": config}, "orders_transform": {"config": {**config, "fail_at_batch": 4}}}},
        raise_on_error=False,
    )
    assert not first.success
    extracted = first.asset_materializations_for_node("orders_extract")
    assert [m.metadata["records"].value for m in extracted] == [100]
    view = oxiflow.State().view(pipeline)
    transform = partition(view, "transform")
    # batches 1-3 checkpointed; batch 4 written, then the crash before its checkpoint
    assert (transform["records_processed"], transform["batch_number"], transform["last_processed_id"]) == (30, 3, "order-0030")
    assert "completed" not in json.dumps(transform["status"])

    second = materialize(
        assets,
        resources=resources,
        run_config={"ops": {"orders_extract": {"config": config}, "orders_transform": {"config": config}}},
    )
    assert second.success
    (ran_again,) = second.asset_materializations_for_node("orders_transform")
    assert ran_again.metadata["batches"].value == 7 and ran_again.metadata["records"].value == 70
    (skipped,) = second.asset_materializations_for_node("orders_extract")
    assert skipped.metadata["skipped"].value is True and skipped.metadata["records"].value == 0

    view = oxiflow.State().view(pipeline)
    for step in ("extract", "transform"):
        part = partition(view, step)
        assert (part["records_processed"], part["batch_number"], part["last_processed_id"]) == (100, 10, "order-0100"), step
    assert partition(view, "transform")["total_errors"] == 1
    assert view["status"] == "completed"

    files = sorted((Path(on_s3["OXIFLOW_EXAMPLE_DATA"]) / pipeline / "transform").glob("batch-*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert len(files) == 10 and [r["id"] for r in rows] == [f"order-{i:04d}" for i in range(1, 101)]


def evaluate(sensor: Any, cursor: str | None, resource: OxiflowResource) -> SensorResult:
    with DagsterInstance.ephemeral() as instance:
        context = build_sensor_context(instance=instance, cursor=cursor, resources={"oxiflow": resource})
        result = sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_sensor_requests_one_run_per_completed_step(on_s3: dict[str, str]) -> None:
    pipeline = f"sensed-{uuid.uuid4().hex[:8]}"
    resource = OxiflowResource()
    sensor = oxiflow_step_sensor(name="steps", pipeline=pipeline, job_name="downstream")
    cursor: str | None = None
    requested: list[str] = []

    def tick() -> list[str]:
        nonlocal cursor
        result = evaluate(sensor, cursor, resource)
        keys = [str(r.run_key) for r in result.run_requests or []]
        requested.extend(keys)
        cursor = result.cursor
        return keys

    assert tick() == []  # no pipeline yet: skipped
    state = oxiflow.State()
    state.create_pipeline(pipeline, steps=["a:2", "b"])
    assert tick() == []

    with state.claim(pipeline, "a@0", worker="w") as lease:
        lease.checkpoint(last_id="1", records=1)
        lease.complete()
    assert tick() == []  # a@1 still to go
    with state.claim(pipeline, "a@1", worker="w") as lease:
        lease.complete()
    (a_key,) = tick()
    run_id = state.view(pipeline)["run_id"]
    assert a_key.startswith(f"{pipeline}:{run_id}:a:")
    assert tick() == [] and tick() == []

    with state.claim(pipeline, "b", worker="w") as lease:
        lease.complete()
    (b_key,) = tick()
    assert b_key.startswith(f"{pipeline}:{run_id}:b:")
    assert tick() == []
    assert requested == [a_key, b_key]
    assert json.loads(cursor or "{}") == {"a": a_key, "b": b_key}
    assert completed_steps(state.view(pipeline)) == {"a": a_key, "b": b_key}

    # an operator resets b (the CLI, as a separate process): one more request once it completes again
    reset = subprocess.run([str(OXIFLOW_BIN), "state", "reset", pipeline, "--step", "b", "--json"], capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    assert tick() == []
    with state.claim(pipeline, "b", worker="w") as lease:
        lease.complete()
    (b_again,) = tick()
    assert b_again != b_key and b_again.startswith(f"{pipeline}:{run_id}:b:")
    assert tick() == []
    assert requested == [a_key, b_key, b_again]

    # the request carries what the downstream job needs to know
    fresh = evaluate(oxiflow_step_sensor(name="steps_b", pipeline=pipeline, steps=["b"], job_name="downstream"), None, resource)
    (request,) = fresh.run_requests or []
    assert request.run_key == b_again
    assert request.tags["oxiflow/step"] == "b" and request.tags["oxiflow/run_id"] == run_id


def test_example_definitions_load(on_s3: dict[str, str]) -> None:
    example = load_example()
    from dagster import Definitions

    Definitions.validate_loadable(example.defs)
    assert example.orders_step_sensor.job_name == "orders_report"
    assert {a.key.to_user_string() for a in [example.orders_extract, example.orders_transform]} == {
        "orders_extract",
        "orders_transform",
    }
