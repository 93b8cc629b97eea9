"""The batch loop the orchestrator integrations share (no Airflow import).

A step's work is a callable run once per batch. It gets a :class:`Cursor`
(where to resume: the bookmark the last checkpoint stored) and returns a
:class:`Batch` (what it did: the new bookmark and its counts), or ``None``
when there is nothing left. Each batch is checkpointed before the next
one runs, so a task that fails half-way resumes after its last batch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Cursor:
    """Where a batch starts: the partition and its stored bookmark."""

    pipeline: str
    """The pipeline id."""
    partition: str
    """``step`` or ``step@shard``."""
    bookmark: str | None
    """The ``last_id`` of the last checkpointed batch (``None`` at first)."""
    batch_number: int
    """Batches checkpointed so far (in this and earlier attempts)."""

    @property
    def step(self) -> str:
        """The step id (``partition`` without its shard)."""
        return self.partition.split("@", 1)[0]

    @property
    def shard(self) -> int | None:
        """The shard number of a sharded step, else ``None``."""
        _, _, shard = self.partition.partition("@")
        return int(shard) if shard else None


@dataclass(frozen=True)
class Batch:
    """What one batch did; checkpointed as one write.

    ``records``, ``failed`` and ``bytes`` are this batch's counts (added to
    the partition's). ``done=True`` completes the step after this batch
    instead of asking for another one.
    """

    last_id: str | None
    records: int = 0
    failed: int = 0
    bytes: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)
    done: bool = False


@dataclass(frozen=True)
class StepResult:
    """How a step ended: returned by the operator (its XCom) and the Dagster helper."""

    pipeline: str
    partition: str
    batches: int
    """Batches this call checkpointed (not counting earlier attempts)."""
    records: int
    """Records this call checkpointed."""
    bookmark: str | None
    completed: bool
    """The partition is completed now (by this call, or before it)."""
    skipped: bool = False
    """Nothing ran: the partition was completed in this run before the call."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able dict (Airflow's XCom)."""
        return {
            "pipeline": self.pipeline,
            "partition": self.partition,
            "batches": self.batches,
            "records": self.records,
            "bookmark": self.bookmark,
            "completed": self.completed,
            "skipped": self.skipped,
        }


class LeaseLike(Protocol):
    """The part of ``oxiflow.Lease`` the loop uses."""

    @property
    def bookmark(self) -> str | None: ...

    @property
    def batch_number(self) -> int: ...

    def checkpoint(
        self,
        *,
        last_id: str | None = ...,
        records: int = ...,
        failed: int = ...,
        bytes: int = ...,
        extra: Mapping[str, str] | None = ...,
    ) -> Any: ...

    def complete(self) -> Any: ...


def run_batches(
    lease: LeaseLike,
    pipeline: str,
    partition: str,
    batch: Callable[[Cursor], Batch | None],
    *,
    max_batches: int | None = None,
) -> StepResult:
    """Run ``batch`` until it returns ``None`` or a ``done`` batch, checkpointing each.

    The lease is completed at the end. An exception from ``batch`` propagates
    with nothing of that batch written: the caller's ``with lease`` records
    the error and releases, and the next attempt resumes from the last
    checkpoint. ``max_batches`` stops early (``completed=False``; the lease is
    then the caller's to release).
    """
    batches = 0
    records = 0
    while max_batches is None or batches < max_batches:
        cursor = Cursor(pipeline, partition, lease.bookmark, lease.batch_number)
        result = batch(cursor)
        if result is None:
            lease.complete()
            return StepResult(pipeline, partition, batches, records, cursor.bookmark, True)
        if not isinstance(result, Batch):
            raise TypeError(f"the batch callable returned {type(result).__name__}, not oxiflow Batch or None")
        lease.checkpoint(
            last_id=result.last_id,
            records=result.records,
            failed=result.failed,
            bytes=result.bytes,
            extra=dict(result.extra) or None,
        )
        batches += 1
        records += result.records
        if result.done:
            lease.complete()
            return StepResult(pipeline, partition, batches, records, result.last_id, True)
    return StepResult(pipeline, partition, batches, records, lease.bookmark, False)


_NOT_ID = re.compile(r"[^A-Za-z0-9._-]+")


def worker_id(*parts: object, salt: object = "") -> str:
    """An oxiflow worker id (``[A-Za-z0-9._-]``, at most 128 bytes) naming ``parts``.

    Characters outside the id alphabet become ``_``; a short hash of the
    exact parts and ``salt`` (something long that makes it unique, such as
    a run id, left out of the readable part) keeps ids apart.
    """
    raw = "\x1f".join(str(p) for p in (*parts, salt))
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    readable = "-".join(_NOT_ID.sub("_", str(p)) for p in parts).replace("..", "_")
    readable = readable.lstrip(".-_")[: 128 - len(digest) - 1]
    return f"{readable}-{digest}" if readable else digest
