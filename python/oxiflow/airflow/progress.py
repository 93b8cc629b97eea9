"""Reading a pipeline view (``State.view``, the ``state show --json`` dict): no Airflow import.

The operator, the sensor, the triggers and the Dagster sensor ask the same
questions of a view: is this step (or partition, or the whole pipeline)
completed, failed for good, claimable now?
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import oxiflow


def status_name(status: Any) -> str:
    """``"pending"``, ``"running"``, ``"completed"``, ``"failed"``, …: a view status as one word.

    Partition statuses are ``"pending"`` or ``{"completed": {...}}``; step
    and pipeline statuses are words already.
    """
    if isinstance(status, str):
        return status
    if isinstance(status, Mapping) and len(status) == 1:
        return str(next(iter(status)))
    raise oxiflow.Error(f"unexpected status in the view: {status!r}")


def make_state(url: str | None, options: Mapping[str, Any] | None) -> oxiflow.State:
    """``oxiflow.State(url, **options)``; no URL reads ``.oxiflow/config.yaml`` and ``OXIFLOW_*``."""
    return oxiflow.State(url, **dict(options or {}))


@dataclass(frozen=True)
class Progress:
    """Where a step, a partition or a whole pipeline stands in one view."""

    target: str
    """``step``, ``step@shard``, or the pipeline id when the whole pipeline was asked."""
    status: str
    """``completed``, ``failed`` (for good), ``running``, ``pending``, ``paused``, …"""
    readiness: str | None
    """For one partition: the scheduler's word (``ready``, ``held``, ``waiting``, …)."""
    completed: int
    """Partitions completed in this run."""
    total: int
    records: int
    error: str | None
    """The newest recorded error of the target, if any."""

    @property
    def done(self) -> bool:
        return self.status == "completed"

    @property
    def failed(self) -> bool:
        """Failed for good, or blocked by a failure upstream: it cannot finish in this run."""
        return self.status == "failed" or self.readiness in ("failed", "blocked")


def _newest_error(view: Mapping[str, Any], step: str | None, partition: str | None) -> str | None:
    for err in view.get("recent_errors") or []:
        if step is not None and err.get("step_id") != step:
            continue
        if partition is not None and err.get("partition") != partition:
            continue
        return str(err.get("message"))
    return None


def progress(view: Mapping[str, Any], target: str | None = None) -> Progress:
    """Where ``target`` (a step, ``step@shard``, or ``None`` for the pipeline) stands in ``view``.

    Raises ``oxiflow.NotFound`` naming the steps when the view has no such step or shard.
    """
    pipeline = str(view["pipeline_id"])
    if target is None:
        return Progress(
            pipeline,
            status_name(view["status"]),
            None,
            sum(int(s["completed"]) for s in view["steps"]),
            sum(int(s["total"]) for s in view["steps"]),
            int(view.get("records_processed", 0)),
            _newest_error(view, None, None),
        )
    step_id, _, shard = target.partition("@")
    for step in view["steps"]:
        if step["step_id"] != step_id:
            continue
        if not shard:
            return Progress(
                target,
                status_name(step["status"]),
                None,
                int(step["completed"]),
                int(step["total"]),
                int(step.get("records_processed", 0)),
                _newest_error(view, step_id, None),
            )
        for part in step["partitions"]:
            if part["partition"] == target:
                status = status_name(part["status"])
                current = bool(part.get("current_run", True))
                if not current:
                    status = "pending"
                readiness = part.get("readiness")
                return Progress(
                    target,
                    status,
                    status_name(readiness["state"]) if isinstance(readiness, Mapping) else None,
                    1 if status == "completed" else 0,
                    1,
                    int(part.get("records_processed", 0)),
                    _newest_error(view, step_id, target),
                )
        shards = ", ".join(str(p["partition"]) for p in step["partitions"])
        raise oxiflow.NotFound(f"pipeline {pipeline!r} step {step_id!r} has no partition {target!r} (it has: {shards})")
    steps = ", ".join(str(s["step_id"]) for s in view["steps"])
    raise oxiflow.NotFound(f"pipeline {pipeline!r} has no step {step_id!r} (it has: {steps})")


def partition_readiness(view: Mapping[str, Any], partition: str) -> tuple[str, str]:
    """``(status, readiness)`` of one partition (``step`` for an unsharded step)."""
    step_id, _, _ = partition.partition("@")
    for step in view["steps"]:
        if step["step_id"] != step_id:
            continue
        for part in step["partitions"]:
            if part["partition"] == partition:
                readiness = part.get("readiness")
                word = status_name(readiness["state"]) if isinstance(readiness, Mapping) else "unknown"
                status = status_name(part["status"]) if part.get("current_run", True) else "pending"
                return status, word
    raise oxiflow.NotFound(f"pipeline {view.get('pipeline_id')!r} has no partition {partition!r}")


def ensure_pipeline(state: oxiflow.State, pipeline: str, steps: Any) -> bool:
    """Create ``pipeline`` with ``steps`` unless it exists; True when this call created it.

    An existing pipeline is left as it is (its plan is not compared).
    """
    try:
        state.view(pipeline)
        return False
    except oxiflow.NotFound:
        pass
    try:
        state.create_pipeline(pipeline, steps=steps)
        return True
    except oxiflow.Conflict:
        return False  # created by someone else meanwhile
