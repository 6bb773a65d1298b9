"""The library as the web pages search it: every embedded track's title, artist and album.

Where the catalog comes from: the rows of the library model's active Milvus collection
(`embed.models[0]`, MusiCNN by default), which this HTTP service already holds a store for
(`OpsRuntime.store`). Those rows carry everything the pages show (title, artist, album,
duration, `extra.path`, `extra.tags`) and exactly the tracks the query service can answer
`similar` for, so a search never offers a track whose page would have no neighbours. The
alternatives were worse: the compacted `tracks` topic also lists tracks not embedded yet
(and reading it from the start on every refresh costs a full scan of the log), and a new
`search` request type on the bus would change the wire contract for what is a lookup in
data this process can read itself.

The rows (without vectors) are held in memory, a few hundred bytes per track, and searched
with a linear scan: a substring test first, scoring only what passes (measured on 50,000
synthetic tracks, one core: 20-50 ms per search, about 100 ms for a single letter that
nearly every track holds). The catalog
checks the collection's row count at most every `refresh_s` and reloads when it changed
(new tracks embedded, tracks deleted) or when it is `max_age_s` old (a re-embed replacing
rows keeps the count); a reload happens beside the old catalog, which keeps answering.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import time
import unicodedata
from dataclasses import dataclass

from pydantic import BaseModel, Field

from pipeline.store import StoredTrack, VectorStore

log = logging.getLogger(__name__)

MAX_RESULTS = 100


class TrackSummary(BaseModel):
    """One track as every page lists it (search results, similar tracks, playlists)."""

    track_id: str
    title: str
    artist: str
    album: str
    duration: float | None = Field(None, description="Seconds, when known.")


def fold(text: str) -> str:
    """Text as search compares it: case and accents folded ("Beyoncé" matches "beyonce")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@dataclass(frozen=True)
class CatalogEntry:
    """A track of the catalog: what search shows, where its file is, and its folded fields."""

    track_id: str
    title: str
    artist: str
    album: str
    duration: float
    path: str
    folded: tuple[str, str, str]  # title, artist, album
    joined: str  # the three, in one string: the quick test before scoring

    @classmethod
    def of(cls, row: StoredTrack) -> CatalogEntry:
        title = row.title or os.path.basename(str(row.extra.get("path") or "")) or row.track_id
        folded = (fold(title), fold(row.artist), fold(row.album))
        return cls(
            track_id=row.track_id,
            title=title,
            artist=row.artist,
            album=row.album,
            duration=row.duration,
            path=str(row.extra.get("path") or ""),
            folded=folded,
            joined="\n".join(folded),
        )

    def summary(self) -> TrackSummary:
        return TrackSummary(track_id=self.track_id, title=self.title, artist=self.artist,
                            album=self.album, duration=self.duration or None)  # fmt: skip


def match_score(entry: CatalogEntry, words: list[str]) -> int:
    """How well `words` (folded) name the track: 0 = not every word is in its fields.

    A field that starts with the word counts most, a word of a field that starts with
    it next, anywhere inside least; the title weighs a little more than artist and album.
    """
    total = 0
    for word in words:
        best = 0
        for weight, field in zip((3, 2, 2), entry.folded, strict=True):
            if field.startswith(word):
                best = max(best, 3 * weight)
            elif f" {word}" in field:
                best = max(best, 2 * weight)
            elif word in field:
                best = max(best, weight)
        if not best:
            return 0
        total += best
    return total


class TrackCatalog:
    """The library model's tracks in memory, reloaded from Milvus when they change."""

    def __init__(
        self, store: VectorStore, model: str, refresh_s: float = 5.0, max_age_s: float = 300.0
    ) -> None:
        self.store = store
        self.model = model
        self.refresh_s = refresh_s
        self.max_age_s = max_age_s
        self._entries: dict[str, CatalogEntry] = {}
        self._sorted: list[CatalogEntry] = []
        self._source: tuple[str, int] | None = None  # (collection, rows) loaded
        self._loaded_at = 0.0
        self._checked_at = -1e9
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, track_id: str) -> CatalogEntry | None:
        return self._entries.get(track_id)

    async def fresh(self) -> TrackCatalog:
        """This catalog, reloaded first if Milvus changed since the last look."""
        if time.monotonic() - self._checked_at < self.refresh_s:
            return self
        async with self._lock:
            now = time.monotonic()
            if now - self._checked_at < self.refresh_s:
                return self
            source = await asyncio.to_thread(self._current_source)
            if source != self._source or now - self._loaded_at > self.max_age_s:
                entries = await asyncio.to_thread(self._load, source)
                self._entries = {e.track_id: e for e in entries}
                self._sorted = sorted(
                    entries, key=lambda e: (e.folded[1], e.folded[2], e.folded[0])
                )
                self._source, self._loaded_at = source, now
                log.info("track catalog: %d tracks from %s", len(entries), source[0])
            self._checked_at = time.monotonic()
        return self

    def _current_source(self) -> tuple[str, int]:
        collection = self.store.active_collection(self.model)
        if not self.store.has_collection(collection):
            return collection, 0
        return collection, self.store.count(collection)

    def _load(self, source: tuple[str, int]) -> list[CatalogEntry]:
        collection, rows = source
        if not rows:
            return []
        return [CatalogEntry.of(row) for page in self.store.iterate(collection) for row in page]

    def search(self, query: str, limit: int = 20) -> list[CatalogEntry]:
        """Tracks whose title, artist or album hold every word of `query`, best first; an
        empty query lists the library by artist, album and title."""
        limit = max(1, min(limit, MAX_RESULTS))
        words = fold(query).split()
        if not words:
            return self._sorted[:limit]
        # Most tracks fail a plain substring test (C speed); only the rest are scored.
        first, rest = words[0], words[1:]
        found = [e for e in self._sorted if first in e.joined]
        if rest:
            found = [e for e in found if all(w in e.joined for w in rest)]
        ranked = heapq.nsmallest(
            limit,
            ((-match_score(e, words), len(e.folded[0]), i) for i, e in enumerate(found)),
        )  # ties keep the artist / album / title order (i)
        return [found[i] for score, _, i in ranked if score]
