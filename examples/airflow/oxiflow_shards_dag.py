"""A sharded oxiflow step as mapped Airflow tasks, deferrable, and a sensor on the whole pipeline.

``scan`` has four shards; each is one mapped ``OxiflowStepOperator`` task
(``partition="scan@<i>"``) reading its own key range, 25 ids per batch. A
shard another worker holds does not fail its task: with ``deferrable=True``
the task hands the wait to the triggerer (``OxiflowStepTrigger``) and takes
the shard over once it is free or its lease expired. ``scanned`` waits,
deferred too, until every step of the pipeline is completed.

    AIRFLOW__CORE__DAGS_FOLDER=examples/airflow airflow dags test oxiflow_shards
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Context

from oxiflow.airflow import Batch, Cursor, OxiflowStepOperator, OxiflowStepSensor

SHARDS = 4
PER_SHARD = 100
BATCH_SIZE = 25


def scan(cursor: Cursor, context: Context) -> Batch | None:
    """Shard ``i`` owns ids ``i*100+1 … i*100+100``; the bookmark is the last id scanned."""
    shard = cursor.shard or 0
    start = int(cursor.bookmark) if cursor.bookmark else shard * PER_SHARD
    end = min(start + BATCH_SIZE, (shard + 1) * PER_SHARD)
    if start >= end:
        return None
    return Batch(last_id=str(end), records=end - start)


with DAG(
    dag_id="oxiflow_shards",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"pipeline": "scan"},
) as dag:
    shards = OxiflowStepOperator.partial(
        task_id="scan",
        pipeline="{{ params.pipeline }}",
        python_callable=scan,
        create_with=[f"scan:{SHARDS}"],
        deferrable=True,
        wait_interval=1,
    ).expand(partition=[f"scan@{i}" for i in range(SHARDS)])
    shards >> OxiflowStepSensor(task_id="scanned", pipeline="{{ params.pipeline }}", deferrable=True, poke_interval=1)
