"""``OxiflowStepSensor``: wait until a step, a shard or a whole pipeline is completed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowFailException

import oxiflow
from oxiflow.airflow.progress import make_state, progress
from oxiflow.airflow.triggers import OxiflowStepTrigger


class OxiflowStepSensor(BaseSensorOperator):
    """Succeeds once ``step`` of ``pipeline`` is completed in its current run.

    ``step`` is a step id (every shard completed), ``step@shard`` (that
    shard), or ``None`` (the whole pipeline). A target that failed for good
    or is blocked by a failure upstream fails the sensor at once instead of
    waiting out its timeout. Each poke is one ``State.view``.

    ``mode="reschedule"`` frees the worker slot between pokes;
    ``deferrable=True`` hands the waiting to the triggerer
    (:class:`OxiflowStepTrigger`, polling every ``poke_interval``).
    The result (XCom) is ``{pipeline, target, completed, total, records}``.
    """

    template_fields: Sequence[str] = ("pipeline", "step", "state_url")
    ui_color = "#e4f0d8"

    def __init__(
        self,
        *,
        pipeline: str,
        step: str | None = None,
        state_url: str | None = None,
        state_options: Mapping[str, Any] | None = None,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.step = step
        self.state_url = state_url
        self.state_options = dict(state_options or {})
        self.deferrable = deferrable

    def _result(self, state: oxiflow.State) -> dict[str, Any] | None:
        where = progress(state.view(self.pipeline), self.step)
        if where.failed:
            raise AirflowFailException(f"{self.pipeline} {where.target} cannot complete in this run: {where.error}")
        if not where.done:
            self.log.info("%s %s: %s, %d of %d partitions completed", self.pipeline, where.target, where.status, where.completed, where.total)
            return None
        return {
            "pipeline": self.pipeline,
            "target": where.target,
            "completed": where.completed,
            "total": where.total,
            "records": where.records,
        }

    def poke(self, context: Context) -> bool:
        return self._result(make_state(self.state_url, self.state_options)) is not None

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._result(make_state(self.state_url, self.state_options))
        result = self._result(make_state(self.state_url, self.state_options))
        if result is not None:
            return result
        self.defer(
            trigger=OxiflowStepTrigger(
                pipeline=self.pipeline,
                target=self.step,
                wait_for="completed",
                state_url=self.state_url,
                state_options=self.state_options,
                poll_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Back from the trigger."""
        if event is None or event.get("status") != "completed":
            raise AirflowFailException(str((event or {}).get("message") or "the oxiflow trigger ended without an event"))
        return self._result(make_state(self.state_url, self.state_options))
