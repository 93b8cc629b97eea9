"""Two Python processes racing on one partition: every record counted exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Store, partitions, status

HERE = Path(__file__).resolve().parent
TOTAL, BATCH = 1000, 10


def test_two_processes_on_one_partition(store: Store) -> None:
    state = store.state()
    state.create_pipeline("race", steps=["s"])
    extra = [store.options["endpoint"]] if "endpoint" in store.options else []
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "race_worker.py"), store.url, "race", "s", f"w{n}", str(TOTAL), str(BATCH), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    batches = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        batches += [json.loads(line) for line in out.splitlines()]
    # Every batch landed once: the ranges tile 0..TOTAL with no gap and no overlap.
    ranges = sorted((b["from"], b["to"]) for b in batches)
    assert ranges == [(i, i + BATCH) for i in range(0, TOTAL, BATCH)]
    by_worker = {b["worker"] for b in batches}
    assert by_worker == {"w0", "w1"}, f"both workers took batches: {by_worker}"
    part = partitions(state.view("race"))["s"]
    assert (status(part), part["records_processed"], part["last_processed_id"]) == ("completed", TOTAL, str(TOTAL))
    assert part["batch_number"] == TOTAL // BATCH
