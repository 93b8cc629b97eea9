"""A worker process for the race tests: takes batches of one partition until it is done.

Usage: python race_worker.py URL PIPELINE PARTITION WORKER TOTAL BATCH [ENDPOINT]

Each round claims the named partition (LeaseHeld: the other worker has it;
try again), resumes from the bookmark, checkpoints one batch of BATCH
records, and releases, so the workers take turns. Prints one JSON line per
checkpoint that landed: {"from": first, "to": last + 1}. Exits 0 once the
partition is completed (by itself or the other worker).
"""

from __future__ import annotations

import json
import sys

import oxiflow


def main() -> int:
    url, pipeline, partition, worker, total, batch = sys.argv[1:7]
    options = {"endpoint": sys.argv[7], "allow_http": True} if len(sys.argv) > 7 else {}
    state = oxiflow.State(url, **options)
    total_n, batch_n = int(total), int(batch)
    while True:
        try:
            lease = state.claim(pipeline, partition, worker=worker)
        except oxiflow.LeaseHeld:
            continue  # the other worker holds it: claim again (each try is a GET)
        except oxiflow.InvalidInput:
            # Completed partitions cannot be claimed: done if the view says so.
            view = state.view(pipeline)
            done = [p for s in view["steps"] for p in s["partitions"] if p["partition"] == partition]
            if done and "completed" in (done[0]["status"], *done[0]["status"]):
                return 0
            raise
        with lease:
            start = int(lease.bookmark or 0)
            if start >= total_n:
                lease.complete()
                return 0
            end = min(start + batch_n, total_n)
            lease.checkpoint(last_id=str(end), records=end - start)
            print(json.dumps({"from": start, "to": end, "worker": worker}), flush=True)
            if end == total_n:
                lease.complete()
                return 0
            # leaving the block releases the lease: the other worker may take the next batch


if __name__ == "__main__":
    sys.exit(main())
