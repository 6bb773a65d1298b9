"""One model's embedded tracks, as the query service reads them: vectors, tags, metadata.

Milvus is the store of record; this is a read model of one collection. Why
hold it in memory: measured on the 2-core dev machine with 50,000 x 600
vectors, one Milvus Lite search (FLAT, flushed) takes ~110-120 ms, while numpy
over an in-memory float32 matrix takes ~4-5 ms, and the query targets are
15 ms p50 for a whole round trip. So when the matrix fits the budget
(`query.cache_max_mb`) the vectors are cached; otherwise searches go to Milvus
and only metadata and tag probabilities (small) are held here.

Readers never block writers for long: a reader takes references to the
arrays under the lock and computes without it. Appends write past the
reader's row count, updates overwrite one row in place, deletions clear an
`alive` flag, and growth or compaction builds new arrays, so a reader's view
stays usable for the whole of its computation.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from models.text import stored_tags
from pipeline.recommender.batching import Batcher
from pipeline.store import StoredTrack, VectorStore, normalise

log = logging.getLogger(__name__)

# Changed ids kept (with their version) so caches over the index can catch up; older
# changes are forgotten and such a cache is rebuilt instead.
CHANGE_LOG_IDS = 100_000
NEG_INF = np.float32(-np.inf)


_VERSION_NOISE = re.compile(
    r"[\(\[][^\)\]]*(remaster|version|edit|mono|stereo|mix|deluxe|bonus)[^\)\]]*[\)\]]"
    r"|\s-\s.*(remaster|version|edit|mono|stereo).*$",
    re.IGNORECASE,
)
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _words(text: str) -> str:
    return _NOT_WORD.sub(" ", text.casefold()).strip()


@dataclass(frozen=True)
class TrackInfo:
    """What a reply shows about a track, and what artist caps and duplicate checks use.

    The keys are computed once per track (on first use) rather than per
    candidate per request: they were a tenth of the query service's GIL time.
    """

    track_id: str
    artist: str = ""
    title: str = ""
    album: str = ""
    duration: float = 0.0
    mbid: str = ""  # MusicBrainz recording id (the row's extra["mbid"])
    album_mbid: str = ""
    artist_mbid: str = ""
    year: int = 0
    genre: str = ""
    bpm: float = 0.0  # 0, "", -1: not measured (pipeline.store.vectors.UNMEASURED)
    musical_key: str = ""
    energy: float = -1.0

    @cached_property
    def artist_key(self) -> str:
        """The artist as the artist cap counts it (case and spacing ignored)."""
        return " ".join(self.artist.casefold().split())

    @cached_property
    def song_key(self) -> tuple[str, str] | None:
        """(artist, title) with version noise such as "(Remastered 2011)" dropped; None when
        the title is unknown. Two tracks with one key are the same song."""
        if not self.title.strip():
            return None
        return _words(self.artist), _words(_VERSION_NOISE.sub(" ", self.title))


def track_info(row: StoredTrack) -> TrackInfo:
    """A row's metadata; the MusicBrainz ids are in `extra` (stored by the embedders)."""
    extra = row.extra

    def text(key: str) -> str:
        value = extra.get(key)
        return value if isinstance(value, str) else ""

    return TrackInfo(
        row.track_id,
        row.artist,
        row.title,
        row.album,
        float(row.duration or 0.0),
        mbid=text("mbid"),
        album_mbid=text("album_mbid"),
        artist_mbid=text("artist_mbid"),
        year=int(row.year or 0),
        genre=row.genre,
        bpm=float(row.bpm),
        musical_key=row.musical_key,
        energy=float(row.energy),
    )


@dataclass
class View:
    """A consistent read of the index: the first `n` rows of each array."""

    n: int
    ids: list[str]
    alive: np.ndarray
    vectors: np.ndarray | None
    tags: np.ndarray | None


class ModelIndex:
    """Rows of one model's collection, searchable by cosine similarity (vectors are unit)."""

    def __init__(
        self,
        store: VectorStore,
        model: str,
        collection: str,
        dim: int,
        cache_vectors: bool,
        tag_count: int | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.collection = collection
        self.dim = dim
        self.cache_vectors = cache_vectors
        self.tag_count = tag_count
        self.loaded_at = 0.0
        self.version = 0
        self._lock = threading.RLock()
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._info: list[TrackInfo] = []
        self._alive = np.zeros(0, dtype=bool)
        self._vectors: np.ndarray | None = np.zeros((0, dim), np.float32) if cache_vectors else None
        self._tags: np.ndarray | None = None
        self._tagged = np.zeros(0, dtype=bool)
        self._n = 0
        self._dead = 0
        self._z_cache: tuple[int, np.ndarray] | None = None
        self._changes: deque[tuple[int, frozenset[str]]] = deque()
        self._logged = 0  # ids in _changes
        self.batcher: Batcher[_Job, tuple[View, Any]] = Batcher(_weakly(self._run_jobs))

    # -- loading and updates ------------------------------------------------

    def load(self, page_size: int = 2000) -> None:
        """Read every row of the collection (blocking; seconds for 50k rows on Milvus Lite)."""
        started = time.perf_counter()
        for page in self.store.iterate(
            self.collection, with_vectors=self.cache_vectors, batch_size=page_size
        ):
            self.upsert_rows(page)
        self.loaded_at = time.time()
        log.info(
            "query index %s: %d rows in %.1f s (vectors %s)",
            self.model,
            self.size,
            time.perf_counter() - started,
            "in memory" if self.cache_vectors else "in Milvus",
            extra={"model": self.model},
        )

    def upsert_rows(self, rows: Sequence[StoredTrack]) -> None:
        """Insert or replace rows as `VectorStore.get`/`iterate` return them."""
        if not rows:
            return
        vectors = None
        if self._vectors is not None:
            vectors = normalise(np.stack([np.asarray(r.vector, np.float32) for r in rows]))
        with self._lock:
            self._reserve(self._n + len(rows))
            positions = []
            for row in rows:
                track_id = row.track_id
                at = self._pos.get(track_id)
                if at is None:
                    at = self._n
                    self._n += 1
                    self._ids.append(track_id)
                    self._info.append(TrackInfo(track_id))
                    self._pos[track_id] = at
                elif not self._alive[at]:
                    self._dead -= 1
                self._alive[at] = True
                self._info[at] = track_info(row)
                self._set_tags(at, stored_tags(row.extra))
                positions.append(at)
            if vectors is not None and self._vectors is not None:
                self._vectors[positions] = vectors
            self._changed(row.track_id for row in rows)

    def remove(self, track_ids: Iterable[str]) -> int:
        """Forget tracks (deleted from Milvus); returns how many were present."""
        removed = 0
        gone = []
        with self._lock:
            for track_id in track_ids:
                at = self._pos.get(track_id)
                if at is not None and self._alive[at]:
                    self._alive[at] = False
                    self._dead += 1
                    removed += 1
                    gone.append(track_id)
            if removed:
                self._changed(gone)
            if self._dead > max(1000, self._n // 4):
                self._compact()
        return removed

    def _changed(self, track_ids: Iterable[str]) -> None:
        """A new version (caller holds the lock), and which tracks it changed."""
        self.version += 1
        ids = frozenset(track_ids)
        self._changes.append((self.version, ids))
        self._logged += len(ids)
        while self._logged > CHANGE_LOG_IDS and len(self._changes) > 1:
            self._logged -= len(self._changes.popleft()[1])

    def changes_since(self, version: int) -> tuple[int, set[str] | None]:
        """(current version, ids changed after `version`; None when the log no longer
        reaches back that far, so a cache built at `version` must be rebuilt)."""
        with self._lock:
            if version == self.version:
                return version, set()
            if not self._changes or self._changes[0][0] > version + 1:
                return self.version, None
            changed: set[str] = set()
            for at, ids in self._changes:
                if at > version:
                    changed |= ids
            return self.version, changed

    def _set_tags(self, at: int, tags: Any) -> None:
        if not isinstance(tags, list) or not tags:
            if self._tags is not None:
                self._tagged[at] = False
            return
        if self.tag_count is None:
            self.tag_count = len(tags)
        if len(tags) != self.tag_count:
            self._tagged[at] = False
            return
        if self._tags is None:
            self._tags = np.zeros((len(self._alive), self.tag_count), np.float32)
        self._tags[at] = np.asarray(tags, np.float32)
        self._tagged[at] = True

    def _reserve(self, rows: int) -> None:
        """Grow every array to hold `rows` (new arrays: readers keep the old ones)."""
        capacity = len(self._alive)
        if rows <= capacity:
            return
        new = max(rows, capacity * 2, 1024)
        self._alive = _grown(self._alive, new)
        self._tagged = _grown(self._tagged, new)
        if self._vectors is not None:
            self._vectors = _grown(self._vectors, new)
        if self._tags is not None:
            self._tags = _grown(self._tags, new)

    def _compact(self) -> None:
        keep = np.flatnonzero(self._alive[: self._n])
        self._ids = [self._ids[i] for i in keep]
        self._info = [self._info[i] for i in keep]
        self._pos = {track_id: i for i, track_id in enumerate(self._ids)}
        self._alive = np.ones(max(len(keep), 1024), dtype=bool)
        self._alive[len(keep) :] = False
        self._tagged = _grown(self._tagged[keep], len(self._alive))
        if self._vectors is not None:
            self._vectors = _grown(self._vectors[keep], len(self._alive))
        if self._tags is not None:
            self._tags = _grown(self._tags[keep], len(self._alive))
        self._n, self._dead = len(keep), 0
        self._changed(())  # rows moved, no track changed

    # -- reading ------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._n - self._dead

    def view(self) -> View:
        with self._lock:
            return View(self._n, self._ids, self._alive, self._vectors, self._tags)

    def versioned_view(self) -> tuple[View, int]:
        """A view and the version it shows, read together."""
        with self._lock:
            return self.view(), self.version

    def known(self, track_ids: Iterable[str]) -> list[str]:
        """The given ids that have a row here, in the given order."""
        with self._lock:
            pos, alive = self._pos, self._alive
            return [t for t in track_ids if (at := pos.get(t)) is not None and alive[at]]

    def positions(self, track_ids: Iterable[str]) -> list[int | None]:
        """Row of each id in the current view (None: unknown or removed)."""
        with self._lock:
            pos, alive = self._pos, self._alive
            return [at if (at := pos.get(t)) is not None and alive[at] else None for t in track_ids]

    def live_info(self) -> list[TrackInfo]:
        """Every live track's metadata (query filters scan it)."""
        with self._lock:
            n, info, alive = self._n, self._info, self._alive
            return [info[at] for at in np.flatnonzero(alive[:n]).tolist()]

    def info(self, track_ids: Iterable[str]) -> dict[str, TrackInfo]:
        with self._lock:
            return {t: self._info[self._pos[t]] for t in track_ids if t in self._pos}

    def vectors(self, track_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(ids found, their unit vectors [k, dim]); unknown or removed ids are left out."""
        found = self.known(track_ids)
        if not found:
            return [], np.zeros((0, self.dim), np.float32)
        if self._vectors is not None:
            with self._lock:
                rows = [self._pos[t] for t in found]
                return found, self._vectors[rows].copy()
        stored = self.store.get(self.collection, found, with_vectors=True)
        found = [t for t in found if t in stored]
        matrix = np.stack([stored[t].vector for t in found]) if found else None
        if matrix is None:
            return [], np.zeros((0, self.dim), np.float32)
        return found, normalise(matrix)

    def search(
        self, queries: np.ndarray, k: int, exclude: Iterable[str] = ()
    ) -> list[list[tuple[str, float]]]:
        """The k most similar live tracks per query, best first, without `exclude`."""
        queries = normalise(np.asarray(queries, np.float32))
        excluded = set(exclude)
        if self._vectors is None:
            return self._search_milvus(queries, k, excluded)
        view, (values, rows) = self.batcher.run(_Job(queries, k, excluded))
        return [
            [(view.ids[i], s) for s, i in zip(v.tolist(), r.tolist(), strict=True) if s != NEG_INF]
            for v, r in zip(values, rows, strict=True)
        ]

    def _run_jobs(self, jobs: Sequence[_Job]) -> list[tuple[View, Any]]:
        """Several callers' queries against every row in one matrix product; then each job's
        exclusions and top-k (torch.topk: ~0.1 ms a row, numpy's argpartition ~0.4 ms)."""
        with self._lock:
            view, pos = self.view(), self._pos
        if view.n == 0 or view.vectors is None:
            empty = np.zeros((len(jobs[0].queries), 0), np.float32)
            return [(view, (empty, empty.astype(np.int64))) for _ in jobs]
        scores = similarity_rows(view.vectors[: view.n], np.concatenate([j.queries for j in jobs]))
        dead = np.flatnonzero(~view.alive[: view.n])
        if len(dead):
            scores[:, torch.from_numpy(dead)] = float("-inf")
        out: list[tuple[View, Any]] = []
        at = 0
        for job in jobs:
            rows = scores[at : at + len(job.queries)]
            at += len(job.queries)
            skip = [r for t in job.exclude if (r := pos.get(t)) is not None and r < view.n]
            if skip:
                rows[:, skip] = float("-inf")
            values, positions = torch.topk(rows, min(job.k, view.n), dim=1)
            out.append((view, (values.numpy(), positions.numpy())))
        return out

    @staticmethod
    def _top(
        row: np.ndarray, k: int, ids: list[str], rows: np.ndarray | None = None
    ) -> list[tuple[str, float]]:
        """The k best (id, score) of `row`; `rows[i]` is entry i's row in `ids` when given
        (a subset was scored: mapping only the winners back is cheaper than all of them)."""
        n = len(row)
        k = min(k, n)
        if k <= 0:
            return []
        top = np.argpartition(row, n - k)[n - k :] if k < n else np.arange(n)
        top = top[np.argsort(row[top])[::-1]]
        at = top if rows is None else rows[top]
        return [
            (ids[r], float(row[i]))
            for i, r in zip(top.tolist(), at.tolist(), strict=True)
            if row[i] != NEG_INF
        ]

    def _search_milvus(
        self, queries: np.ndarray, k: int, excluded: set[str]
    ) -> list[list[tuple[str, float]]]:
        limit = min(k + len(excluded), 16_384)
        hits = self.store.search(self.collection, queries, limit=limit, output_fields=())
        return [
            [(h.track_id, h.score) for h in row if h.track_id not in excluded][:k] for row in hits
        ]

    # -- tags ---------------------------------------------------------------

    @property
    def has_tags(self) -> bool:
        return self._tags is not None and bool(self._tagged[: self._n].any())

    def tag_directions(self) -> tuple[View, np.ndarray, np.ndarray]:
        """(view, unit z-scored tags [n, T], tagged mask): for cosine in tag space.

        Standardising per tag matters: "rock" is likely on half of a typical
        library, so raw probabilities would rank every rock track above a
        track that is unusually "instrumental" for a prompt about both. Rows
        are then scaled to unit length, so a dot product is a cosine.
        """
        view = self.view()
        if view.tags is None:
            raise RuntimeError(f"{self.model}: rows carry no tags")
        with self._lock:
            tagged = self._tagged[: view.n] & view.alive[: view.n]
            cached = self._z_cache
            if cached is not None and cached[0] == self.version and len(cached[1]) == view.n:
                return view, cached[1], tagged
            tags = view.tags[: view.n]
            sample = tags[tagged] if tagged.any() else tags
            mean = sample.mean(axis=0)
            std = np.maximum(sample.std(axis=0), 1e-3)
            z = ((tags - mean) / std).astype(np.float32)
            z[~tagged] = 0.0
            norms = np.linalg.norm(z, axis=1, keepdims=True)
            z /= np.where(norms < 1e-9, 1.0, norms)
            self._z_cache = (self.version, z)
            return view, z, tagged


@dataclass
class _Job:
    """One caller's part of a batched search: its queries, how many results, what to skip."""

    queries: np.ndarray
    k: int
    exclude: set[str] = field(default_factory=set)


def similarity_rows(matrix: np.ndarray, queries: np.ndarray) -> torch.Tensor:
    """[B, n] dot products of unit queries with every row of `matrix` (float32, a view).

    torch (MKL) rather than numpy (OpenBLAS): measured on 50,000 x 600, one
    thread, OpenBLAS' skinny matrix products cost 17-24 ms for 2-8 queries,
    MKL's 5.8-15 ms; and MKL is faster for two queries than for one (5.8 vs
    9.7 ms: its matrix-vector kernel is the slow path), so a lone query is
    computed twice over.
    """
    lone = len(queries) == 1
    stacked = np.repeat(queries, 2, axis=0) if lone else queries
    product = torch.from_numpy(matrix) @ torch.from_numpy(stacked).T  # no grad: plain tensors
    scores = product.T
    return scores[:1] if lone else scores


def _grown(array: np.ndarray, rows: int) -> np.ndarray:
    grown = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


_Jobs = Callable[[Sequence[_Job]], list[tuple[View, Any]]]


def _weakly(method: _Jobs) -> _Jobs:
    """`method` without a strong reference to its index.

    A batcher holding its index would make a reference cycle, and the query
    service's gc.freeze() (pipeline.consumers.query.freeze_heap) keeps frozen
    cycles for ever: every index a reconcile rebuild replaced stayed in memory.
    """
    ref = weakref.WeakMethod(method)

    def run(jobs: Sequence[_Job]) -> list[tuple[View, Any]]:
        bound = ref()
        if bound is None:
            raise ReferenceError("the index behind this batcher was freed")
        return bound(jobs)

    return run
