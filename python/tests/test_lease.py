"""Claims and leases: order, progress, finishing, the context manager, held leases, fencing."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Store, partitions, status

import oxiflow

HERE = Path(__file__).resolve().parent


def test_claim_next_follows_the_plan_and_ends_with_finished(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["extract:2", "load"])
    seen = []
    while True:
        try:
            lease = state.claim("p", worker="w1")
        except oxiflow.Finished as done:
            assert done.exit_code == 10 and "nothing left to claim in p (completed)" in str(done)
            assert done.schedule is not None and done.schedule["status"] == "completed"
            break
        with lease:
            seen.append(lease.partition)
            assert lease.pipeline == "p" and lease.worker == "w1" and lease.active
            lease.checkpoint(last_id=f"{lease.partition}-1", records=1)
            lease.complete()
            assert not lease.active and lease.ended == "completed"
    assert sorted(seen[:2]) == ["extract@0", "extract@1"] and seen[2] == "load"
    assert state.view("p")["records_processed"] == 3


def test_nothing_ready_is_not_ready_with_the_schedule(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["extract", "load"])
    with state.claim("p", worker="w1") as held:
        with pytest.raises(oxiflow.NotReady) as err:
            state.claim("p", worker="w2")
        assert err.value.exit_code == 9
        assert str(err.value).startswith("nothing in p is ready yet (extract: held by w1 until ")
        assert "load: it waits on extract" in str(err.value)
        schedule = err.value.schedule
        assert schedule is not None and schedule["claimable"] == []
        held.complete()


def test_a_named_claim_waits_for_its_upstream_unless_forced(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["extract:2", {"step": "transform", "shards": 2, "after": ["extract:aligned"]}])
    with pytest.raises(oxiflow.NotReady, match="it waits on extract@1; claim it once they completed"):
        state.claim("p", "transform@1", worker="w1")
    with state.claim("p", "extract@1", worker="w1") as lease:
        lease.complete()
    with state.claim("p", "transform@1", worker="w1") as lease:  # its own shard is done
        lease.release()
    with pytest.raises(oxiflow.NotReady):
        state.claim("p", "transform@0", worker="w1")
    with state.claim("p", "transform@0", worker="w1", force=True) as lease:
        assert lease.partition == "transform@0"
        lease.release()
    with pytest.raises(oxiflow.NotFound):
        state.claim("p", "nope", worker="w1")


def test_checkpoints_move_the_bookmark_and_count(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s"])
    lease = state.claim("p", "s", worker="w1")
    assert (lease.bookmark, lease.batch_number, lease.records_processed, lease.attempts) == (None, 0, 0, 1)
    assert lease.key == "pipelines/p/partitions/s.json"
    lease.checkpoint(last_id="id-10", records=10, failed=1, bytes=100, extra={"cursor": "a"}, errors=["row 3 bad"])
    lease.checkpoint(last_id="id-20", records=10, extra={"cursor": "b"})
    assert (lease.bookmark, lease.batch_number, lease.records_processed, lease.records_failed) == ("id-20", 2, 20, 1)
    assert lease.extra == {"cursor": "b"}
    lease.checkpoint(batch=7)
    assert lease.batch_number == 7
    with pytest.raises(oxiflow.InvalidInput, match="batch_number"):
        lease.checkpoint(batch=3)  # counters never go back
    lease.complete(last_id="id-25", records=5)
    part = partitions(state.view("p"))["s"]
    assert (status(part), part["last_processed_id"], part["records_processed"], part["bytes_processed"]) == ("completed", "id-25", 25, 100)
    assert part["total_errors"] == 1
    with pytest.raises(oxiflow.Fenced, match="this lease was completed; claim it again") as err:
        lease.checkpoint(records=1)
    assert err.value.exit_code == 6
    with pytest.raises(oxiflow.Fenced):
        lease.release()


def test_fail_records_the_error(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s", "t"])
    with state.claim("p", "s", worker="w1") as lease:
        lease.checkpoint(last_id="5", records=5)
        lease.fail("the source is gone", retryable=False)
        assert lease.ended == "failed"
    view = state.view("p")
    part = partitions(view)["s"]
    assert status(part) == "failed" and part["readiness"]["state"] == "failed"
    assert "the source is gone" in part["readiness"]["error"]
    with pytest.raises(oxiflow.Finished, match=r"\(failed\)"):
        state.claim("p", worker="w1")


def test_an_exception_in_the_block_fails_retryably_and_the_retry_resumes(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s"])
    with pytest.raises(ValueError, match="bad row"):
        with state.claim("p", "s", worker="w1") as lease:
            lease.checkpoint(last_id="row-100", records=100)
            raise ValueError("bad row 101")
    assert lease.ended == "failed" and not lease.active
    part = partitions(state.view("p"))["s"]
    assert part["status"] == {"failed": {"error": "ValueError: bad row 101", "failed_at": part["last_heartbeat"], "retryable": True}}
    assert part["readiness"]["state"] == "backoff" and part["lease"]["status"] == {"state": "released"}
    errors = state.view("p")["recent_errors"]
    assert [(e["message"], e["worker_id"], e["retryable"]) for e in errors] == [("ValueError: bad row 101", "w1", True)]
    with state.claim("p", "s", worker="w2") as again:  # a named claim does not wait for the backoff
        assert (again.bookmark, again.records_processed, again.attempts) == ("row-100", 100, 2)
        again.complete(last_id="row-150", records=50)
    assert state.view("p")["records_processed"] == 150


def test_an_interrupt_releases_without_a_failure(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s"])
    with pytest.raises(KeyboardInterrupt):
        with state.claim("p", "s", worker="w1") as lease:
            lease.checkpoint(last_id="3", records=3)
            raise KeyboardInterrupt
    assert lease.ended == "released"
    part = partitions(state.view("p"))["s"]
    assert (part["failures"], part["total_errors"], part["readiness"]["state"]) == (0, 0, "ready")
    with state.claim("p", worker="w2") as again:
        assert again.bookmark == "3"
        again.complete()


def test_leaving_the_block_normally_releases(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s"])
    with state.claim("p", worker="w1") as lease:
        lease.checkpoint(last_id="7", records=7)
    assert lease.ended == "released"
    part = partitions(state.view("p"))["s"]
    assert status(part) != "running" and part["readiness"]["state"] == "ready" and part["last_processed_id"] == "7"
    with state.claim("p", worker="w2") as again:
        assert again.bookmark == "7"
        again.complete()


def test_a_held_lease_is_refused_to_another_worker(state: oxiflow.State) -> None:
    state.create_pipeline("p", steps=["s"])
    with state.claim("p", "s", worker="w1") as lease:
        with pytest.raises(oxiflow.LeaseHeld, match="w1") as err:
            state.claim("p", "s", worker="w2")
        assert err.value.exit_code == 5
        lease.complete()


def test_the_heartbeat_keeps_a_short_lease_alive(store: Store) -> None:
    state = store.state(lease_ttl="1500ms", heartbeat_interval="300ms", safety_margin="200ms", skew_allowance="100ms")
    state.create_pipeline("p", steps=["s"])
    other = store.state(skew_allowance="100ms")
    with state.claim("p", "s", worker="w1") as lease:
        first = lease.doc["lease"]["expires_at"]
        # Twice the ttl with no checkpoint: only the background heartbeat keeps it.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            with pytest.raises(oxiflow.LeaseHeld):
                other.claim("p", "s", worker="w2")
            time.sleep(0.25)  # the test's own pace: the holder must survive any moment of it
        lease.checkpoint(records=1)
        assert lease.doc["lease"]["expires_at"] > first + 2500
        lease.complete()


def test_a_takeover_fences_the_old_holder(store: Store) -> None:
    """A holder stopped (SIGSTOP) past its lease is taken over; resumed, it is fenced."""
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    args = [sys.executable, str(HERE / "holder.py"), store.url, "p", "s", "old"]
    if "endpoint" in store.options:
        args.append(store.options["endpoint"])
    holder = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "claimed"
        holder.stdin.write("checkpoint\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ok"
        holder.send_signal(19)  # SIGSTOP: no heartbeat, no checkpoint
        taker = store.state(skew_allowance="200ms")
        deadline = time.monotonic() + 20
        while True:
            try:
                new = taker.claim("p", "s", worker="new")
                break
            except oxiflow.LeaseHeld:
                assert time.monotonic() < deadline, "the stopped holder's lease never expired"
                time.sleep(0.1)  # waiting for the expiry, by polling
        assert new.bookmark == "from-the-old-holder" and new.records_processed == 1
        holder.send_signal(18)  # SIGCONT
        holder.stdin.write("checkpoint\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().strip()
        assert answer.startswith("Fenced 6 "), answer
        new.checkpoint(last_id="from-the-new-holder", records=10)
        new.complete()
        holder.stdin.write("quit\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    part = partitions(state.view("p"))["s"]
    assert (status(part), part["records_processed"], part["last_processed_id"]) == ("completed", 11, "from-the-new-holder")


def test_threads_share_a_state_and_the_gil_is_released(local_state: oxiflow.State) -> None:
    local_state.create_pipeline("p", steps=["s:8"])
    done: list[str] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            while True:
                try:
                    lease = local_state.claim("p", worker=f"t{n}")
                except oxiflow.Finished:
                    return
                except oxiflow.NotReady:
                    continue
                with lease:
                    for i in range(5):
                        lease.checkpoint(last_id=str(i), records=1)
                    lease.complete()
                    done.append(lease.partition)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(done) == [f"s@{i}" for i in range(8)]
    assert local_state.view("p")["records_processed"] == 40


def test_a_bad_ttl_or_worker_is_invalid_input(local_state: oxiflow.State) -> None:
    local_state.create_pipeline("p", steps=["s"])
    with pytest.raises(oxiflow.InvalidInput, match="too short"):
        local_state.claim("p", "s", worker="w", ttl="1s")
    with pytest.raises(oxiflow.InvalidInput, match="worker id"):
        local_state.claim("p", "s", worker="no spaces")
    with pytest.raises(oxiflow.InvalidInput, match="shard"):
        local_state.claim("p", "s@01", worker="w")
    with local_state.claim("p", "s", ttl=5) as lease:  # a default worker: host and pid
        assert lease.worker.endswith(f"-{__import__('os').getpid()}")
        assert lease.doc["lease"]["ttl_ms"] == 5000
        lease.release()


def test_threads_sharing_a_lease_get_consecutive_batch_numbers(store: Store) -> None:
    """The next batch number is decided inside the write: 4 threads x 50 checkpoints move it by exactly 200."""
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    threads_n, each = 4, 50
    with state.claim("p", "s", worker="w1") as lease:
        lease.checkpoint(batch=10)
        errors: list[BaseException] = []
        start = threading.Barrier(threads_n)

        def work(n: int) -> None:
            try:
                start.wait(timeout=30)
                for i in range(each):
                    lease.checkpoint(last_id=f"t{n}-{i}", records=1, failed=n)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert (lease.batch_number, lease.records_processed, lease.records_failed) == (10 + 200, 200, each * (0 + 1 + 2 + 3))
        lease.complete()
    part = partitions(state.view("p"))["s"]
    assert (part["batch_number"], part["records_processed"], part["records_failed"]) == (210, 200, 300)


def test_limits_are_invalid_input_and_nothing_is_clamped(local_state: oxiflow.State) -> None:
    """A lease ttl over the core's maximum, batch numbers and counters past 2^53 - 1: refused, nothing written."""
    local_state.create_pipeline("p", steps=["s"])
    with pytest.raises(oxiflow.InvalidInput, match="at most 24h"):
        local_state.claim("p", "s", worker="w", ttl="9999999999d")
    with pytest.raises(oxiflow.InvalidInput, match="at most 24h"):
        oxiflow.State(local_state.url, lease_ttl="9999999999d")
    with pytest.raises(oxiflow.InvalidInput, match="ttl"):
        local_state.claim("p", "s", worker="w", ttl=1e300)
    lease = local_state.claim("p", "s", worker="w")
    lease.checkpoint(last_id="a", records=5, batch=3)
    top = 2**53 - 1
    refused = {
        "batch_number would pass 9007199254740991": [{"batch": 2**64 - 1}, {"batch": top + 1}],
        "batch must be a whole number from 0 to 9007199254740991": [{"batch": 2**64}, {"batch": -1}],
        "records_processed would pass 9007199254740991": [{"records": 2**64 - 1}, {"records": top - 4}],
        "records must be a whole number from 0 to 9007199254740991": [{"records": 2**64}, {"records": -1}],
        "failed must be a whole number from 0 to 9007199254740991": [{"failed": -5}],
        "bytes must be a whole number from 0 to 9007199254740991": [{"bytes": 2**70}],
    }
    for message, calls in refused.items():
        for kwargs in calls:
            with pytest.raises(oxiflow.InvalidInput) as err:
                lease.checkpoint(last_id="b", **kwargs)
            assert message in str(err.value), (kwargs, str(err.value))
            assert err.value.exit_code == 2
    with pytest.raises(oxiflow.InvalidInput, match="records must be a whole number"):
        lease.complete(records=-1)
    assert lease.active, "a refused write keeps the lease"
    part = partitions(local_state.view("p"))["s"]
    assert (part["batch_number"], part["records_processed"], part["last_processed_id"]) == (3, 5, "a"), "nothing was written"
    lease.checkpoint(batch=top, records=top - 5)  # the largest values are taken as they are
    assert (lease.batch_number, lease.records_processed) == (top, top)
    lease.complete()
    part = partitions(local_state.view("p"))["s"]
    assert (part["batch_number"], part["records_processed"]) == (top, top)
