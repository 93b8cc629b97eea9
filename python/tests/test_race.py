"""Two Python processes racing on one partition: every record counted exactly once."""

from __future__ import annotations

import json
import multiprocessing
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


def _forked_worker(url: str, options: dict[str, object], worker: str, queue: "multiprocessing.Queue[object]") -> None:
    """A forked child: its own State (the parent's runtime did not survive the fork)."""
    import oxiflow

    state = oxiflow.State(url, **options)  # type: ignore[arg-type]
    took = 0
    while True:
        try:
            lease = state.claim("forked", worker=worker)
        except oxiflow.NotReady:
            continue
        except oxiflow.Finished:
            queue.put((worker, took))
            return
        with lease:
            start = int(lease.bookmark or 0)
            lease.checkpoint(last_id=str(start + BATCH), records=BATCH)
            took += BATCH
            if start + BATCH >= 100:
                lease.complete()


def test_forked_processes_after_the_parent_used_oxiflow(store: Store) -> None:
    """multiprocessing's fork (Linux's default before 3.14) after the parent opened a State and claimed."""
    import multiprocessing

    state = store.state()
    state.create_pipeline("forked", steps=["s:4"])
    with state.claim("forked", "s@0", worker="parent") as lease:  # the parent's runtime is running
        lease.checkpoint(last_id="0", records=0)
    ctx = multiprocessing.get_context("fork")
    queue: "multiprocessing.Queue[object]" = ctx.Queue()
    procs = [ctx.Process(target=_forked_worker, args=(store.url, store.options, f"f{n}", queue)) for n in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    took = dict(queue.get(timeout=5) for _ in procs)  # type: ignore[misc]
    assert sum(took.values()) == 400
    view = state.view("forked")
    assert view["records_processed"] == 400 and all(status(p) == "completed" for p in partitions(view).values())
