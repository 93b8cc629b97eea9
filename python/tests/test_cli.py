"""The CLI and Python read and write the same state, and fail the same way."""

from __future__ import annotations

import pytest
from conftest import Cli, Store, partitions, status

import oxiflow


def test_python_reads_what_the_cli_wrote(cli: Cli, store: Store) -> None:
    cli.run("state", "create", "orders", "--step", "extract:2", "--step", "load", "--after", "load=extract")
    cli.run("claim", "orders", "extract@0", "--worker", "cli-w")
    cli.run("checkpoint", "orders", "extract@0", "--worker", "cli-w", "--last-id", "o-500", "--add-records", "500")
    state = store.state()
    assert state.list_pipelines() == ["orders"]
    part = partitions(state.view("orders"))["extract@0"]
    assert (part["last_processed_id"], part["records_processed"], part["worker_id"]) == ("o-500", 500, "cli-w")
    with pytest.raises(oxiflow.LeaseHeld):
        state.claim("orders", "extract@0", worker="py-w")
    cli.run("checkpoint", "orders", "extract@0", "--worker", "cli-w", "--complete")
    with state.claim("orders", worker="py-w") as lease:
        assert lease.partition == "extract@1"
        lease.complete(last_id="o-900", records=400)
    # The view is the CLI's `state show --json`, field for field.
    assert state.view("orders") == cli.json("state", "show", "orders")


def test_the_cli_reads_what_python_wrote(cli: Cli, store: Store) -> None:
    state = store.state()
    state.create_pipeline("p", steps=[{"step": "a", "shards": 2}, {"step": "b", "shards": 2, "after": ["a:aligned"]}])
    with state.claim("p", "a@1", worker="py-w") as lease:
        lease.checkpoint(last_id="x-7", records=7)
        code, message = cli.error("claim", "p", "a@1", "--worker", "cli-w")
        assert code == oxiflow.LeaseHeld.exit_code == 5
        assert "py-w" in message
        lease.complete()
    cli.run("claim", "p", "b@1", "--worker", "cli-w")  # its aligned upstream a@1 is done
    shown = cli.json("state", "show", "p")
    assert partitions(shown)["a@1"]["records_processed"] == 7 and status(partitions(shown)["a@1"]) == "completed"
    assert shown == state.view("p")
    assert cli.json("state", "list")[0]["pipeline_id"] == "p"
    exported = cli.json("state", "export", "p")
    assert exported == state.export("p")


def test_a_stop_request_from_the_cli_stops_the_python_holder(cli: Cli, store: Store) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    lease = state.claim("p", "s", worker="py-w")
    lease.checkpoint(last_id="1", records=1)
    cli.run("worker", "stop", "--worker-id", "py-w")
    with pytest.raises(oxiflow.Stopped, match="saved, then stopped") as err:
        lease.checkpoint(last_id="2", records=1)
    assert err.value.exit_code == 11 and lease.ended == "stopped"
    part = partitions(state.view("p"))["s"]
    assert (part["last_processed_id"], part["records_processed"]) == ("2", 2), "the checkpoint landed before the release"
    with state.claim("p", "s", worker="py-w2") as again:
        assert again.bookmark == "2"
        again.release()


def test_a_stop_request_before_the_completion(cli: Cli, store: Store) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    lease = state.claim("p", "s", worker="py-w")
    cli.run("worker", "stop", "--worker-id", "py-w")
    lease.complete(last_id="9", records=9)  # the work is done: a stop request does not undo it
    assert lease.ended == "completed"
    part = partitions(state.view("p"))["s"]
    assert (status(part), part["records_processed"]) == ("completed", 9)


@pytest.mark.parametrize(
    ("args", "call", "cls"),
    [
        (["state", "show", "no/such"], lambda s: s.view("no/such"), oxiflow.InvalidInput),
        (["state", "show", "missing"], lambda s: s.view("missing"), oxiflow.NotFound),
        (["claim", "p", "t", "--worker", "w"], lambda s: s.claim("p", "t", worker="w"), oxiflow.NotReady),
        (["claim", "p", "s", "--worker", "bad worker"], lambda s: s.claim("p", "s", worker="bad worker"), oxiflow.InvalidInput),
    ],
)
def test_same_failure_same_code_same_message(cli: Cli, store: Store, args: list[str], call: object, cls: type) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s", "t"])
    code, message = cli.error(*args)
    with pytest.raises(cls) as err:
        call(state)  # type: ignore[operator]
    assert err.value.exit_code == code
    assert str(err.value) == message
