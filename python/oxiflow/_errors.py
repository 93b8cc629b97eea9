"""The exceptions of the ``oxiflow`` package: one per exit code of the ``oxiflow`` command.

Every exception carries ``exit_code`` (the CLI's exit code for the same
failure) and ``kind`` (the name in the CLI's ``--json`` errors and in
``oxiflow serve``'s responses); the message is the CLI's, in one sentence
with what to do.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional


class Error(Exception):
    """Any oxiflow failure (exit code 1 when no subclass fits)."""

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "failure"
    schedule: Optional[Dict[str, Any]] = None
    """``claim()`` without a partition: the scheduler's answer (why each partition waits)."""


class InvalidInput(Error):
    """Invalid input or configuration: a bad id, an unknown URL scheme, a bad option, an illegal transition (exit 2). Fix the input."""

    exit_code: ClassVar[int] = 2
    kind: ClassVar[str] = "invalid"


class ConfigError(InvalidInput):
    """``.oxiflow/config.yaml`` or an ``OXIFLOW_*`` variable is wrong (exit 2); the message names the file or variable."""


class UsedAfterFork(InvalidInput):
    """A ``State``, ``Store`` or ``Lease`` was used in another process than the one that made it: a ``fork()``ed child (exit 2).

    Nothing was sent to the store. Open a new ``oxiflow.State`` in the child (and claim again there).
    """


class NotFound(Error):
    """No such pipeline, step or key (exit 3). Create it first."""

    exit_code: ClassVar[int] = 3
    kind: ClassVar[str] = "not_found"


class Conflict(Error):
    """Someone else wrote first: the document kept changing, an import over an existing pipeline, a stale version (exit 4). Retry, or pass ``replace=True``."""

    exit_code: ClassVar[int] = 4
    kind: ClassVar[str] = "conflict"


class LeaseHeld(Error):
    """Another worker holds the lease (exit 5). Wait for it to expire or ask it to stop."""

    exit_code: ClassVar[int] = 5
    kind: ClassVar[str] = "lease_held"


class Fenced(Error):
    """You no longer hold the lease: taken over, released, stopped, or past its trusted time; nothing of this call was written (exit 6). Stop working on that partition; claim it again."""

    exit_code: ClassVar[int] = 6
    kind: ClassVar[str] = "fenced"


class Corrupt(Error):
    """A damaged or too new state object; nothing was overwritten (exit 7). Inspect the named key; restore from history or an export."""

    exit_code: ClassVar[int] = 7
    kind: ClassVar[str] = "corrupt"


class Unavailable(Error):
    """The store kept failing: down, unreachable or slow (exit 8). Retry later; check the endpoint."""

    exit_code: ClassVar[int] = 8
    kind: ClassVar[str] = "unavailable"


class NotReady(Error):
    """Not claimable yet: the partition's upstream is unfinished, nothing is ready yet, or a reset is being committed (exit 9). Wait and claim again."""

    exit_code: ClassVar[int] = 9
    kind: ClassVar[str] = "not_ready"


class Finished(Error):
    """``claim()`` without a partition: nothing is left to claim in this run (completed, or failed with nothing else able to run) (exit 10). Stop; ``view()`` says why."""

    exit_code: ClassVar[int] = 10
    kind: ClassVar[str] = "finished"


class Stopped(Error):
    """A checkpoint was saved, then a stop request released the lease (exit 11). Stop working on that partition."""

    exit_code: ClassVar[int] = 11
    kind: ClassVar[str] = "stopped"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) arrived while a lease's write (checkpoint, complete, release, fail) was in flight.

    The write was not abandoned: it ran to its end first, and ``saved`` says
    how it ended: ``True``, it is stored (resume after it); ``False``, nothing
    of it was stored; ``None``, the store's answer never came (the lease's next
    write settles it, as after ``Unavailable``). The write's own error, if it
    failed, is ``__cause__``. A ``KeyboardInterrupt``, not an :class:`Error`:
    ``except Exception`` does not catch it, and leaving a ``with`` block on it
    releases the lease without counting a failure.
    """

    saved: Optional[bool]

    def __init__(self, message: str, saved: Optional[bool] = None) -> None:
        super().__init__(message)
        self.saved = saved


__all__ = [
    "Error",
    "InvalidInput",
    "ConfigError",
    "UsedAfterFork",
    "NotFound",
    "Conflict",
    "LeaseHeld",
    "Fenced",
    "Corrupt",
    "Unavailable",
    "NotReady",
    "Finished",
    "Stopped",
    "Interrupted",
]
