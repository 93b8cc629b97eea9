"""Ctrl-C while a checkpoint is in flight: the write is not abandoned, and what the caller is told matches the store.

A real process (interrupted.py) checkpoints in a loop through a proxy; once
the proxy holds one of its requests (the slow store), the test sends SIGINT.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple
from urllib.parse import urlparse

from conftest import S3, partitions, status
from proxy import Proxy

import oxiflow

HERE = Path(__file__).resolve().parent
DELAY = 1.5  # seconds the slow store holds every chunk of a request


def interrupt_mid_write(s3: S3, cut: bool) -> Tuple[Dict[str, Any], List[str], oxiflow.State]:
    """Runs interrupted.py through a proxy, SIGINTs it while a checkpoint's request is held (then
    cuts the proxy if ``cut``: the request never reaches the store). Returns its report, its
    "ok" lines after the first three, and a State on the store itself."""
    up = urlparse(s3.endpoint)
    proxy = Proxy((up.hostname or "127.0.0.1", up.port or 80))
    url = f"s3://{s3.bucket}/py-sigint-{uuid.uuid4().hex[:12]}"
    reader = oxiflow.State(url, endpoint=s3.endpoint, allow_http=True)
    reader.create_pipeline("p", steps=["s"])
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "interrupted.py"), url, proxy.endpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "claimed"
        for n in range(1, 4):  # a few checkpoints at full speed
            assert proc.stdout.readline().strip() == f"ok {n}"
        proxy.holding.clear()
        proxy.delay = DELAY
        assert proxy.holding.wait(timeout=30), "no request reached the slow store"
        proc.send_signal(signal.SIGINT)  # a checkpoint's request is held by the proxy: mid-write
        if cut:
            proxy.cut()  # the held chunk is dropped, and nothing answers any more
        else:
            proxy.delay = 0.0  # the held chunk still waits out its delay; the release after it is quick
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines, err
    report: Dict[str, Any] = json.loads(lines[-1])
    oks = [line for line in lines[:-1] if line.startswith("ok ")]
    assert report["returned"] == 3 + len(oks)
    return report, oks, reader


def test_sigint_during_a_checkpoint_that_lands_says_it_was_saved(s3: S3) -> None:
    report, _, reader = interrupt_mid_write(s3, cut=False)
    # The interrupted checkpoint landed (the store answered after the delay), and the caller was told so.
    assert report["type"] == "Interrupted", report
    assert report["saved"] is True, report
    assert "was saved" in report["message"], report
    part = partitions(reader.view("p"))["s"]
    acknowledged = report["returned"] + 1
    assert part["records_processed"] == acknowledged
    assert part["last_processed_id"] == str(acknowledged)
    # Leaving the block on the interrupt released the lease without counting a failure.
    assert status(part) != "running" and part["failures"] == 0 and part["readiness"]["state"] == "ready"


def test_sigint_during_a_checkpoint_that_never_arrives_does_not_claim_it(s3: S3) -> None:
    report, _, reader = interrupt_mid_write(s3, cut=True)
    # The store never answered: the caller is told the outcome is unknown, not that it was saved.
    assert report["type"] == "Interrupted", report
    assert report["saved"] is None, report
    assert "may or may not be saved" in report["message"], report
    part = partitions(reader.view("p"))["s"]
    # It did not arrive (the proxy dropped it): what is stored is exactly what returned.
    assert (part["records_processed"], part["last_processed_id"]) == (report["returned"], str(report["returned"]))
