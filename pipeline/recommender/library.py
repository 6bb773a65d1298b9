"""Every model's embedded tracks, as the query service sees them (see `index.py` for why
vectors are held in memory).

The library opens a model's index on first use (or at start-up, `warm`),
follows the `embeddings` topic to stay current (an event names a track that
was upserted or deleted; the row is re-read from Milvus, which stays the
store of record), and every `cache_refresh_s` compares each index's row count
with Milvus and rebuilds it beside the old one when another collection became
the active one (a re-embed finished), or when the counts differ by the same
gap at two checks in a row (an update this process missed).

Why two checks: during an ingest the counts nearly always differ, because an
embedder stores its rows a moment before it announces them. Rebuilding on every
such gap reloaded the whole index every few minutes, and each reload left tens
of MB of freed memory that glibc does not give back (the soak's query service
grew 27 %, issue 19). A gap the announcements explain has changed by the next
check; a missed update leaves the same one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

from pipeline.config import QuerySettings
from pipeline.errors import NotFound
from pipeline.recommender.index import ModelIndex
from pipeline.schemas import EmbeddingEvent
from pipeline.store import VectorStore

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class NotEmbedded(NotFound):
    """A model the request names has no collection (nothing embedded with it yet)."""


class Library:
    """The per-model indexes of one query process (thread-safe)."""

    def __init__(self, store: VectorStore, settings: QuerySettings) -> None:
        self.store = store
        self.settings = settings
        self._indexes: dict[str, ModelIndex] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._pending: dict[str, dict[str, tuple[str, str]]] = {}  # model: id: (status, coll.)
        self._gaps: dict[str, tuple[str, int, int]] = {}  # model: (collection, stored, held)
        self._lock = threading.Lock()

    # -- opening ------------------------------------------------------------

    def index(self, model: str) -> ModelIndex:
        """The model's index, loading it on first use; NotEmbedded if Milvus has none."""
        index = self._indexes.get(model)
        if index is not None:
            return index
        if not MODEL_NAME.match(model):
            raise NotEmbedded(f"{model!r} is not a model name")
        with self._lock:
            loading = self._loading.setdefault(model, threading.Lock())
        with loading:
            index = self._indexes.get(model)
            if index is None:
                index = self._open(model)
                with self._lock:
                    self._indexes[model] = index
        return index

    def _open(self, model: str) -> ModelIndex:
        # The collection queries read: during a re-embed into a fresh collection, the old one
        # keeps serving until the switch (the store keeps that state, see pipeline.store).
        collection = self.store.active_collection(model)
        if not self.store.has_collection(collection):
            raise NotEmbedded(
                f"model {model!r} has nothing embedded yet (no collection {collection}); "
                f"run `sonicbus embed --model {model}` or pick another model"
            )
        dim = self.store.dimension(collection)
        rows = self.store.count(collection)
        index = ModelIndex(
            self.store, model, collection, dim, cache_vectors=self.cache_vectors(rows, dim)
        )
        index.load()
        return index

    def cache_vectors(self, rows: int, dim: int) -> bool:
        """Hold this many vectors in memory? (auto: if they fit the budget with headroom)."""
        if self.settings.cache != "auto":
            return self.settings.cache == "always"
        needed = rows * dim * 4 * 1.25
        return needed <= self.settings.cache_max_mb * 2**20

    def warm(self, models: Iterable[str]) -> list[str]:
        """Open indexes ahead of the first request (blocking); returns those opened."""
        opened = []
        for model in models:
            try:
                self.index(model)
                opened.append(model)
            except NotEmbedded:
                continue
        return opened

    def loaded(self) -> dict[str, ModelIndex]:
        return dict(self._indexes)

    # -- staying current ----------------------------------------------------

    def note(self, event: EmbeddingEvent) -> None:
        """Remember an upsert/delete announced on `embeddings`; `apply_pending` applies it.

        `skipped_unchanged` matters only for a track the open index lacks: an embedder
        killed after storing a batch but before announcing it leaves its successor to find
        the rows stored and announce them as unchanged (tests/test_faults_replicas.py).
        """
        if event.status == "skipped_unchanged":
            index = self._indexes.get(event.model)
            if index is None or index.positions([event.track_id])[0] is not None:
                return
        with self._lock:
            changes = self._pending.setdefault(event.model, {})
            changes[event.track_id] = (event.status, event.collection)

    def apply_pending(self) -> int:
        """Re-read announced rows from Milvus into the open indexes (blocking)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        applied = 0
        for model, changes in pending.items():
            index = self._indexes.get(model)
            if index is None:
                loading = self._loading.get(model)
                if loading is not None and loading.locked():
                    # Being loaded right now: the load may or may not include these rows.
                    with self._lock:
                        self._pending.setdefault(model, {}).update(changes)
                continue
            # A re-embed writes a fresh collection: its events are not for the one read here.
            mine = {t: status for t, (status, coll) in changes.items() if coll == index.collection}
            gone = [t for t, status in mine.items() if status == "deleted"]
            changed = [t for t, status in mine.items() if status != "deleted"]
            applied += index.remove(gone)
            if changed:
                rows = self.store.get(index.collection, changed, with_vectors=index.cache_vectors)
                index.upsert_rows(list(rows.values()))
                index.remove(t for t in changed if t not in rows)
                applied += len(rows)
        return applied

    def reconcile(self) -> list[str]:
        """Rebuild indexes that no longer match Milvus (blocking); returns their models.

        Two reasons: another collection became the active one (a re-embed
        finished), or the row count differs by the same gap as at the previous
        check (changes this process missed; see the module docstring).
        """
        rebuilt = []
        for model, index in self.loaded().items():
            active = self.store.model_state(model, fresh=True).active
            if not self.store.has_collection(active):
                with self._lock:
                    self._indexes.pop(model, None)
                rebuilt.append(model)
                continue
            stored = self.store.count(active)
            if active == index.collection:
                gap = (active, stored, index.size)
                previous = self._gaps.get(model)
                if stored == index.size or previous != gap:
                    if stored == index.size:
                        self._gaps.pop(model, None)
                    else:
                        self._gaps[model] = gap  # in flight, or missed: the next check says
                    continue
            self._gaps.pop(model, None)
            log.info(
                "query index %s: %s holds %d rows, Milvus' active %s %d: rebuilding",
                model,
                index.collection,
                index.size,
                active,
                stored,
                extra={"model": model},
            )
            fresh = self._open(model)
            with self._lock:
                self._indexes[model] = fresh
            rebuilt.append(model)
        return rebuilt
