"""Type stubs of the native module ``oxiflow._oxiflow`` (re-exported by ``oxiflow``)."""

from __future__ import annotations

import datetime
import os
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

from typing_extensions import Literal, NotRequired, TypedDict

__version__: str

Duration = Union[str, float, int, datetime.timedelta]
"""``"30s"``, ``"500ms"``, seconds as a number, or a ``timedelta``."""

class StepDict(TypedDict):
    """One step of a plan: ``{"step": "transform", "shards": 4, "after": ["extract:aligned"]}``."""

    step: str
    shards: NotRequired[Optional[int]]
    after: NotRequired[Optional[Union[str, Sequence[str]]]]
    aligned: NotRequired[bool]

Step = Union[str, StepDict, Mapping[str, Any]]
"""``"extract"``, ``"extract:4"`` or a :class:`StepDict`."""

class State:
    """Pipeline state in one store, opened from a URL or from ``.oxiflow/config.yaml`` and ``OXIFLOW_*``."""

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        config: Optional[Union[str, os.PathLike[str]]] = ...,
        lease_ttl: Duration = ...,
        heartbeat_interval: Duration = ...,
        skew_allowance: Duration = ...,
        safety_margin: Duration = ...,
        retry_base: Duration = ...,
        retry_max: Duration = ...,
        max_attempts: int = ...,
        errors_keep_last: int = ...,
        history_keep_last: int = ...,
        endpoint: Optional[str] = ...,
        region: Optional[str] = ...,
        allow_http: bool = ...,
    ) -> None: ...
    @property
    def url(self) -> str:
        """The store URL in use (``file:///…``, ``s3://…``, …)."""
    @property
    def config_file(self) -> Optional[str]:
        """The config file read, if any."""
    @property
    def store(self) -> Store:
        """The store itself, for compare-and-swap of your own keys."""
    def create_pipeline(self, pipeline: str, steps: Sequence[Step], run_id: Optional[str] = None) -> Dict[str, Any]:
        """Creates the pipeline and its partitions (idempotent for the same plan); returns the pipeline document."""
    def view(self, pipeline: str) -> Dict[str, Any]:
        """The pipeline's view: what ``oxiflow state show --json`` prints."""
    def list_pipelines(self) -> List[str]:
        """The ids of every pipeline in the store, sorted."""
    def export(self, pipeline: str) -> Dict[str, Any]:
        """Every document of the pipeline: what ``oxiflow state export`` writes."""
    def import_(self, export: Union[str, Mapping[str, Any]], replace: bool = False, force: bool = False) -> Dict[str, Any]:
        """Writes an export as ``oxiflow state import`` does; returns ``{"partitions", "replaced", "discarded_records"}``."""
    def claim(
        self,
        pipeline: str,
        partition: Optional[str] = None,
        worker: Optional[str] = None,
        ttl: Optional[Duration] = None,
        force: bool = False,
    ) -> Lease:
        """Claims the next ready partition (``partition=None``) or the named one; raises NotReady, Finished, LeaseHeld."""

class Lease:
    """A claimed partition with a background heartbeat; a context manager.

    Usable only in the process that claimed it: anywhere else every call and attribute raises ``UsedAfterFork``.
    """

    @property
    def pipeline(self) -> str: ...
    @property
    def partition(self) -> str:
        """``step`` or ``step@shard``."""
    @property
    def worker(self) -> str: ...
    @property
    def key(self) -> str:
        """The store key of the partition's document."""
    @property
    def bookmark(self) -> Optional[str]:
        """Where to resume: the last processed id checkpointed (None at the start)."""
    @property
    def batch_number(self) -> int: ...
    @property
    def records_processed(self) -> int: ...
    @property
    def records_failed(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def extra(self) -> Dict[str, str]: ...
    @property
    def active(self) -> bool:
        """True while held: not completed, failed, released, stopped or lost."""
    @property
    def ended(self) -> Optional[Literal["completed", "failed", "released", "stopped", "lost"]]: ...
    @property
    def doc(self) -> Dict[str, Any]:
        """The partition document as last written."""
    def checkpoint(
        self,
        last_id: Optional[str] = None,
        records: int = 0,
        failed: int = 0,
        bytes: int = 0,
        extra: Optional[Mapping[str, str]] = None,
        errors: Optional[Sequence[str]] = None,
        batch: Optional[int] = None,
    ) -> None:
        """Records progress and extends the lease (one conditional write); raises Stopped or Fenced.

        ``batch`` defaults to one more than the last, decided inside the write. Counts are 0 to 2^53 - 1
        (else InvalidInput). Ctrl-C during the write raises ``Interrupted`` once it ended, with ``saved``.
        Used in a forked child: ``UsedAfterFork``, nothing sent.
        """
    def complete(
        self,
        last_id: Optional[str] = None,
        records: int = 0,
        failed: int = 0,
        bytes: int = 0,
        extra: Optional[Mapping[str, str]] = None,
    ) -> None: ...
    def fail(self, message: str, retryable: bool = True) -> None: ...
    def release(
        self,
        last_id: Optional[str] = None,
        records: int = 0,
        failed: int = 0,
        bytes: int = 0,
        extra: Optional[Mapping[str, str]] = None,
    ) -> None: ...
    def __enter__(self) -> Lease: ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]] = None,
        exc: Optional[BaseException] = None,
        _traceback: Optional[TracebackType] = None,
    ) -> Literal[False]:
        """Fails (retryable) on an exception, else releases an unfinished lease; never swallows the exception."""

class Store:
    """Bytes under keys with compare-and-swap writes; versions are opaque strings."""

    def __init__(self, url: Optional[str] = None, **options: Any) -> None: ...
    def get(self, key: str) -> Optional[Tuple[bytes, str]]:
        """``(data, version)``, or None when absent."""
    def put(self, key: str, data: bytes, *, version: Optional[str] = None) -> str:
        """Creates (``version=None``) or replaces the version given; raises Conflict; returns the new version."""
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> List[str]: ...
