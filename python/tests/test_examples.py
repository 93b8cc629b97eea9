"""The examples run as written: three drain_orders.py processes share the work exactly once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO, Store, partitions, status

EXAMPLES = REPO / "python" / "examples"


def test_drain_orders_with_three_processes(store: Store, tmp_path: Path) -> None:
    env = store.env()
    env.pop("OXIFLOW_BACKEND")
    args = [store.url] if not store.options else []
    if store.options:  # S3: the URL and endpoint from OXIFLOW_*, as a deployment would set them
        env["OXIFLOW_BACKEND"] = store.url
    # One process creates the SQLite source first, so the others do not race on its schema.
    import importlib.util

    spec = importlib.util.spec_from_file_location("drain_orders", EXAMPLES / "drain_orders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.source(str(tmp_path / "orders.sqlite")).close()
    procs = [
        subprocess.Popen([sys.executable, str(EXAMPLES / "drain_orders.py"), *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip() == "orders: completed, 10027 records", out
    view = store.state().view("orders")
    parts = partitions(view)
    assert all(status(p) == "completed" for p in parts.values())
    assert sum(parts[f"extract@{i}"]["records_processed"] for i in range(4)) == 10_000
    assert parts["extract@1"]["last_processed_id"] == "9997"
    db = sqlite3.connect(tmp_path / "orders.sqlite")
    assert db.execute("SELECT COUNT(*), SUM(amount_cents) FROM copied").fetchone() == db.execute("SELECT COUNT(*), SUM(amount_cents) FROM orders").fetchone()
    assert parts["load"]["extra"] == {"days": "27"}


def test_shared_counter(store: Store, tmp_path: Path) -> None:
    env = store.env()
    outs = []
    for _ in range(3):
        done = subprocess.run([sys.executable, str(EXAMPLES / "shared_counter.py")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outs.append(done.stdout.strip())
    assert outs == [f"myapp/counters/runs.json = {n}" for n in (1, 2, 3)]
