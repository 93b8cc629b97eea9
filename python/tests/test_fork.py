"""fork() with a lease held: the child may not write through the parent's objects, and the parent's writes all land.

The child is a real ``os.fork()`` of the pytest process. It reports through a
pipe (one JSON object) and leaves with ``os._exit``, never returning into
pytest; the parent waits for it with a deadline, so a child that hangs fails
the test instead of hanging it.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import time
import traceback
import uuid
from typing import Any, Callable, Dict

import pytest
from conftest import S3, partitions

import oxiflow

CHILD_DEADLINE = 30.0  # seconds the parent waits for the child before killing it
CALL_LIMIT = 5.0  # seconds a refused call may take in the child: it must not reach the store


@pytest.fixture(params=["s3", "redis"])
def forked_store(request: pytest.FixtureRequest) -> Callable[[], oxiflow.State]:
    """Opens a fresh location (each call opens the same one) on S3 (moto) or Redis."""
    if request.param == "s3":
        s3: S3 = request.getfixturevalue("s3")
        url = f"s3://{s3.bucket}/py-fork-{uuid.uuid4().hex[:12]}"
        return lambda: oxiflow.State(url, endpoint=s3.endpoint, allow_http=True)
    redis = os.environ.get("OXIFLOW_TEST_REDIS_URL")
    if not redis:
        if os.environ.get("CI"):
            pytest.fail("OXIFLOW_TEST_REDIS_URL is not set: scripts/test.sh starts redis-server before the Python tests")
        pytest.skip("OXIFLOW_TEST_REDIS_URL is not set (scripts/servers.sh; start_redis)")
    url = f"{redis}?prefix=py-fork-{uuid.uuid4().hex[:12]}"
    return lambda: oxiflow.State(url)


def run_in_child(body: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Forks; the child runs ``body`` and sends its result (or its exception) back. Returns what the child sent."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            try:
                result = body()
            except BaseException as e:  # noqa: BLE001 - sent to the parent, which fails the test
                result = {"unexpected": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
                code = 1
            os.write(write_end, json.dumps(result).encode())
            os.close(write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + CHILD_DEADLINE
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            pytest.fail(f"the forked child did not finish within {CHILD_DEADLINE} s: a call in it hung")
        time.sleep(0.05)  # polling waitpid until the deadline
    with os.fdopen(read_end, "rb") as pipe:
        sent = pipe.read()
    assert sent, f"the child sent nothing (wait status {status})"
    report: Dict[str, Any] = json.loads(sent)
    assert "unexpected" not in report, f"in the child: {report['unexpected']}\n{report.get('traceback', '')}"
    assert os.waitstatus_to_exitcode(status) == 0
    return report


def refused(call: Callable[[], object]) -> Dict[str, Any]:
    """What a call through an inherited object did in the child: the exception, its message, how long it took."""
    started = time.monotonic()
    try:
        call()
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        return {
            "type": type(e).__name__,
            "invalid_input": isinstance(e, oxiflow.InvalidInput),
            "message": str(e),
            "seconds": time.monotonic() - started,
        }
    return {"type": None, "seconds": time.monotonic() - started}


def test_a_forked_child_cannot_write_through_the_parents_lease(forked_store: Callable[[], oxiflow.State]) -> None:
    state = forked_store()
    state.create_pipeline("p", steps=["s"])
    first = state.claim("p", "s", worker="parent")
    first.checkpoint(last_id="1", records=1)
    parent = os.getpid()
    # Held only here: the child drops its copies (the last references there) before it exits.
    inherited: Dict[str, object] = {"state": state, "lease": first}
    del state, first

    def child() -> Dict[str, Any]:
        state, lease = inherited["state"], inherited["lease"]
        assert isinstance(state, oxiflow.State) and isinstance(lease, oxiflow.Lease)
        report: Dict[str, Any] = {
            "checkpoint": refused(lambda: lease.checkpoint(last_id="100", records=100)),
            "complete": refused(lambda: lease.complete(records=100)),
            "bookmark": refused(lambda: lease.bookmark),
            "view": refused(lambda: state.view("p")),
            "store": refused(lambda: state.store.list("")),
            "claim": refused(lambda: state.claim("p", "s", worker="child", force=True)),
        }
        # Its own State works: a fresh runtime and connection in this process.
        own = forked_store()
        report["read"] = partitions(own.view("p"))["s"]["records_processed"]
        with pytest.raises(oxiflow.LeaseHeld):
            own.claim("p", "s", worker="child")
        # Dropping the inherited objects must not touch the parent's connections (or hang).
        del state, lease
        inherited.clear()
        report["dropped"] = refused(gc.collect)
        return report

    got = run_in_child(child)
    for call in ("checkpoint", "complete", "bookmark", "view", "store", "claim"):
        r = got[call]
        assert r["type"] == "UsedAfterFork" and r["invalid_input"], f"{call} in the child: {r}"
        assert r["seconds"] < CALL_LIMIT, f"{call} in the child took {r['seconds']:.1f} s"
        assert f"created in process {parent} and cannot be used after fork()" in r["message"], r["message"]
        assert "in the child" in r["message"], r["message"]
    assert got["checkpoint"]["message"].endswith("open a new oxiflow.State in the child and claim again"), got["checkpoint"]
    assert got["read"] == 1, "the child read the parent's first checkpoint through its own State"
    assert got["dropped"]["type"] is None

    # The parent's lease and connections are untouched: its next write lands at once, and only its writes are stored.
    lease = inherited["lease"]
    assert isinstance(lease, oxiflow.Lease)
    started = time.monotonic()
    lease.checkpoint(last_id="2", records=1)
    assert time.monotonic() - started < CALL_LIMIT, "the parent's connections suffered from the child"
    assert lease.records_processed == 2
    assert partitions(forked_store().view("p"))["s"]["records_processed"] == 2
    lease.complete()
    part = partitions(forked_store().view("p"))["s"]
    assert (part["records_processed"], part["batch_number"], part["last_processed_id"]) == (2, 2, "2")


def test_a_child_forked_before_any_call_opens_its_own_state(forked_store: Callable[[], oxiflow.State]) -> None:
    """The runtime is per process: a State opened in a child, after the parent's runtime started, works there."""
    state = forked_store()
    state.create_pipeline("p", steps=["s:2"])

    def child() -> Dict[str, Any]:
        own = forked_store()
        with own.claim("p", "s@1", worker="child") as lease:
            lease.checkpoint(last_id="5", records=5)
            lease.complete()
        return {"records": own.view("p")["records_processed"]}

    assert run_in_child(child) == {"records": 5}
    with state.claim("p", "s@0", worker="parent") as lease:
        lease.complete(records=1)
    assert state.view("p")["records_processed"] == 6
