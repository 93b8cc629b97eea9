"""State: pipelines, plans, views, export and import, configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Store, partitions, status

import oxiflow


def test_create_view_and_list(state: oxiflow.State) -> None:
    doc = state.create_pipeline(
        "orders",
        steps=[
            {"step": "extract", "shards": 2},
            {"step": "transform", "shards": 2, "after": ["extract"], "aligned": True},
            {"step": "index", "after": ["extract"]},
            {"step": "load", "after": ["transform", "index"]},
        ],
        run_id="2026-11-27",
    )
    assert doc["pipeline_id"] == "orders" and doc["run_id"] == "2026-11-27"
    assert doc["steps"][1] == {"step_id": "transform", "shards": 2, "after": [{"step_id": "extract", "kind": "aligned"}]}
    view = state.view("orders")
    assert view["status"] == "pending" and view["frontier"] == ["extract"]
    parts = partitions(view)
    assert sorted(parts) == ["extract@0", "extract@1", "index", "load", "transform@0", "transform@1"]
    assert parts["transform@1"]["readiness"] == {"state": "waiting", "on": ["extract@1"], "count": 1}
    assert parts["index"]["readiness"]["on"] == ["extract@0", "extract@1"]
    # Creating again with the same plan changes nothing; another plan is refused.
    state.create_pipeline("orders", steps=doc_steps(doc), run_id="2026-11-27")
    with pytest.raises(oxiflow.InvalidInput, match="exists with another plan"):
        state.create_pipeline("orders", steps=["extract"])
    state.create_pipeline("audit", steps=["a"])
    assert state.list_pipelines() == ["audit", "orders"]


def doc_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan of a pipeline document in create_pipeline's shape."""
    out = []
    for s in doc["steps"]:
        after = [d["step_id"] + (":aligned" if d.get("kind") == "aligned" else "") for d in s.get("after", [])]
        out.append({"step": s["step_id"], "shards": s.get("shards"), "after": after})
    return out


def test_a_list_of_names_is_a_chain_and_after_overrides(local_state: oxiflow.State) -> None:
    doc = local_state.create_pipeline("chain", steps=["a:3", "b", {"name": "c", "after": []}, {"step": "d", "after": "a:aligned", "shards": 3}])
    assert [(s["step_id"], s.get("shards"), s.get("after", [])) for s in doc["steps"]] == [
        ("a", 3, []),
        ("b", None, [{"step_id": "a"}]),
        ("c", None, []),
        ("d", 3, [{"step_id": "a", "kind": "aligned"}]),
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "at least one step"),
        ("extract", "not one string"),
        (["a:0"], "shards must be a positive number"),
        ([{"step": "a", "shards": 0}], "positive integer"),
        ([{"step": "a", "shard": 2}], "unknown step key"),
        ([{"shards": 2}], "needs \"step\""),
        (["a", {"step": "b", "after": ["c"]}], "c, which is not one of the steps"),
        (["a", {"step": "b", "after": ["a:sideways"]}], "a:aligned"),
        (["a", "a"], "listed twice"),
        ([{"step": "a", "after": ["b"]}, {"step": "b", "after": ["a"]}], "cycle"),
        (["a:2", {"step": "b", "shards": 3, "after": ["a:aligned"]}], "shard"),
        ([42], "a string"),
        (["bad step!"], "step id"),
    ],
)
def test_bad_plans_are_invalid_input(local_state: oxiflow.State, steps: Any, message: str) -> None:
    with pytest.raises(oxiflow.InvalidInput, match=message) as err:
        local_state.create_pipeline("p", steps=steps)
    assert err.value.exit_code == 2
    assert local_state.list_pipelines() == []


def test_export_then_import_into_another_store(state: oxiflow.State, tmp_path: Path) -> None:
    state.create_pipeline("orders", steps=["extract:2", "load"])
    with state.claim("orders", "extract@0", worker="w1") as lease:
        lease.checkpoint(last_id="e-100", records=100, bytes=4096, extra={"source": "db"})
        lease.complete()
    export = state.export("orders")
    assert export["kind"] == "oxiflow-state-export" and len(export["partitions"]) == 3
    other = oxiflow.State(f"file://{tmp_path / 'other'}")
    assert other.import_(export) == {"partitions": 3, "replaced": False, "discarded_records": 0}
    view = other.view("orders")
    assert view["records_processed"] == 100 and status(partitions(view)["extract@0"]) == "completed"
    assert partitions(view)["extract@0"]["extra"] == {"source": "db"}
    # Over an existing pipeline: refused unless replace; the JSON text works too.
    with pytest.raises(oxiflow.Conflict, match="already exists"):
        other.import_(export)
    import json

    assert other.import_(json.dumps(export), replace=True)["replaced"] is True
    with pytest.raises(oxiflow.InvalidInput, match="not an oxiflow export"):
        other.import_({"kind": "something else"})


def test_view_of_a_missing_pipeline_is_not_found(state: oxiflow.State) -> None:
    with pytest.raises(oxiflow.NotFound) as err:
        state.view("nope")
    assert err.value.exit_code == 3 and "nope" in str(err.value)


def test_no_url_reads_the_config_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".oxiflow").mkdir()
    (tmp_path / ".oxiflow" / "config.yaml").write_text("state:\n  url: ./${SUB:-kept}\n  lease_ttl: 45s\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    state = oxiflow.State()
    assert Path(state.url[len("file://") :]).resolve() == tmp_path / "kept"
    assert state.config_file == str(tmp_path / ".oxiflow" / "config.yaml")
    state.create_pipeline("p", steps=["a"])
    assert (tmp_path / "kept" / "pipelines" / "p" / "pipeline.json").is_file()
    monkeypatch.setenv("OXIFLOW_BACKEND", "memory://")
    assert oxiflow.State().url == "memory://"
    assert oxiflow.State(str(tmp_path / "explicit")).url == f"file://{tmp_path / 'explicit'}", "a URL argument wins, like --backend"


def test_nothing_configured_is_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert oxiflow.State().url == f"file://{tmp_path / '.oxiflow' / 'state'}"


def test_a_broken_config_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".oxiflow").mkdir()
    config = tmp_path / ".oxiflow" / "config.yaml"
    config.write_text("state:\n  url: [unclosed\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(oxiflow.ConfigError, match="config.yaml:") as err:
        oxiflow.State()
    assert isinstance(err.value, oxiflow.InvalidInput) and err.value.exit_code == 2
    config.write_text("state:\n  lease_tl: 30s\n")
    with pytest.raises(oxiflow.ConfigError, match="unknown field `lease_tl`"):
        oxiflow.State()
    config.write_text("state:\n  url: s3://${NO_SUCH_VARIABLE_SET}/x\n")
    with pytest.raises(oxiflow.ConfigError, match="NO_SUCH_VARIABLE_SET is not set"):
        oxiflow.State()
    with pytest.raises(oxiflow.ConfigError, match="cannot read .*missing.yaml"):
        oxiflow.State(config=str(tmp_path / "missing.yaml"))
    config.write_text("state:\n  url: ./here\n")
    monkeypatch.setenv("OXIFLOW_LEASE_TTL", "soon")
    with pytest.raises(oxiflow.ConfigError, match="environment variable OXIFLOW_LEASE_TTL"):
        oxiflow.State()


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("ftp://host/x", {}, "unknown scheme"),
        ("memory://", {"lease_tll": "30s"}, "unknown option 'lease_tll'|unknown option \"lease_tll\""),
        ("memory://", {"lease_ttl": "soon"}, "not a duration"),
        ("memory://", {"lease_ttl": "10s", "heartbeat_interval": "20s"}, "heartbeat interval"),
        ("memory://", {"lease_ttl": "1s"}, "too short"),
        ("memory://", {"max_attempts": 0}, "at least 1"),
        ("memory://", {"history_keep_last": -1}, "whole number"),
    ],
)
def test_bad_urls_and_options_are_invalid_input(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(oxiflow.InvalidInput, match=message):
        oxiflow.State(url, **options)


def test_options_in_every_form(tmp_path: Path) -> None:
    import datetime

    for ttl in ("10s", 10, 10.0, datetime.timedelta(seconds=10)):
        state = oxiflow.State(f"file://{tmp_path}", lease_ttl=ttl)
        state.create_pipeline("p", steps=["a"])
        with state.claim("p", "a", worker="w") as lease:
            assert lease.doc["lease"]["ttl_ms"] == 10_000, ttl
            lease.release()


def test_store_url_for_every_kind(store: Store) -> None:
    state = store.state()
    assert state.url == store.url
    assert repr(state) == f'oxiflow.State("{store.url}")'
