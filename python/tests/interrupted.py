"""Checkpoints in a loop until Ctrl-C, for the SIGINT test.

Usage: python interrupted.py URL ENDPOINT

Claims partition ``s`` of pipeline ``p`` and prints "claimed"; then
checkpoints one record at a time, printing "ok N" after each checkpoint that
returned (N of them so far). On KeyboardInterrupt it prints one JSON line: the
exception's type, its ``saved`` attribute (``"absent"`` when it has none),
its message and how many checkpoints returned. Leaving the ``with`` block on
the interrupt releases the lease.
"""

from __future__ import annotations

import json
import signal
import sys

import oxiflow


def main() -> int:
    # Python leaves SIGINT ignored when it started ignored (a background job
    # of a non-interactive shell, as CI may run it): Ctrl-C must raise here.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    url, endpoint = sys.argv[1:3]
    state = oxiflow.State(url, endpoint=endpoint, allow_http=True)
    returned = 0
    try:
        with state.claim("p", "s", worker="w") as lease:
            print("claimed", flush=True)
            while True:
                lease.checkpoint(last_id=str(returned + 1), records=1)
                returned += 1
                print(f"ok {returned}", flush=True)
    except KeyboardInterrupt as e:
        report = {"type": type(e).__name__, "saved": getattr(e, "saved", "absent"), "message": str(e), "returned": returned}
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
