"""oxiflow state for Dagster: a resource that runs a step batch by batch, and a sensor per completed step.

* :class:`OxiflowResource` (``ConfigurableResource``): ``run_step(pipeline,
  partition, batch)`` claims the partition, calls ``batch(cursor)`` until it
  returns ``None``, checkpointing each :class:`Batch`; a failed run's re-run
  resumes after the last checkpoint.
* :func:`oxiflow_step_sensor`: a sensor that requests one run per completed
  step (``run_key`` from the pipeline, its run id, the step and when it
  completed), its cursor advanced with the requests it returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Dict, Optional

from dagster import (
    ConfigurableResource,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from pydantic import Field

import oxiflow
from oxiflow.airflow.batches import Batch, Cursor, StepResult, run_batches, worker_id
from oxiflow.airflow.progress import ensure_pipeline, status_name

__all__ = ["Batch", "Cursor", "OxiflowResource", "StepResult", "completed_steps", "oxiflow_step_sensor"]


class OxiflowResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the state lives: ``url`` and ``options`` for ``oxiflow.State``.

    No ``url`` reads ``.oxiflow/config.yaml`` and ``OXIFLOW_*`` as the CLI does;
    ``endpoint``, ``region`` and ``allow_http`` override those settings, and
    ``options`` passes other ``State`` options (durations as text: ``{"lease_ttl": "2m"}``).
    """

    # typing.Optional/Dict: pydantic evaluates these annotations at run time
    url: Optional[str] = None
    endpoint: Optional[str] = None
    region: Optional[str] = None
    allow_http: Optional[bool] = None
    options: Dict[str, str] = Field(default_factory=dict)
    ttl: Optional[float] = None
    """Lease ttl in seconds for claims (``None``: the configured one)."""

    def state(self) -> oxiflow.State:
        """An ``oxiflow.State`` for these settings."""
        options: dict[str, Any] = dict(self.options)
        for name in ("endpoint", "region", "allow_http"):
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return oxiflow.State(self.url, **options)

    def view(self, pipeline: str) -> dict[str, Any]:
        """The pipeline's aggregated view (``oxiflow state show --json``)."""
        return self.state().view(pipeline)

    def run_step(
        self,
        pipeline: str,
        partition: str,
        batch: Callable[[Cursor], Batch | None],
        *,
        worker: str | None = None,
        run_id: str | None = None,
        create_with: Sequence[Any] | None = None,
    ) -> StepResult:
        """Claim ``partition``, run ``batch`` until it returns ``None`` (or a ``done`` batch), complete.

        Each batch is checkpointed before the next one runs; an exception
        from ``batch`` records the error on the partition, releases the
        lease and propagates (the run fails), and the next run resumes after
        the last checkpoint. A partition completed already in the pipeline's
        run is not run again (``skipped=True`` in the result). A partition
        held by another worker or waiting on upstream steps raises
        ``oxiflow.LeaseHeld`` / ``oxiflow.NotReady``: give the asset a
        ``RetryPolicy`` to wait it out.

        ``worker`` defaults to one derived from ``run_id`` (pass
        ``context.run_id``) and the partition. ``create_with`` (the steps)
        creates the pipeline when it does not exist.
        """
        state = self.state()
        worker = worker or worker_id("dagster", pipeline, partition, salt=run_id or "")
        try:
            try:
                lease = state.claim(pipeline, partition, worker=worker, ttl=self.ttl)
            except oxiflow.NotFound:
                if create_with is None:
                    raise
                ensure_pipeline(state, pipeline, list(create_with))
                lease = state.claim(pipeline, partition, worker=worker, ttl=self.ttl)
        except (oxiflow.Conflict, oxiflow.InvalidInput, oxiflow.NotReady):
            if _partition_status(state.view(pipeline), partition) == "completed":
                return StepResult(pipeline, partition, 0, 0, None, True, skipped=True)
            raise
        with lease:
            result = run_batches(lease, pipeline, partition, batch)
        return result


def _partition_status(view: Mapping[str, Any], partition: str) -> str | None:
    step_id = partition.split("@", 1)[0]
    for step in view["steps"]:
        if step["step_id"] == step_id:
            for part in step["partitions"]:
                if part["partition"] == partition:
                    return "pending" if not part.get("current_run", True) else status_name(part["status"])
    return None


def completed_steps(view: Mapping[str, Any]) -> dict[str, str]:
    """``{step_id: run_key}`` for each step completed in the view's run.

    The run key is ``<pipeline>:<run_id>:<step>:<completed_at>``, the newest
    completion time of the step's partitions (Unix ms): the same for every
    read of one completion, a new one after a reset or a new run completes
    the step again.
    """
    pipeline, run_id = view["pipeline_id"], view["run_id"]
    out: dict[str, str] = {}
    for step in view["steps"]:
        if status_name(step["status"]) != "completed":
            continue
        finished = 0
        for part in step["partitions"]:
            status = part["status"]
            if isinstance(status, Mapping) and "completed" in status:
                finished = max(finished, int(status["completed"].get("completed_at") or 0))
        out[str(step["step_id"])] = f"{pipeline}:{run_id}:{step['step_id']}:{finished}"
    return out


def oxiflow_step_sensor(
    *,
    name: str,
    pipeline: str,
    steps: Sequence[str] | None = None,
    resource_key: str = "oxiflow",
    job_name: str | None = None,
    target: Any = None,
    run_config: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None,
    minimum_interval_seconds: int = 30,
) -> SensorDefinition:
    """A sensor requesting one run per step of ``pipeline`` that completes (``steps``: only these).

    Each tick reads the pipeline's view once. A step completed in the
    pipeline's run whose run key (:func:`completed_steps`) the cursor has
    not seen yet gets one ``RunRequest`` (tags ``oxiflow/pipeline``,
    ``oxiflow/step``, ``oxiflow/run_id``; ``run_config(step, view)`` when
    given), and the cursor — ``{step: run_key}`` as JSON — is returned with
    those requests, in the same ``SensorResult``: it advances only together
    with them. Dagster also skips a run key it has launched before.
    A pipeline that does not exist yet is skipped with a message.
    """
    wanted = set(steps) if steps is not None else None

    @sensor(
        name=name,
        job_name=job_name,
        target=target,
        minimum_interval_seconds=minimum_interval_seconds,
        required_resource_keys={resource_key},
    )
    def _sensor(context: SensorEvaluationContext, **resources: Any) -> SensorResult:
        # Dagster passes the required resources as keyword arguments
        resource = resources.get(resource_key) or getattr(context.resources, resource_key)
        if not isinstance(resource, OxiflowResource):
            raise TypeError(f"resource {resource_key!r} is a {type(resource).__name__}, not an OxiflowResource")
        seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        try:
            view = resource.view(pipeline)
        except oxiflow.NotFound as err:
            return SensorResult(skip_reason=f"pipeline {pipeline!r} does not exist yet: {err}")
        requests = []
        for step, run_key in completed_steps(view).items():
            if (wanted is not None and step not in wanted) or seen.get(step) == run_key:
                continue
            requests.append(
                RunRequest(
                    run_key=run_key,
                    run_config=dict(run_config(step, view)) if run_config is not None else {},
                    tags={"oxiflow/pipeline": pipeline, "oxiflow/step": step, "oxiflow/run_id": str(view["run_id"])},
                )
            )
            seen[step] = run_key
        if not requests:
            return SensorResult(skip_reason=f"no newly completed step of {pipeline!r}", cursor=context.cursor)
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return _sensor
