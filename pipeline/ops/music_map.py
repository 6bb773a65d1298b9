"""The music map's points: every embedded track of a model on a plane, kept current.

One `MusicMap` per HTTP service. A model's map is built on first request, in a thread:
the active collection's rows are read from Milvus, a projection saved earlier is reused
(`<home>/map/<collection>.npz`) or a new one is fitted (`pipeline.recommender.projection`:
landmark t-SNE, up to a minute at 50,000 tracks). From then on the map follows the
`embeddings` topic (no consumer group, from its end, started before the rows are read
so nothing embedded meanwhile is missed): a track embedded or deleted is re-read from
Milvus and placed by the fitted projection, or dropped, and logged as a change that
`changes_since` hands to the page. When the library has grown (or shrunk) by
`http.map.recompute_growth` since the projection was fitted, the whole map is redrawn in
the background while the old one keeps serving; the new one has a new `version`, and
a page holding the old version is told to reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.recommender.projection import Projection, fit_projection
from pipeline.schemas import EmbeddingEvent, SchemaError
from pipeline.store import StoredTrack, VectorStore
from pipeline.topics import read_from_end

log = logging.getLogger(__name__)

NO_TAG = 255  # a point whose row carries no tags
TOP_TAGS = 3
CHANGE_LOG = 100_000  # changes kept for pages catching up; older cursors reload the map
APPLY_EVERY_S = 1.0
GET_BATCH = 1000


def tag_names() -> tuple[str, ...]:
    from models.musicnn_net import MSD_TAGS  # the tags of `extra["tags"]` (models/text.py)

    return MSD_TAGS


@dataclass
class Point:
    """One track on the map, with what hovering over it shows."""

    track_id: str
    x: float
    y: float
    tags: tuple[tuple[int, float], ...]  # its top tags: (index into tag_names(), score)
    title: str
    artist: str
    album: str

    @property
    def top_tag(self) -> int:
        return self.tags[0][0] if self.tags else NO_TAG


@dataclass
class LibraryMap:
    """A model's map: the points of one projection, and the changes since it was drawn."""

    model: str
    collection: str
    version: int
    projection: Projection | None
    points: dict[str, Point] = field(default_factory=dict)
    seq: int = 0
    changes: deque[tuple[int, str]] = field(default_factory=lambda: deque(maxlen=CHANGE_LOG))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cursor(self) -> str:
        return f"{self.version}.{self.seq}"

    def snapshot(self) -> list[Point]:
        with self.lock:
            return list(self.points.values())

    def changes_since(self, cursor: str) -> tuple[list[Point], list[str]] | None:
        """(points added or moved, ids removed) since `cursor`; None: reload the whole map."""
        try:
            version, seq = (int(part) for part in cursor.split("."))
        except ValueError:
            return None
        with self.lock:
            oldest = self.changes[0][0] if self.changes else self.seq + 1
            if version != self.version or seq > self.seq or (seq < oldest - 1 and seq < self.seq):
                return None
            changed = dict.fromkeys(t for s, t in self.changes if s > seq)
            moved = [self.points[t] for t in changed if t in self.points]
            gone = [t for t in changed if t not in self.points]
        return moved, gone

    def growth(self, rows: int) -> float:
        """How far the library has moved from the projection's fit (a share of it)."""
        if self.projection is None:
            return float("inf") if rows else 0.0
        return abs(rows - self.projection.fitted_rows) / max(self.projection.fitted_rows, 1)

    def apply(self, rows: Iterable[StoredTrack], gone: Iterable[str]) -> int:
        """Place re-read rows and drop deleted ones; returns how many changed."""
        rows = [r for r in rows if r.vector is not None]
        changed = 0
        placed = self.projection.place(np.stack([r.vector for r in rows])) if rows else []
        with self.lock:
            for row, (x, y) in zip(rows, placed, strict=True):
                self.points[row.track_id] = point_of(row, float(x), float(y))
                self._log(row.track_id)
                changed += 1
            for track_id in gone:
                if self.points.pop(track_id, None) is not None:
                    self._log(track_id)
                    changed += 1
        return changed

    def _log(self, track_id: str) -> None:
        self.seq += 1
        self.changes.append((self.seq, track_id))


def point_of(row: StoredTrack, x: float, y: float) -> Point:
    tags = row.extra.get("tags")
    top: tuple[tuple[int, float], ...] = ()
    if isinstance(tags, list) and tags and len(tags) <= NO_TAG:
        scores = np.asarray(tags, np.float32)
        order = np.argsort(-scores)[:TOP_TAGS]
        top = tuple((int(i), round(float(scores[i]), 3)) for i in order)
    return Point(row.track_id, x, y, top, row.title, row.artist, row.album)


class MusicMap:
    """Every model's map in this HTTP service (see the module docstring)."""

    def __init__(
        self, settings: Settings, store: VectorStore, stop: asyncio.Event | None = None
    ) -> None:
        """`stop`: the HTTP runtime's stop event; the map follows the bus until it is set."""
        self.settings = settings
        self.store = store
        self.folder = settings.home / "map"
        self._maps: dict[str, LibraryMap] = {}
        self._building: dict[str, asyncio.Task[None]] = {}
        self._redrawing: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, dict[str, str]] = {}  # model: track_id: collection of the event
        self._follower: asyncio.Task[None] | None = None
        self._following = asyncio.Event()
        self.stop_event = stop or asyncio.Event()

    # -- the maps -------------------------------------------------------------

    async def get(self, model: str, wait_s: float = 2.0) -> LibraryMap | None:
        """The model's map; None while it is being drawn for the first time (after `wait_s`).

        A failed build raises its error here once, and is tried again on the next call.
        """
        if model in self._maps:
            return self._maps[model]
        await self._follow()
        task = self._building.get(model)
        if task is None:
            task = asyncio.create_task(self._build(model), name=f"map-{model}")
            self._building[model] = task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), wait_s)
        if task.done():
            self._building.pop(model, None)
            task.result()  # a failure is the caller's error (and the next call builds again)
        return self._maps.get(model)

    def redrawing(self, model: str) -> bool:
        task = self._redrawing.get(model)
        return task is not None and not task.done()

    async def _build(self, model: str) -> None:
        self._maps[model] = await asyncio.to_thread(self._draw, model, None)

    def _draw(self, model: str, previous: LibraryMap | None) -> LibraryMap:
        """Blocking: the model's map from Milvus, with a saved projection or a new one."""
        collection = self.store.active_collection(model)
        version = previous.version + 1 if previous else 1
        if not self.store.has_collection(collection):
            return LibraryMap(model, collection, version, None)
        saved = None if previous else self._load(collection)
        if saved is not None:
            projection, version = saved
            rows = [r for page in self.store.iterate(collection) for r in page]
            if rows and projection.dim == self.store.dimension(collection):
                return self._placed(model, collection, version, projection, rows)
        rows = [r for page in self.store.iterate(collection, with_vectors=True) for r in page]
        if not rows:
            return LibraryMap(model, collection, version, None)
        landmarks = self.settings.http.map.landmarks
        projection, coords = fit_projection(np.stack([r.vector for r in rows]), landmarks)
        library_map = LibraryMap(model, collection, version, projection)
        library_map.points = {
            r.track_id: point_of(r, float(x), float(y))
            for r, (x, y) in zip(rows, coords, strict=True)
        }  # fmt: skip
        self._save(library_map, coords)
        log.info("music map of %s: %d tracks drawn (%s, version %d)", model, len(rows),
                 projection.method, version)  # fmt: skip
        return library_map

    def _placed(
        self, model: str, collection: str, version: int, projection: Projection,
        rows: list[StoredTrack],
    ) -> LibraryMap:  # fmt: skip
        """A map from a saved projection: saved places reused, the rest placed now."""
        library_map = LibraryMap(model, collection, version, projection)
        saved_xy = self._saved_coords(collection)
        missing = [r.track_id for r in rows if r.track_id not in saved_xy]
        vectors: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), GET_BATCH):
            got = self.store.get(collection, missing[start : start + GET_BATCH], with_vectors=True)
            vectors.update({t: r.vector for t, r in got.items() if r.vector is not None})
        ids = list(vectors)
        placed = projection.place(np.stack([vectors[t] for t in ids])) if ids else []
        saved_xy.update({t: (float(x), float(y)) for t, (x, y) in zip(ids, placed, strict=True)})
        library_map.points = {
            r.track_id: point_of(r, *saved_xy[r.track_id]) for r in rows if r.track_id in saved_xy
        }
        return library_map

    # -- saving ---------------------------------------------------------------

    def _path(self, collection: str) -> Path:
        """One file per collection of one store (two stores may name collections alike)."""
        store = hashlib.sha1(self.store.uri.encode()).hexdigest()[:10]
        return self.folder / f"{collection}-{store}.npz"

    def _save(self, library_map: LibraryMap, coords: np.ndarray) -> None:
        """The projection and the fitted places, written to a temporary name and renamed."""
        if library_map.projection is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(library_map.collection)
        scratch = target.with_suffix(".tmp.npz")
        ids = np.asarray(list(library_map.points), dtype=np.str_)
        version = np.asarray(library_map.version)
        arrays = library_map.projection.arrays()
        np.savez(scratch, ids=ids, coords=coords.astype(np.float32), version=version, **arrays)
        scratch.replace(target)

    def _load(self, collection: str) -> tuple[Projection, int] | None:
        path = self._path(collection)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
            return Projection.from_arrays(arrays), int(arrays["version"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("music map: ignoring %s (%s); drawing it again", path, exc)
            return None

    def _saved_coords(self, collection: str) -> dict[str, tuple[float, float]]:
        with np.load(self._path(collection), allow_pickle=False) as saved:
            ids, coords = saved["ids"], saved["coords"]
        return {str(t): (float(x), float(y)) for t, (x, y) in zip(ids, coords, strict=True)}

    # -- following the embeddings ----------------------------------------------

    async def _follow(self) -> None:
        """Start following `embeddings` (once); returns when its end is resolved."""
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow_forever(), name="map-follower")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._following.wait(), 10)

    async def _follow_forever(self) -> None:
        while not self.stop_event.is_set():
            consumer = make_consumer(self.settings.kafka, group_id=None, role="music-map")
            try:
                await consumer.start()
                await read_from_end(consumer, self.settings, self.settings.topics.embeddings)
                self._following.set()
                while not self.stop_event.is_set():
                    batches = await consumer.getmany(timeout_ms=int(APPLY_EVERY_S * 1000))
                    if self.stop_event.is_set():
                        break
                    for records in batches.values():
                        for record in records:
                            self._note(record.value)
                    await self._apply_pending()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the bus away: keep serving the map, try again
                log.warning("music map: following embeddings failed (%s); retrying", exc)
                self._following.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_event.wait(), 5)
            finally:
                await consumer.stop()

    def _note(self, value: bytes | None) -> None:
        try:
            event = EmbeddingEvent.from_bytes(value)
        except SchemaError:
            return
        if event.status != "skipped_unchanged":
            self._pending.setdefault(event.model, {})[event.track_id] = event.collection

    async def _apply_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for model in self._building:  # read by the build, or not: re-read them after it
            if model not in self._maps and model in pending:
                self._pending.setdefault(model, {}).update(pending.pop(model))
        for model, library_map in list(self._maps.items()):
            changes = pending.get(model, {})
            ids = [t for t, c in changes.items() if c == library_map.collection]
            if ids and library_map.projection is not None:
                try:
                    await asyncio.to_thread(self._reread, library_map, ids)
                except Exception as exc:
                    log.warning("music map of %s: re-reading %d rows failed: %s",
                                model, len(ids), exc)  # fmt: skip
            if changes or library_map.projection is None:
                await self._maybe_redraw(library_map)

    def _reread(self, library_map: LibraryMap, ids: list[str]) -> None:
        rows = self.store.get(library_map.collection, ids, with_vectors=True)
        library_map.apply(rows.values(), [t for t in ids if t not in rows])

    async def _maybe_redraw(self, library_map: LibraryMap) -> None:
        """Redraw in the background when the library moved `recompute_growth` from the fit."""
        model = library_map.model
        if self.redrawing(model):
            return
        rows = len(library_map.points)
        active = await asyncio.to_thread(self.store.active_collection, model)
        if library_map.projection is None:
            has = await asyncio.to_thread(self.store.has_collection, active)
            rows = await asyncio.to_thread(self.store.count, active) if has else 0
        moved = active != library_map.collection
        if not moved and library_map.growth(rows) < self.settings.http.map.recompute_growth:
            return
        redraw = self._redraw(library_map)
        self._redrawing[model] = asyncio.create_task(redraw, name=f"redraw-{model}")

    async def _redraw(self, old: LibraryMap) -> None:
        start = old.seq
        try:
            fresh = await asyncio.to_thread(self._draw, old.model, old)
        except Exception:
            log.exception("music map of %s: redrawing failed; the old map stays", old.model)
            return
        self._maps[old.model] = fresh
        with old.lock:  # changed while the new map was drawn: the new map may predate them
            missed = list(dict.fromkeys(t for s, t in old.changes if s > start))
        if missed and fresh.projection is not None and fresh.collection == old.collection:
            await asyncio.to_thread(self._reread, fresh, missed)

    async def close(self) -> None:
        self.stop_event.set()
        tasks = [t for t in (self._follower, *self._redrawing.values(), *self._building.values())
                 if t is not None]  # fmt: skip
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
