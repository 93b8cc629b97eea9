"""Store: the compare-and-swap primitive for integrations."""

from __future__ import annotations

import json

import pytest
from conftest import Store

import oxiflow


def test_create_read_replace_delete_list(store: Store) -> None:
    s = store.state().store
    assert s.get("myapp/jobs/a.json") is None
    v1 = s.put("myapp/jobs/a.json", b'{"n": 1}')
    assert s.get("myapp/jobs/a.json") == (b'{"n": 1}', v1)
    with pytest.raises(oxiflow.Conflict, match="already exists") as err:
        s.put("myapp/jobs/a.json", b"again")  # create only if absent
    assert err.value.exit_code == 4
    v2 = s.put("myapp/jobs/a.json", b'{"n": 2}', version=v1)
    assert v2 != v1 and s.get("myapp/jobs/a.json") == (b'{"n": 2}', v2)
    with pytest.raises(oxiflow.Conflict, match="changed since it was read"):
        s.put("myapp/jobs/a.json", b'{"n": 3}', version=v1)  # a stale version loses
    assert s.get("myapp/jobs/a.json") == (b'{"n": 2}', v2)
    s.put("myapp/jobs/b.json", bytes(range(256)))
    s.put("myapp/other.json", b"")
    assert s.list("myapp/jobs/") == ["myapp/jobs/a.json", "myapp/jobs/b.json"]
    assert s.list("myapp/") == ["myapp/jobs/a.json", "myapp/jobs/b.json", "myapp/other.json"]
    assert s.get("myapp/jobs/b.json") is not None and s.get("myapp/jobs/b.json")[0] == bytes(range(256))  # type: ignore[index]
    s.delete("myapp/jobs/a.json")
    s.delete("myapp/jobs/a.json")  # absent: not an error
    assert s.get("myapp/jobs/a.json") is None
    with pytest.raises(oxiflow.Conflict):
        s.put("myapp/jobs/a.json", b"x", version=v2)  # deleted: no version matches
    assert s.list("myapp/jobs/") == ["myapp/jobs/b.json"]


def test_keys_beside_oxiflow_documents(store: Store) -> None:
    state = store.state()
    state.create_pipeline("p", steps=["s"])
    s = state.store
    s.put("myapp/k.json", b"1")
    assert state.list_pipelines() == ["p"], "own keys are not pipelines"
    assert "pipelines/p/pipeline.json" in s.list("")
    found = s.get("pipelines/p/pipeline.json")
    assert found is not None and json.loads(found[0])["pipeline_id"] == "p"
    with pytest.raises(oxiflow.InvalidInput, match="under pipelines/"):
        s.put("pipelines/p/pipeline.json", b"{}", version=found[1])
    with pytest.raises(oxiflow.InvalidInput, match="under pipelines/"):
        s.delete("pipelines/p/partitions/s.json")
    assert state.view("p")["pipeline_id"] == "p"


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a//b", "a/", "a/../b", "a/.hidden", "sp ace", "a\nb", "x" * 256, "ü"],
)
def test_bad_keys_are_invalid_input(local_state: oxiflow.State, key: str) -> None:
    with pytest.raises(oxiflow.InvalidInput):
        local_state.store.put(key, b"x")
    with pytest.raises(oxiflow.InvalidInput):
        local_state.store.get(key)


def test_a_version_that_no_store_gave_is_invalid_input(local_state: oxiflow.State) -> None:
    with pytest.raises(oxiflow.InvalidInput, match="not a version"):
        local_state.store.put("k", b"x", version="v1")


def test_store_opens_like_state(store: Store) -> None:
    s = oxiflow.Store(store.url, **store.options)
    v = s.put("app/x", b"1")
    assert store.state().store.get("app/x") == (b"1", v)
    assert repr(s).startswith("oxiflow.Store(")


def test_compare_and_swap_counter_across_threads(store: Store) -> None:
    """Eight threads add 1 twenty times each through get + put(version): no increment is lost."""
    import threading

    s = store.state().store
    s.put("app/counter", b"0")

    def add() -> None:
        for _ in range(20):
            while True:
                found = s.get("app/counter")
                assert found is not None
                try:
                    s.put("app/counter", str(int(found[0]) + 1).encode(), version=found[1])
                    break
                except oxiflow.Conflict:
                    continue

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = s.get("app/counter")
    assert found is not None and found[0] == b"160"
