"""Holds a partition for the fencing tests, driven over stdin/stdout.

Usage: python holder.py URL PIPELINE PARTITION WORKER [ENDPOINT]

Claims the partition with a short lease and prints "claimed"; then for each
line read: "checkpoint" checkpoints one record and prints "ok" or the
exception's class name and exit code; "quit" ends.
"""

from __future__ import annotations

import sys

import oxiflow


def main() -> int:
    url, pipeline, partition, worker = sys.argv[1:5]
    options = {"endpoint": sys.argv[5], "allow_http": True} if len(sys.argv) > 5 else {}
    state = oxiflow.State(url, lease_ttl="2s", heartbeat_interval="500ms", safety_margin="300ms", skew_allowance="200ms", **options)
    lease = state.claim(pipeline, partition, worker=worker)
    print("claimed", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            return 0
        try:
            lease.checkpoint(last_id="from-the-old-holder", records=1)
            print("ok", flush=True)
        except oxiflow.Error as err:
            print(f"{type(err).__name__} {err.exit_code} {err}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
