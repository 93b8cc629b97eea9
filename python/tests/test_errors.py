"""Every exception from a real condition, with the CLI's exit code."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import boto3
import pytest
from conftest import S3, Store

import oxiflow


def write_raw(store: Store, key: str, body: bytes, tmp_path: Path) -> None:
    """Puts bytes straight into the store, past oxiflow."""
    if store.kind == "local":
        path = tmp_path / "state" / key
        path.write_bytes(body)
        return
    bucket, prefix = store.url[len("s3://") :].split("/", 1)
    client = boto3.client("s3", endpoint_url=store.options["endpoint"], region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)


def test_a_corrupt_document_is_corrupt_and_never_overwritten(store: Store, tmp_path: Path) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s", "t"])
    key = "pipelines/p/partitions/s.json"
    write_raw(store, key, b'{"format_version": 3, "garbage": tru', tmp_path)
    with pytest.raises(oxiflow.Corrupt, match=key) as err:
        state.view("p")
    assert err.value.exit_code == 7
    with pytest.raises(oxiflow.Corrupt):
        state.claim("p", "s", worker="w1")
    with pytest.raises(oxiflow.Corrupt):
        state.claim("p", worker="w1")
    found = state.store.get(key)
    assert found is not None and found[0] == b'{"format_version": 3, "garbage": tru', "nothing overwrote it"


def test_a_checksum_mismatch_is_corrupt(store: Store, tmp_path: Path) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    key = "pipelines/p/partitions/s.json"
    found = state.store.get(key)
    assert found is not None
    doc = json.loads(found[0])
    doc["records_processed"] = 1_000_000  # a bit flip the checksum catches
    write_raw(store, key, json.dumps(doc).encode(), tmp_path)
    with pytest.raises(oxiflow.Corrupt):
        state.claim("p", "s", worker="w1")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections are refused


def test_a_dead_endpoint_is_unavailable(s3: S3) -> None:
    state = oxiflow.State(f"s3://{s3.bucket}/x", endpoint=f"http://127.0.0.1:{closed_port()}", allow_http=True)
    started = time.monotonic()
    with pytest.raises(oxiflow.Unavailable, match="unavailable") as err:
        state.list_pipelines()
    assert err.value.exit_code == 8
    with pytest.raises(oxiflow.Unavailable):
        state.store.get("app/x")
    assert time.monotonic() - started < 120


def test_a_dead_redis_is_unavailable() -> None:
    state = oxiflow.State(f"redis://127.0.0.1:{closed_port()}/0?timeout_ms=500")
    with pytest.raises(oxiflow.Unavailable):
        state.view("p")


def test_bad_ids_are_invalid_input(local_state: oxiflow.State) -> None:
    for call in (
        lambda: local_state.view("no/slash"),
        lambda: local_state.create_pipeline("..", steps=["a"]),
        lambda: local_state.claim("p", "bad step!", worker="w"),
        lambda: local_state.create_pipeline("p", steps=["a"], run_id="run 1"),
        lambda: local_state.export("-flag"),
    ):
        with pytest.raises(oxiflow.InvalidInput) as err:
            call()
        assert err.value.exit_code == 2 and err.value.kind == "invalid"


def test_the_hierarchy_and_codes() -> None:
    codes = {
        oxiflow.Error: 1,
        oxiflow.InvalidInput: 2,
        oxiflow.ConfigError: 2,
        oxiflow.NotFound: 3,
        oxiflow.Conflict: 4,
        oxiflow.LeaseHeld: 5,
        oxiflow.Fenced: 6,
        oxiflow.Corrupt: 7,
        oxiflow.Unavailable: 8,
        oxiflow.NotReady: 9,
        oxiflow.Finished: 10,
        oxiflow.Stopped: 11,
    }
    for cls, code in codes.items():
        assert issubclass(cls, oxiflow.Error) and cls.exit_code == code
    assert not issubclass(oxiflow.Finished, oxiflow.NotReady), "a loop catching NotReady must not spin on Finished"


def test_a_store_that_goes_away_mid_lease_is_unavailable_and_the_call_can_be_repeated(s3: S3) -> None:
    """The endpoint dies while a lease is held: checkpoint and complete raise Unavailable and keep the
    lease; once it is back, the same calls go through and nothing is counted twice."""
    from urllib.parse import urlparse

    from proxy import Proxy

    up = urlparse(s3.endpoint)
    proxy = Proxy((up.hostname or "127.0.0.1", up.port or 80))
    url = f"s3://{s3.bucket}/py-cut-{int(time.time() * 1000)}"
    state = oxiflow.State(url, endpoint=proxy.endpoint, allow_http=True)
    state.create_pipeline("p", steps=["s"])
    lease = state.claim("p", "s", worker="w1")
    lease.checkpoint(last_id="10", records=10)
    proxy.cut()
    with pytest.raises(oxiflow.Unavailable):
        lease.checkpoint(last_id="20", records=10)
    assert lease.active, "an unavailable store does not end the lease"
    with pytest.raises(oxiflow.Unavailable):
        lease.complete(last_id="25", records=5)
    assert lease.active
    proxy.restore()
    lease.complete(last_id="25", records=5)
    assert lease.ended == "completed"
    reader = oxiflow.State(url, endpoint=s3.endpoint, allow_http=True)
    part = reader.view("p")["steps"][0]["partitions"][0]
    # The checkpoint whose outcome was unknown is replayed once before the completion: 10 + 10 + 5.
    assert (part["last_processed_id"], part["records_processed"], part["batch_number"]) == ("25", 25, 2)
