"""oxiflow state for Python: durable checkpoints and leases for pipeline workers.

The same state the ``oxiflow`` command reads and writes, in S3, GCS, Azure,
Redis, a running ``oxiflow serve`` or a local directory::

    import oxiflow

    state = oxiflow.State()                    # .oxiflow/config.yaml and OXIFLOW_*, like the CLI
    state.create_pipeline("orders", steps=["extract:4", "load"])
    with state.claim("orders") as lease:       # the next ready partition, heartbeat in the background
        for batch in read_from(lease.bookmark):
            lease.checkpoint(last_id=batch.last_id, records=len(batch))
        lease.complete()

See docs/python.md.
"""

from __future__ import annotations

from oxiflow._errors import (
    ConfigError,
    Conflict,
    Corrupt,
    Error,
    Fenced,
    Finished,
    Interrupted,
    InvalidInput,
    LeaseHeld,
    NotFound,
    NotReady,
    Stopped,
    Unavailable,
    UsedAfterFork,
)
from oxiflow._oxiflow import Lease, State, Store, __version__

__all__ = [
    "State",
    "Lease",
    "Store",
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
    "__version__",
]
