"""The query service's read model of Milvus: in-memory indexes that agree with Milvus,
follow its changes, and fall back to Milvus searches when a library is too big to cache."""

from __future__ import annotations

import gc
import time
import weakref

import numpy as np
import pytest

from pipeline.config import QuerySettings
from pipeline.consumers.query import freeze_heap
from pipeline.recommender.library import Library, NotEmbedded
from pipeline.recommender.songs import catalog_of
from pipeline.schemas import EmbeddingEvent
from pipeline.schemas.queries import SongRef
from pipeline.store import StoredTrack, VectorRow, VectorStore, normalise


def rows(vectors: np.ndarray, start: int = 0) -> list[VectorRow]:
    return [
        VectorRow(f"t{start + i}", v, artist=f"a{(start + i) % 7}", title=f"s{start + i}")
        for i, v in enumerate(vectors)
    ]


def ten_track_library(store: VectorStore, seed: int) -> tuple[str, Library]:
    """`musicnn` with ten random 8-d tracks t0..t9, and a query library over it."""
    name = store.collection_name("musicnn")
    store.ensure_collection(name, dim=8)
    store.upsert(name, rows(np.random.default_rng(seed).normal(size=(10, 8)).astype(np.float32)))
    return name, Library(store, QuerySettings())


@pytest.fixture
def filled(lite_store: VectorStore) -> tuple[VectorStore, np.ndarray]:
    vectors = np.random.default_rng(3).normal(size=(3000, 24)).astype(np.float32)
    name = lite_store.collection_name("musicnn")
    lite_store.ensure_collection(name, dim=24)
    for start in range(0, 3000, 1000):
        lite_store.upsert(name, rows(vectors[start : start + 1000], start), flush=False)
    lite_store.flush(name)
    return lite_store, normalise(vectors)


def brute_force(vectors: np.ndarray, query: np.ndarray, k: int, skip: set[int]) -> list[str]:
    scores = vectors @ (query / np.linalg.norm(query))
    order = [i for i in np.argsort(-scores) if i not in skip]
    return [f"t{i}" for i in order[:k]]


def test_the_cached_index_and_milvus_rank_alike(filled) -> None:  # type: ignore[no-untyped-def]
    store, vectors = filled
    cached = Library(store, QuerySettings(cache="always")).index("musicnn")
    milvus = Library(store, QuerySettings(cache="never")).index("musicnn")
    assert cached.cache_vectors and not milvus.cache_vectors
    assert cached.size == milvus.size == 3000
    query = vectors[17] + vectors[99]
    expected = brute_force(vectors, query, 20, {17, 99})
    for index in (cached, milvus):
        hits = index.search(query[None, :], 20, exclude={"t17", "t99"})[0]
        assert [t for t, _ in hits] == expected
        assert index.info(["t5"])["t5"].artist == "a5"
        found, got = index.vectors(["t5", "nope", "t6"])
        assert found == ["t5", "t6"] and np.allclose(got, vectors[[5, 6]], atol=1e-6)


def test_removals_and_updates_show_in_searches_and_survive_compaction(filled) -> None:  # type: ignore[no-untyped-def]
    store, vectors = filled
    index = Library(store, QuerySettings()).index("musicnn")
    removed = {f"t{i}" for i in range(0, 3000, 2)}
    index.remove(removed)  # more than a quarter: the arrays are compacted
    assert index.size == 1500 and index.known(["t0", "t1"]) == ["t1"]
    query = vectors[0]
    hits = [t for t, _ in index.search(query[None, :], 10)[0]]
    assert hits == brute_force(vectors, query, 10, {int(t[1:]) for t in removed})
    index.upsert_rows([StoredTrack("t1", artist="new", vector=query)])
    assert index.search(query[None, :], 1)[0][0] == ("t1", pytest.approx(1.0, abs=1e-5))
    assert index.info(["t1"])["t1"].artist == "new"


def test_an_index_follows_announced_changes_and_reconciles_missed_ones(lite_store) -> None:  # type: ignore[no-untyped-def]
    name, library = ten_track_library(lite_store, seed=1)
    index = library.index("musicnn")
    lite_store.upsert(name, [VectorRow("new", np.ones(8), artist="fresh")])
    lite_store.delete(name, ["t3"])

    def event(track_id: str, status: str) -> EmbeddingEvent:
        return EmbeddingEvent(track_id=track_id, model="musicnn", model_version="v",
                              status=status, collection=name)  # fmt: skip

    library.note(event("new", "embedded"))
    library.note(event("t3", "deleted"))
    library.note(event("t4", "skipped_unchanged"))  # known already: nothing to do
    assert library.apply_pending() == 2
    assert index.known(["new", "t3", "t4"]) == ["new", "t4"]
    # Stored by an embedder killed before it announced it; its successor says "unchanged".
    lite_store.upsert(name, [VectorRow("orphan", np.ones(8), artist="late")])
    library.note(event("orphan", "skipped_unchanged"))
    assert library.apply_pending() == 1
    assert index.known(["orphan"]) == ["orphan"]
    # A change nobody announced (the service was down) is found by the count check: the
    # first check notes the gap (announcements in flight explain most), the same gap at
    # the next one rebuilds.
    lite_store.delete(name, ["t5", "t6"])
    assert library.reconcile() == []
    assert library.reconcile() == ["musicnn"]
    assert library.index("musicnn").known(["t5", "t6", "t7"]) == ["t7"]
    assert library.reconcile() == []


@pytest.mark.parametrize("cache", ["always", "never"])
def test_duplicate_pairs_are_scanned_once_and_kept_current(filled, cache: str) -> None:  # type: ignore[no-untyped-def]
    """One background scan finds every near-identical pair; later changes are folded in
    without scanning again, and a smaller threshold is served by the same scan. Cached:
    compared in memory; not cached (a library too big for memory): through Milvus searches."""
    from pipeline.recommender.duplicates import pair_scan

    store, vectors = filled
    name = store.collection_name("musicnn")
    rng = np.random.default_rng(5)
    index = Library(store, QuerySettings(cache=cache)).index("musicnn")
    assert index.cache_vectors == (cache == "always")

    def near(i: int) -> np.ndarray:  # a copy of track i: cosine distance ~0.002
        return vectors[i] + 0.05 * rng.normal(size=24).astype(np.float32) / np.sqrt(24)

    def add(copies: dict[str, np.ndarray]) -> None:
        """As the embedder and the embeddings topic do: into Milvus, then the index."""
        store.upsert(name, [VectorRow(t, v) for t, v in copies.items()])
        index.upsert_rows([StoredTrack(t, vector=v) for t, v in copies.items()])

    add({"copy7": near(7), "copy42": near(42)})
    scan = pair_scan(index, 0.02)
    assert scan.done.wait(60) and scan.error is None
    expected = {("copy7", "t7"), ("copy42", "t42")}
    assert {pair for pair, d in scan.pairs().items() if d < 0.02} == expected
    # The brute-force truth: no other pair of the 3,002 tracks is that close.
    everything = np.vstack([vectors, [near(7), near(42)]])
    everything /= np.linalg.norm(everything, axis=1, keepdims=True)
    sims = np.triu(everything @ everything.T, k=1)
    assert int((sims > 0.98).sum()) == 2

    add({"copy100": near(100)})
    store.delete(name, ["copy7"])
    index.remove(["copy7"])
    assert pair_scan(index, 0.01) is scan  # no new scan
    assert {pair for pair, d in scan.pairs().items() if d < 0.02} == {
        ("copy42", "t42"), ("copy100", "t100")
    }  # fmt: skip
    assert pair_scan(index, 0.2) is not scan  # a larger threshold needs its own scan


def test_duplicates_asked_during_the_scan_get_a_partial_answer_then_every_pair(filled) -> None:  # type: ignore[no-untyped-def]
    """A request whose deadline comes before the background scan ends is answered with what
    was found so far and says so; once the scan is done, the answer is complete."""
    from pipeline.recommender import duplicates
    from pipeline.recommender.common import QueryContext
    from pipeline.schemas.queries import query_request_adapter

    store, vectors = filled
    library = Library(store, QuerySettings())
    index = library.index("musicnn")
    more = np.random.default_rng(9).normal(size=(20_000, 24)).astype(np.float32)
    index.upsert_rows([StoredTrack(f"m{i}", vector=v) for i, v in enumerate(more)])
    index.upsert_rows([StoredTrack("copy5", vector=vectors[5])])

    def ask(deadline: float | None) -> tuple[list[tuple[str, str]], list[str]]:
        request = query_request_adapter.validate_python(
            {"type": "duplicates", "request_id": "d", "threshold": 0.001}
        )
        now = time.monotonic()
        ctx = QueryContext(
            request=request,
            settings=library.settings,
            library=library,
            text=None,  # type: ignore[arg-type]
            deadline=None if deadline is None else now + deadline,
            started=now,
        )
        outcome = duplicates.run(ctx)  # type: ignore[arg-type]
        return [(p.first.track_id, p.second.track_id) for p in outcome.pairs], ctx.warnings

    _, warnings = ask(deadline=1e-6)  # 23,001 tracks take the scan a good second
    assert len(warnings) == 1 and "in the background, ask again" in warnings[0]
    scan = duplicates.scan_of(index)
    assert scan is not None and scan.done.wait(60)
    pairs, warnings = ask(deadline=None)
    assert pairs == [("copy5", "t5")] and warnings == []


def test_models_without_collections_and_the_cache_budget(lite_store) -> None:  # type: ignore[no-untyped-def]
    library = Library(lite_store, QuerySettings(cache_max_mb=1))
    with pytest.raises(NotEmbedded, match="nothing embedded yet"):
        library.index("mert")
    with pytest.raises(NotEmbedded, match="not a model name"):
        library.index("../etc")
    assert library.cache_vectors(rows=100_000, dim=600) is False  # 240 MB > 1 MB
    assert library.cache_vectors(rows=100, dim=600) is True


def test_tags_are_standardised_per_tag(lite_store) -> None:  # type: ignore[no-untyped-def]
    name = lite_store.collection_name("musicnn")
    lite_store.ensure_collection(name, dim=4)
    common = [0.9, 0.1, 0.1]  # tag 0 is on every track
    lite_store.upsert(name, [
        VectorRow("plain", np.ones(4), extra={"tags": common}),
        VectorRow("rare", np.ones(4), extra={"tags": [0.9, 0.8, 0.1]}),
        VectorRow("other", np.ones(4), extra={"tags": [0.9, 0.1, 0.15]}),
        VectorRow("untagged", np.ones(4)),
    ])  # fmt: skip
    index = Library(lite_store, QuerySettings()).index("musicnn")
    view, z, tagged = index.tag_directions()
    row = {t: i for i, t in enumerate(view.ids[: view.n])}
    assert not tagged[row["untagged"]] and tagged[row["rare"]]
    assert z[row["rare"]][1] > 0.85  # stands out on the rare tag,
    assert abs(z[row["rare"]][0]) < 1e-3  # not on the one every track has
    assert np.allclose(np.linalg.norm(z[tagged], axis=1), 1.0, atol=1e-5)


def test_an_index_replaced_by_a_rebuild_is_freed_after_song_lookups_and_a_frozen_heap(
    lite_store,  # type: ignore[no-untyped-def]
) -> None:
    # The soak's query service kept every replaced index (issue 19): the batcher and the song
    # catalog each held their index in a cycle, and freeze_heap() keeps frozen cycles.
    name, library = ten_track_library(lite_store, seed=2)
    first = library.index("musicnn")
    catalog_of(first).song(SongRef(title="t1"))
    try:
        freeze_heap()
        replaced = weakref.ref(first)
        del first
        lite_store.delete(name, ["t1"])
        assert library.reconcile() == [] and library.reconcile() == ["musicnn"]
        gc.collect()
        assert replaced() is None
    finally:
        gc.unfreeze()
