"""Two Dagster assets over the oxiflow pipeline ``orders-dagster``, and a sensor per completed step.

``orders_extract`` and ``orders_transform`` each run one oxiflow step
through ``OxiflowResource.run_step``: one batch of 10 orders at a time from
the step's bookmark, a checkpoint per batch. A run that fails half-way
(``fail_at_batch``: crash after writing that batch, before its checkpoint)
leaves the bookmark at the last checkpoint, and the next materialization
resumes there. Output: one file per batch number under
``OXIFLOW_EXAMPLE_DATA``, so a batch run again overwrites its own file.

``orders_step_sensor`` requests a ``orders_report`` run once per step that
completes. Run it::

    dagster dev -f examples/dagster/oxiflow_assets.py
"""

import json
import os
from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    Config,
    Definitions,
    MaterializeResult,
    OpExecutionContext,
    asset,
    define_asset_job,
    job,
    op,
)

from oxiflow.dagster import Batch, Cursor, OxiflowResource, oxiflow_step_sensor

ORDERS = 100
BATCH_SIZE = 10
STEPS = ["extract", "transform"]  # transform waits for extract
DATA = Path(os.environ.get("OXIFLOW_EXAMPLE_DATA", "/tmp/oxiflow-example"))


class StepConfig(Config):
    pipeline: str = "orders-dagster"
    fail_at_batch: int = 0
    """Crash after writing this batch, before its checkpoint (0: never)."""


def _write(pipeline: str, cursor: Cursor, rows: list[dict[str, Any]], fail_at: int) -> Batch | None:
    if not rows:
        return None
    out = DATA / pipeline / cursor.step / f"batch-{cursor.batch_number + 1:05d}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if fail_at and cursor.batch_number + 1 == fail_at:
        raise RuntimeError(f"simulated crash after writing batch {fail_at}, before its checkpoint")
    return Batch(last_id=str(rows[-1]["id"]), records=len(rows), bytes=out.stat().st_size)


def _read_after(pipeline: str, step: str, bookmark: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted((DATA / pipeline / step).glob("batch-*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines())
    return [r for r in rows if bookmark is None or r["id"] > bookmark][:BATCH_SIZE]


@asset
def orders_extract(context: AssetExecutionContext, config: StepConfig, oxiflow: OxiflowResource) -> MaterializeResult[None]:
    def batch(cursor: Cursor) -> Batch | None:
        start = int(cursor.bookmark.split("-")[1]) if cursor.bookmark else 0
        ids = range(start + 1, min(start + BATCH_SIZE, ORDERS) + 1)
        rows = [{"id": f"order-{i:04d}", "cents": i * 125} for i in ids]
        return _write(config.pipeline, cursor, rows, config.fail_at_batch)

    result = oxiflow.run_step(config.pipeline, "extract", batch, run_id=context.run.run_id, create_with=STEPS)
    return MaterializeResult(metadata=result.as_dict())


@asset(deps=[orders_extract])
def orders_transform(context: AssetExecutionContext, config: StepConfig, oxiflow: OxiflowResource) -> MaterializeResult[None]:
    def batch(cursor: Cursor) -> Batch | None:
        rows = [{**r, "eur": r["cents"] / 100} for r in _read_after(config.pipeline, "extract", cursor.bookmark)]
        return _write(config.pipeline, cursor, rows, config.fail_at_batch)

    result = oxiflow.run_step(config.pipeline, "transform", batch, run_id=context.run.run_id, create_with=STEPS)
    return MaterializeResult(metadata=result.as_dict())


@op
def report_step(context: OpExecutionContext) -> None:
    context.log.info("oxiflow step %s completed", context.run.tags.get("oxiflow/step"))


@job
def orders_report() -> None:
    report_step()


orders_step_sensor = oxiflow_step_sensor(name="orders_step_sensor", pipeline="orders-dagster", job_name="orders_report")

defs = Definitions(
    assets=[orders_extract, orders_transform],
    jobs=[define_asset_job("orders_assets", selection=[orders_extract, orders_transform]), orders_report],
    sensors=[orders_step_sensor],
    resources={"oxiflow": OxiflowResource()},
)
