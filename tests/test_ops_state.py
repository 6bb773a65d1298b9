"""Which collection serves a model lives in Milvus itself, on Milvus Lite and on the server.

The re-embed story depends on it: queries read the active collection, the
embedder writes the target, a cancelled replay holds the writers, a forced
one re-embeds unchanged tracks, and another client of the same Milvus sees a
switch within the state cache's few seconds.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from pipeline.store import ModelState, Replay, ReplayPaused, ReplayStatus, VectorStore, WriteTarget


def replay(status: ReplayStatus, collection: str, force: bool = False) -> Replay:
    return Replay(
        id="r1", model="musicnn", group="embed-musicnn", topic="tracks", status=status,
        force=force, previous_collection="sonicbus_musicnn", collection=collection,
        start={0: 0}, end={0: 10}, started_at=datetime.now(UTC),
    )  # fmt: skip


def test_model_state_defaults_switches_holds_and_is_seen_by_other_clients(
    store: VectorStore,
) -> None:
    default = store.collection_name("musicnn")
    assert store.active_collection("musicnn") == store.target_collection("musicnn") == default
    assert store.write_target("musicnn") == WriteTarget(default, force=False)
    assert not store.has_collection(store.state_collection)  # reading creates nothing

    fresh = f"{default}_20250101000000"
    store.set_collections("musicnn", active=default, target=fresh)
    assert (store.active_collection("musicnn"), store.target_collection("musicnn")) == (
        default,
        fresh,
    )

    store.set_model_state(ModelState("musicnn", default, fresh, replay("running", fresh, True)))
    assert store.write_target("musicnn") == WriteTarget(fresh, force=True)
    store.set_model_state(ModelState("musicnn", default, fresh, replay("cancelled", fresh)))
    with pytest.raises(ReplayPaused, match="--resume"):
        store.write_target("musicnn")

    other = VectorStore(store.settings, store.uri)  # another client (process) of this Milvus
    try:
        other.state_ttl_s = 0.0
        store.set_model_state(ModelState("musicnn", fresh, fresh, replay("completed", fresh)))
        assert other.active_collection("musicnn") == fresh
        assert other.write_target("musicnn") == WriteTarget(fresh, force=False)
        seen = other.model_state("musicnn").replay
        assert seen is not None and (seen.id, seen.status) == ("r1", "completed")
        assert other.active_collection("mert") == other.collection_name("mert")
    finally:
        other.close()


def test_a_read_that_overlaps_this_process_s_own_switch_does_not_hide_it(
    lite_store: VectorStore,
) -> None:
    """An embedder's replay watcher reads the state while its upgrade check moves the
    target (same store, two threads): the read, begun before the switch and done after
    it, must not put the old target back in the cache the embedder writes by."""
    store, old = lite_store, lite_store.collection_name("musicnn")
    store.set_collections("musicnn", old, old)
    new = f"{old}_20261202000000"
    read_done, switched = threading.Event(), threading.Event()
    real_call = store.call

    def slow_read(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_call(fn, *args, **kwargs)
        if fn == store.client.query and threading.current_thread().name == "watcher":
            read_done.set()  # it has seen `old`; the switch lands before it is cached
            assert switched.wait(10)
        return result

    store.call = slow_read  # type: ignore[method-assign]
    seen: list[str] = []
    watcher = threading.Thread(
        target=lambda: seen.append(store.model_state("musicnn", fresh=True).target),
        name="watcher",
    )
    watcher.start()
    assert read_done.wait(10)
    store.set_collections("musicnn", old, new)
    switched.set()
    watcher.join(10)
    assert seen == [new]  # the later view wins over what the slow read saw
    assert store.target_collection("musicnn") == new
    assert store.write_target("musicnn") == WriteTarget(new, force=False)


def test_a_state_row_written_before_the_typed_state_still_loads(lite_store: VectorStore) -> None:
    """The row holds `Replay.model_dump(mode="json")` (or `{}`): an install's existing
    rows, written as plain JSON, load as typed states and are written back the same."""
    lite_store.set_collections("mert", "sonicbus_mert", "sonicbus_mert")  # creates the table
    stored = {
        "id": "0123456789ab", "model": "musicnn", "group": "sonicbus-embed-musicnn",
        "topic": "sonicbus.tracks", "status": "cancelled", "fresh": True, "force": False,
        "drop_old": False, "since": None, "previous_collection": "sonicbus_musicnn",
        "collection": "sonicbus_musicnn_20250101000000", "start": {"0": 0, "1": 3},
        "end": {"0": 40, "1": 38}, "started_at": "2025-01-01T00:00:00Z",
        "cancelled_at": "2025-01-01T00:05:00Z", "finished_at": None, "note": "",
    }  # fmt: skip
    rows = [
        {"model": "musicnn", "active": "sonicbus_musicnn", "vector": [0.0, 0.0],
         "target": "sonicbus_musicnn_20250101000000", "replay": stored},
        {"model": "muq", "active": "sonicbus_muq", "target": "sonicbus_muq", "replay": {},
         "vector": [0.0, 0.0]},
    ]  # fmt: skip
    lite_store.client.upsert(lite_store.state_collection, rows)

    state = lite_store.model_state("musicnn", fresh=True)
    assert state.replay is not None and state.replay.status == "cancelled"
    assert state.replay.start == {0: 0, 1: 3} and state.replay.total == 75
    assert state.replay.cancelled_at == datetime(2025, 1, 1, 0, 5, tzinfo=UTC)
    with pytest.raises(ReplayPaused):
        lite_store.write_target("musicnn")
    assert lite_store.model_state("muq", fresh=True) == ModelState(
        "muq", "sonicbus_muq", "sonicbus_muq", None
    )

    lite_store.set_model_state(state)  # written back: the same JSON
    (row,) = lite_store.client.query(
        lite_store.state_collection, filter='model == "musicnn"', output_fields=["replay"]
    )
    assert row["replay"] == stored
