"""``OxiflowStepOperator``: run one step (or shard) of an oxiflow pipeline as an Airflow task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

import oxiflow
from oxiflow.airflow.batches import Batch, Cursor, StepResult, run_batches, worker_id
from oxiflow.airflow.progress import ensure_pipeline, make_state, partition_readiness
from oxiflow.airflow.triggers import OxiflowStepTrigger

BatchCallable = Callable[[Cursor, Context], "Batch | None"]
"""``fn(cursor, context) -> Batch | None``: one batch from ``cursor.bookmark``; ``None`` when done."""


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def airflow_worker_id(context: Context) -> str:
    """A worker id for one try of one task instance: ``airflow-<dag>-<task>[-m<map_index>]-try<n>-<hash of the run id>``.

    Every try gets its own id: an earlier try that Airflow lost track of (a
    zombie) still holds its own lease and is fenced by the new claim.
    """
    ti = context["ti"]
    mapped = [f"m{ti.map_index}"] if ti.map_index is not None and ti.map_index >= 0 else []
    return worker_id("airflow", ti.dag_id, ti.task_id, *mapped, f"try{ti.try_number}", salt=ti.run_id)


class OxiflowStepOperator(BaseOperator):
    """Claim ``partition`` of ``pipeline``, run ``python_callable`` once per batch, checkpoint each, complete.

    ``python_callable(cursor, context)`` gets a :class:`~oxiflow.airflow.Cursor`
    (``cursor.bookmark``: the ``last_id`` of the last checkpointed batch) and
    returns a :class:`~oxiflow.airflow.Batch` (the new ``last_id`` and this
    batch's counts; ``done=True`` for the last one) or ``None`` when there is
    nothing left. Each batch is checkpointed before the next one runs. When
    it raises, the error is recorded on the partition, the lease released,
    and the task fails; Airflow's retry claims again and resumes after the
    last checkpointed batch.

    A partition someone else holds, paused, or whose upstream steps are
    unfinished, does not fail the task: it is rescheduled every ``wait_interval``
    (``UP_FOR_RESCHEDULE``, the worker slot freed) or, with
    ``deferrable=True``, deferred to a trigger that polls the pipeline until
    the partition is claimable. A partition already completed in this run
    succeeds at once with ``skipped: true`` in the result (an Airflow
    re-run does not redo it; ``oxiflow state reset`` does). A partition
    failed for good (not retryable, or out of attempts) fails the task
    without retries.

    The result (XCom) is ``{pipeline, partition, batches, records, bookmark,
    completed, skipped}`` for this try.

    ``create_with`` (the pipeline's steps, as ``State.create_pipeline``
    takes them) creates the pipeline when it does not exist yet.

    Store settings: ``state_url`` and ``state_options`` (passed to
    ``oxiflow.State``); without them, ``.oxiflow/config.yaml`` and
    ``OXIFLOW_*`` as for the CLI.
    """

    template_fields: Sequence[str] = ("pipeline", "partition", "state_url")
    ui_color = "#d8f0e4"

    def __init__(
        self,
        *,
        pipeline: str,
        partition: str,
        python_callable: BatchCallable,
        state_url: str | None = None,
        state_options: Mapping[str, Any] | None = None,
        worker: str | None = None,
        ttl: float | None = None,
        wait_interval: timedelta | float = 30.0,
        deferrable: bool = False,
        max_batches: int | None = None,
        create_with: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not callable(python_callable):
            raise TypeError("python_callable must be callable: fn(cursor, context) -> Batch | None")
        self.pipeline = pipeline
        self.partition = partition
        self.python_callable = python_callable
        self.state_url = state_url
        self.state_options = dict(state_options or {})
        self.worker = worker
        self.ttl = ttl
        self.wait_interval = _seconds(wait_interval)
        self.deferrable = deferrable
        self.max_batches = max_batches
        self.create_with = list(create_with) if create_with is not None else None
        self._lease: oxiflow.Lease | None = None

    def _state(self) -> oxiflow.State:
        return make_state(self.state_url, self.state_options)

    def execute(self, context: Context) -> dict[str, Any]:
        state = self._state()
        worker = self.worker or airflow_worker_id(context)
        try:
            try:
                lease = state.claim(self.pipeline, self.partition, worker=worker, ttl=self.ttl)
            except oxiflow.NotFound:
                if self.create_with is None:
                    raise
                if ensure_pipeline(state, self.pipeline, self.create_with):
                    self.log.info("created pipeline %s", self.pipeline)
                lease = state.claim(self.pipeline, self.partition, worker=worker, ttl=self.ttl)
        except (oxiflow.LeaseHeld, oxiflow.NotReady, oxiflow.Conflict, oxiflow.InvalidInput) as err:
            return self._not_claimed(state, err)
        self.log.info(
            "claimed %s %s as %s: resuming after %r (batch %d)",
            self.pipeline,
            self.partition,
            worker,
            lease.bookmark,
            lease.batch_number,
        )
        self._lease = lease
        try:
            with lease:
                result = run_batches(
                    lease,
                    self.pipeline,
                    self.partition,
                    lambda cursor: self.python_callable(cursor, context),
                    max_batches=self.max_batches,
                )
        finally:
            self._lease = None
        self.log.info("%s %s: %d batches, %d records this try", self.pipeline, self.partition, result.batches, result.records)
        return result.as_dict()

    def _not_claimed(self, state: oxiflow.State, err: oxiflow.Error) -> dict[str, Any]:
        """The claim was refused: done already, failed for good, or wait and claim again."""
        status, readiness = partition_readiness(state.view(self.pipeline), self.partition)
        if status == "completed":
            self.log.info("%s %s is already completed in this run", self.pipeline, self.partition)
            return StepResult(self.pipeline, self.partition, 0, 0, None, True, skipped=True).as_dict()
        if readiness in ("failed", "blocked"):
            raise AirflowFailException(f"{self.pipeline} {self.partition} cannot run in this run ({readiness}): {err}")
        if not isinstance(err, (oxiflow.LeaseHeld, oxiflow.NotReady)) and readiness != "paused":
            raise err
        self.log.info("%s %s is not claimable now (%s): %s", self.pipeline, self.partition, readiness, err)
        if self.deferrable:
            self.defer(
                trigger=OxiflowStepTrigger(
                    pipeline=self.pipeline,
                    target=self.partition,
                    wait_for="claimable",
                    state_url=self.state_url,
                    state_options=self.state_options,
                    poll_interval=self.wait_interval,
                ),
                method_name="execute_complete",
            )
        until = datetime.now(timezone.utc) + timedelta(seconds=self.wait_interval)
        raise AirflowRescheduleException(until)  # type: ignore[no-untyped-call]

    def on_kill(self) -> None:
        """Airflow is killing the task (a timeout, a mark-failed): give the partition back at once.

        Its bookmark stays at the last checkpoint; without this (SIGKILL) the
        lease expires after its ttl and the next try waits until then.
        """
        lease = self._lease
        if lease is not None and lease.active:
            try:
                lease.release()
            except oxiflow.Error as err:
                self.log.warning("could not release %s %s: %s", self.pipeline, self.partition, err)

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Back from the trigger: the partition is claimable (or done, or failed for good)."""
        if event is not None and event.get("status") == "failed":
            raise AirflowFailException(str(event.get("message")))
        return self.execute(context)
