"""extract → transform → load over the oxiflow pipeline ``orders``: one Airflow task per step.

Each task is an ``OxiflowStepOperator``: it claims its step, runs its callable
once per batch of 10 orders from the step's bookmark, checkpoints each batch
and completes the step. Every batch writes one file named by its batch
number, so a batch that ran again after a crash overwrites its own output:
a retried task resumes from its bookmark and the result is exact.

Run it (state in ``.oxiflow/state`` unless ``OXIFLOW_BACKEND`` or
``.oxiflow/config.yaml`` say otherwise; output under ``OXIFLOW_EXAMPLE_DATA``)::

    AIRFLOW__CORE__DAGS_FOLDER=examples/airflow airflow dags test oxiflow_orders

Params: ``pipeline`` (created on first use), ``fail_transform_at_batch``
(the first try of ``transform`` crashes after writing that batch, before
its checkpoint: 0 never).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Context

from oxiflow.airflow import Batch, Cursor, OxiflowStepOperator

ORDERS = 100
BATCH_SIZE = 10
STEPS = ["extract", "transform", "load"]  # a chain: each step waits for the one before
DATA = Path(os.environ.get("OXIFLOW_EXAMPLE_DATA", "/tmp/oxiflow-example"))


def _dir(context: Context, step: str) -> Path:
    return DATA / str(context["params"]["pipeline"]) / step


def _write_batch(context: Context, cursor: Cursor, rows: list[dict[str, Any]]) -> Batch | None:
    """One output file per batch number: a batch run again overwrites its own file."""
    if not rows:
        return None
    out = _dir(context, cursor.step) / f"batch-{cursor.batch_number + 1:05d}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Batch(last_id=str(rows[-1]["id"]), records=len(rows), bytes=out.stat().st_size)


def _read_after(context: Context, step: str, bookmark: str | None) -> list[dict[str, Any]]:
    """The next rows of an upstream step's output after ``bookmark`` (ids sort in order)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(_dir(context, step).glob("batch-*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return [r for r in rows if bookmark is None or r["id"] > bookmark][:BATCH_SIZE]


def extract(cursor: Cursor, context: Context) -> Batch | None:
    start = int(cursor.bookmark.split("-")[1]) if cursor.bookmark else 0
    ids = range(start + 1, min(start + BATCH_SIZE, ORDERS) + 1)
    return _write_batch(context, cursor, [{"id": f"order-{i:04d}", "cents": i * 125} for i in ids])


def transform(cursor: Cursor, context: Context) -> Batch | None:
    rows = [{**r, "eur": r["cents"] / 100} for r in _read_after(context, "extract", cursor.bookmark)]
    batch = _write_batch(context, cursor, rows)
    fail_at = int(context["params"]["fail_transform_at_batch"])
    if fail_at and cursor.batch_number + 1 == fail_at and context["ti"].try_number == 1:
        raise RuntimeError(f"simulated crash after writing batch {fail_at}, before its checkpoint")
    return batch


def load(cursor: Cursor, context: Context) -> Batch | None:
    batch = _write_batch(context, cursor, _read_after(context, "transform", cursor.bookmark))
    if batch is None:  # all loaded: note it in Airflow's task state (OxiflowStateStoreBackend, if configured)
        context["task_state_store"].set("loaded", {"through": cursor.bookmark, "batches": cursor.batch_number})
    return batch


with DAG(
    dag_id="oxiflow_orders",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"pipeline": "orders", "fail_transform_at_batch": 0},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=0)},
) as dag:
    common: dict[str, Any] = {"pipeline": "{{ params.pipeline }}", "create_with": STEPS, "wait_interval": 5}
    (
        OxiflowStepOperator(task_id="extract", partition="extract", python_callable=extract, **common)
        >> OxiflowStepOperator(task_id="transform", partition="transform", python_callable=transform, **common)
        >> OxiflowStepOperator(task_id="load", partition="load", python_callable=load, **common)
    )
