"""A worker that drains an incremental pipeline: copy new orders, then sum them per day.

Run several at once (on one machine or many, against the same store): each
claims whatever is ready, resumes from the bookmark of the partition it got,
checkpoints after every batch and completes the partition when its source
is exhausted. A worker that crashes mid-batch loses at most that batch: the
next claim resumes from the last checkpoint.

    python drain_orders.py                     # .oxiflow/config.yaml / OXIFLOW_*, like the CLI
    python drain_orders.py s3://bucket/state   # or any store URL

The "source" here is a SQLite table the example fills itself, so the file
runs as it is; replace ``read_batch`` with your own query.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from typing import Optional

import oxiflow

PIPELINE = "orders"
SHARDS = 4
BATCH = 250


def source(path: str = "orders.sqlite") -> sqlite3.Connection:
    """A table of orders to copy; filled with 10,000 rows the first time."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, day TEXT, amount_cents INTEGER)")
    db.execute("CREATE TABLE IF NOT EXISTS copied (id INTEGER PRIMARY KEY, day TEXT, amount_cents INTEGER)")
    db.execute("CREATE TABLE IF NOT EXISTS daily (day TEXT PRIMARY KEY, amount_cents INTEGER)")
    if db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0:
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            ((i, f"2026-11-{1 + i % 27:02d}", 100 + i % 900) for i in range(1, 10_001)),
        )
    db.commit()
    return db


def read_batch(db: sqlite3.Connection, shard: int, after: int) -> list[tuple[int, str, int]]:
    """The next orders of this shard after id ``after``, in id order."""
    rows = db.execute(
        "SELECT id, day, amount_cents FROM orders WHERE id % ? = ? AND id > ? ORDER BY id LIMIT ?",
        (SHARDS, shard, after, BATCH),
    ).fetchall()
    return [(int(r[0]), str(r[1]), int(r[2])) for r in rows]


def copy_shard(db: sqlite3.Connection, lease: oxiflow.Lease) -> None:
    """extract@N: copy this shard's orders, one checkpoint per batch."""
    shard = int(lease.partition.split("@")[1])
    after = int(lease.bookmark or 0)
    while True:
        rows = read_batch(db, shard, after)
        if not rows:
            lease.complete()
            return
        # Idempotent writes: a batch redone after a crash overwrites itself.
        db.executemany("INSERT OR REPLACE INTO copied VALUES (?, ?, ?)", rows)
        db.commit()
        after = rows[-1][0]
        lease.checkpoint(last_id=str(after), records=len(rows), bytes=sum(len(r[1]) + 16 for r in rows))


def summarise(db: sqlite3.Connection, lease: oxiflow.Lease) -> None:
    """load: one pass once every extract shard is done."""
    db.execute("DELETE FROM daily")
    db.execute("INSERT INTO daily SELECT day, SUM(amount_cents) FROM copied GROUP BY day")
    db.commit()
    days = db.execute("SELECT COUNT(*) FROM daily").fetchone()[0]
    lease.complete(records=int(days), extra={"days": str(days)})


def claims(state: oxiflow.State, worker: Optional[str]) -> Iterator[oxiflow.Lease]:
    """Leases until the pipeline is finished, waiting while nothing is ready."""
    while True:
        try:
            yield state.claim(PIPELINE, worker=worker)
        except oxiflow.NotReady:
            time.sleep(0.5)  # others hold what is left, or upstream is not done yet
        except oxiflow.Finished:
            return


def main(url: Optional[str] = None, worker: Optional[str] = None) -> int:
    state = oxiflow.State(url)
    state.create_pipeline(PIPELINE, steps=[f"extract:{SHARDS}", "load"])  # idempotent
    db = source()
    for lease in claims(state, worker):
        with lease:  # an exception fails the partition (retryable) and releases it
            if lease.partition.startswith("extract@"):
                copy_shard(db, lease)
            else:
                summarise(db, lease)
    view = state.view(PIPELINE)
    print(f"{PIPELINE}: {view['status']}, {view['records_processed']} records")
    return 0 if view["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
