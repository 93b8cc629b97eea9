"""Fixtures for the oxiflow package's tests (and the Airflow and Dagster ones).

- ``s3``: the moto S3 server: ``OXIFLOW_TEST_S3_ENDPOINT`` / ``OXIFLOW_TEST_S3_BUCKET``
  when scripts/servers.sh started one, else one started here for the session.
- ``local_url`` / ``s3_url``: a fresh, empty store location per test;
  ``s3_options``: what ``oxiflow.State`` needs to reach moto.
- ``local_state`` / ``s3_state``: an ``oxiflow.State`` on each;
  ``state``: parametrised over both (a test using it runs twice).
- ``cli``: runs the ``oxiflow`` release binary (target/release/oxiflow) on a store.

AWS credentials for moto are set in the environment (inherited by the
subprocesses the tests start).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import oxiflow

REPO = Path(__file__).resolve().parents[2]
OXIFLOW_BIN = Path(os.environ.get("OXIFLOW_BIN", REPO / "target" / "release" / "oxiflow"))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_REGION", "us-east-1")
# The tests name their stores; a config file or OXIFLOW_* of the caller's must not leak in.
for _var in [v for v in os.environ if v.startswith("OXIFLOW_") and not v.startswith(("OXIFLOW_TEST_", "OXIFLOW_BIN"))]:
    del os.environ[_var]


@dataclass(frozen=True)
class S3:
    """Where moto listens and the bucket the tests use."""

    endpoint: str
    bucket: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(url: str, proc: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto exited during start ({proc.returncode})")
            time.sleep(0.1)  # polling for the server to listen, not papering over a race
    raise RuntimeError(f"moto did not answer at {url} within 30 s")


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    endpoint = os.environ.get("OXIFLOW_TEST_S3_ENDPOINT")
    bucket = os.environ.get("OXIFLOW_TEST_S3_BUCKET", "oxiflow-test")
    if endpoint:
        yield S3(endpoint, bucket)
        return
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "moto_server.py"), "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_http(endpoint + "/", proc)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"))
        yield S3(endpoint, bucket)
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def local_url(tmp_path: Path) -> str:
    """A local-directory store of its own (created by the first write)."""
    return f"file://{tmp_path / 'state'}"


@pytest.fixture
def s3_url(s3: S3) -> str:
    """A fresh prefix in the moto bucket."""
    return f"s3://{s3.bucket}/py-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3_options(s3: S3) -> Dict[str, Any]:
    """``State(s3_url, **s3_options)`` reaches moto."""
    return {"endpoint": s3.endpoint, "allow_http": True}


@pytest.fixture
def local_state(local_url: str) -> oxiflow.State:
    return oxiflow.State(local_url)


@pytest.fixture
def s3_state(s3_url: str, s3_options: Dict[str, Any]) -> oxiflow.State:
    return oxiflow.State(s3_url, **s3_options)


@dataclass
class Store:
    """A store location for a test: the URL, the options and what a subprocess needs."""

    kind: str
    url: str
    options: Dict[str, Any]

    def state(self, **more: Any) -> oxiflow.State:
        return oxiflow.State(self.url, **{**self.options, **more})

    def env(self) -> Dict[str, str]:
        """The environment under which the CLI (and a worker process) opens this store."""
        env = dict(os.environ, OXIFLOW_BACKEND=self.url)
        if "endpoint" in self.options:
            env.update(OXIFLOW_ENDPOINT=self.options["endpoint"], OXIFLOW_ALLOW_HTTP="true")
        return env


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each test using it runs on a local directory and on S3 (moto)."""
    if request.param == "local":
        return Store("local", f"file://{tmp_path / 'state'}", {})
    s3: S3 = request.getfixturevalue("s3")
    return Store("s3", f"s3://{s3.bucket}/py-{uuid.uuid4().hex[:12]}", {"endpoint": s3.endpoint, "allow_http": True})


@pytest.fixture
def state(store: Store) -> oxiflow.State:
    """An ``oxiflow.State`` on a local directory, then on S3."""
    return store.state()


@dataclass
class Cli:
    """The ``oxiflow`` binary on one store."""

    store: Store
    cwd: Path

    def run(self, *args: str, check: Optional[int] = 0) -> "subprocess.CompletedProcess[str]":
        done = subprocess.run(
            [str(OXIFLOW_BIN), *args], cwd=self.cwd, env=self.store.env(), capture_output=True, text=True, timeout=120
        )
        if check is not None:
            assert done.returncode == check, f"oxiflow {' '.join(args)}: exit {done.returncode}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run("--json", *args).stdout)

    def error(self, *args: str) -> "tuple[int, str]":
        """The exit code and the message of a failing command (``oxiflow: `` stripped)."""
        done = self.run(*args, check=None)
        assert done.returncode != 0, f"oxiflow {' '.join(args)} succeeded"
        return done.returncode, done.stderr.strip().removeprefix("oxiflow: ")


@pytest.fixture
def cli(store: Store, tmp_path: Path) -> Cli:
    if not OXIFLOW_BIN.exists():
        pytest.fail(f"{OXIFLOW_BIN} is missing: cargo build --release -p oxiflow first")
    return Cli(store, tmp_path)


def partitions(view: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The view's partitions by name (``step`` or ``step@shard``)."""
    return {p["partition"]: p for step in view["steps"] for p in step["partitions"]}


def status(part: Dict[str, Any]) -> str:
    """A partition's status by name: ``"pending"``, ``"running"``, ``"completed"``, ….

    The view (like ``state show --json``) gives a plain status as a string and
    one with details as ``{"completed": {"completed_at": …}}``.
    """
    s = part["status"]
    return s if isinstance(s, str) else next(iter(s))


__all__ = ["S3", "Store", "Cli", "partitions", "status", "REPO", "OXIFLOW_BIN"]
