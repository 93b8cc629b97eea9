"""``OxiflowStepTrigger``: poll a pipeline's view in the triggerer until a step is done or claimable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from airflow.triggers.base import BaseTrigger, TriggerEvent

import oxiflow
from oxiflow.airflow.progress import make_state, partition_readiness, progress

WaitFor = Literal["completed", "claimable"]


class OxiflowStepTrigger(BaseTrigger):
    """Fires once ``target`` of ``pipeline`` is completed (``wait_for="completed"``) or claimable.

    ``target`` is a step, ``step@shard``, or ``None`` for the whole pipeline
    (``claimable`` needs one partition). Each poll is one ``State.view``,
    run in a thread. The event's
    payload is ``{"status": "completed" | "claimable" | "failed", "target",
    "message"}``; ``failed`` when the target failed for good or is blocked
    by a failure upstream, so a sensor does not wait for what cannot happen.
    A paused partition keeps the trigger waiting until it is resumed.
    """

    def __init__(
        self,
        *,
        pipeline: str,
        target: str | None,
        wait_for: WaitFor = "completed",
        state_url: str | None = None,
        state_options: Mapping[str, Any] | None = None,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if wait_for not in ("completed", "claimable"):
            raise ValueError(f"wait_for must be 'completed' or 'claimable', not {wait_for!r}")
        if wait_for == "claimable" and target is None:
            raise ValueError("wait_for='claimable' needs a target partition")
        self.pipeline = pipeline
        self.target = target
        self.wait_for: WaitFor = wait_for
        self.state_url = state_url
        self.state_options = dict(state_options or {})
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pipeline": self.pipeline,
                "target": self.target,
                "wait_for": self.wait_for,
                "state_url": self.state_url,
                "state_options": self.state_options,
                "poll_interval": self.poll_interval,
            },
        )

    def check(self, state: oxiflow.State) -> dict[str, Any] | None:
        """One poll: the event payload, or ``None`` to keep waiting."""
        view = state.view(self.pipeline)
        if self.wait_for == "claimable":
            assert self.target is not None
            status, readiness = partition_readiness(view, self.target)
            if status == "completed":
                return {"status": "completed", "target": self.target, "message": None}
            if readiness in ("failed", "blocked"):
                return {
                    "status": "failed",
                    "target": self.target,
                    "message": f"{self.pipeline} {self.target} cannot run in this run ({readiness})",
                }
            if readiness == "ready":
                return {"status": "claimable", "target": self.target, "message": None}
            return None
        where = progress(view, self.target)
        if where.done:
            return {"status": "completed", "target": where.target, "message": None}
        if where.failed:
            return {
                "status": "failed",
                "target": where.target,
                "message": f"{self.pipeline} {where.target} failed: {where.error}",
            }
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state = await asyncio.to_thread(make_state, self.state_url, self.state_options)
        while True:
            payload = await asyncio.to_thread(self.check, state)
            if payload is not None:
                yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
                return
            await asyncio.sleep(self.poll_interval)
