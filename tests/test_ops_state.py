"""Which collection serves a model lives in Milvus itself, on Milvus Lite and on the server.

The re-embed story depends on it: queries read the active collection, the
embedder writes the target, a cancelled replay holds the writers, a forced
one re-embeds unchanged tracks, and another client of the same Milvus sees a
switch within the state cache's few seconds.
"""

from __future__ import annotations

import pytest

from pipeline.store import ModelState, ReplayPaused, VectorStore, WriteTarget


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

    store.set_model_state(
        ModelState("musicnn", default, fresh, {"id": "r1", "status": "running", "force": True})
    )
    assert store.write_target("musicnn") == WriteTarget(fresh, force=True)
    store.set_model_state(ModelState("musicnn", default, fresh, {"status": "cancelled"}))
    with pytest.raises(ReplayPaused, match="--resume"):
        store.write_target("musicnn")

    other = VectorStore(store.settings, store.uri)  # another client (process) of this Milvus
    try:
        other.state_ttl_s = 0.0
        store.set_model_state(ModelState("musicnn", fresh, fresh, {"status": "completed"}))
        assert other.active_collection("musicnn") == fresh
        assert other.write_target("musicnn") == WriteTarget(fresh, force=False)
        assert other.active_collection("mert") == other.collection_name("mert")
    finally:
        other.close()
