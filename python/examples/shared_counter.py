"""Compare-and-swap on your own keys beside oxiflow's documents: a counter many processes bump.

``Store.put(key, data, version=…)`` replaces only the version read; a
``Conflict`` means someone else wrote first: read again and retry.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import oxiflow

KEY = "myapp/counters/runs.json"  # keep your keys under a prefix of your own, never under pipelines/


def bump(store: oxiflow.Store, by: int = 1) -> int:
    """Adds ``by`` to the counter and returns the new value; no update is lost under contention."""
    while True:
        found = store.get(KEY)
        value = 0 if found is None else int(json.loads(found[0])["value"])
        body = json.dumps({"value": value + by}).encode()
        try:
            store.put(KEY, body, version=None if found is None else found[1])
            return value + by
        except oxiflow.Conflict:
            continue  # another writer won this round


def main(url: Optional[str] = None) -> int:
    store = oxiflow.State(url).store
    print(f"{KEY} = {bump(store)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
