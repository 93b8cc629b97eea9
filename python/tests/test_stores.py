"""The other store kinds the CLI takes: a running `oxiflow serve` (http://) and Redis."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from conftest import OXIFLOW_BIN, partitions, status

import oxiflow


def exercise(state: oxiflow.State) -> None:
    """Create, claim, checkpoint, complete, the store primitive: the same on every kind."""
    state.create_pipeline("p", steps=["a:2", "b"])
    with state.claim("p", worker="w1") as lease:
        assert lease.partition.startswith("a@")
        lease.checkpoint(last_id="x-3", records=3)
        with pytest.raises(oxiflow.LeaseHeld):
            state.claim("p", lease.partition, worker="w2")
        lease.complete()
    part = partitions(state.view("p"))[lease.partition]
    assert (status(part), part["records_processed"], part["last_processed_id"]) == ("completed", 3, "x-3")
    with pytest.raises(oxiflow.NotReady):
        state.claim("p", "b", worker="w1")
    assert state.list_pipelines() == ["p"]
    store = state.store
    v = store.put("app/k", b"1")
    with pytest.raises(oxiflow.Conflict):
        store.put("app/k", b"2")
    store.put("app/k", b"2", version=v)
    found = store.get("app/k")
    assert found is not None and found[0] == b"2"
    assert store.list("app/") == ["app/k"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`oxiflow serve` on a local directory, on a free port, with a token."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OXIFLOW_BACKEND=f"file://{tmp_path / 'served'}", OXIFLOW_SERVE_TOKEN="secret-token-0123456789")
    proc = subprocess.Popen([str(OXIFLOW_BIN), "serve", "--listen", f"127.0.0.1:{port}"], env=env, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert proc.poll() is None, "oxiflow serve exited"
                assert time.monotonic() < deadline, "oxiflow serve did not answer"
                time.sleep(0.1)  # polling for the listener
        yield url
    finally:
        proc.terminate()
        proc.wait()


def test_a_running_oxiflow_serve(served: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OXIFLOW_TOKEN", "wrong")
    with pytest.raises(oxiflow.InvalidInput, match="access denied .*wrong bearer token; check the credentials"):
        oxiflow.State(served).list_pipelines()
    monkeypatch.setenv("OXIFLOW_TOKEN", "secret-token-0123456789")
    exercise(oxiflow.State(served))


def test_redis() -> None:
    url = os.environ.get("OXIFLOW_TEST_REDIS_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("OXIFLOW_TEST_REDIS_URL is not set: scripts/test.sh starts redis-server before the Python tests")
        pytest.skip("OXIFLOW_TEST_REDIS_URL is not set (scripts/servers.sh; start_redis)")
    exercise(oxiflow.State(f"{url}?prefix=py-{uuid.uuid4().hex[:12]}"))
