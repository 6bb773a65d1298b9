"""Navidrome's songs, albums and artists -> tracks of the library (see `schemas/songs.py`).

A song resolves, in this order, by:
1. its id, when that is a track id here (a library ingested from Navidrome
   keeps Navidrome's media file ids);
2. its MusicBrainz recording id (`extra["mbid"]`, stored by the embedders);
3. normalised title (case, punctuation and version noise such as
   "(Remastered 2011)" ignored) and artist (one of its artists equals the
   track's artist, or one the track names: "A feat. B", "A & B"); among
   several, the same album first, then the closest duration.
An album resolves by its MusicBrainz release id, else by its name (and the
album artist, when given); an artist by MusicBrainz artist id, else by name.
Lookups go through maps built once per index and kept current from the
index's change log, so a resolution costs microseconds, not a scan.

What resolves to nothing is logged once per reference (at INFO: a song
sonicbus has not embedded yet is normal, and Navidrome asks again and again).
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from collections.abc import Iterable, Sequence

from pipeline.recommender.index import _VERSION_NOISE, ModelIndex, TrackInfo, _words
from pipeline.schemas.songs import AlbumRef, ArtistRef, SongRef

log = logging.getLogger(__name__)

MAPS = ("mbid", "title", "album", "album_mbid", "artist", "artist_mbid")
_LOGGED_MAX = 10_000
_logged: set[str] = set()
_logged_lock = threading.Lock()


def title_key(title: str) -> str:
    return _words(_VERSION_NOISE.sub(" ", title))


def _keys(info: TrackInfo) -> list[tuple[str, str]]:
    keys = [
        ("mbid", info.mbid.casefold()),
        ("title", title_key(info.title)),
        ("album", _words(info.album)),
        ("album_mbid", info.album_mbid.casefold()),
        ("artist", _words(info.artist)),
        ("artist_mbid", info.artist_mbid.casefold()),
    ]
    return [(name, key) for name, key in keys if key]


class SongCatalog:
    """Lookup maps over one index's metadata (thread-safe; see the module docstring)."""

    def __init__(self, index: ModelIndex) -> None:
        # Weakly: `_catalogs` is keyed weakly by the index, and a value holding its key
        # would keep every index a reconcile replaced alive for ever.
        self._index = weakref.ref(index)
        self._lock = threading.Lock()
        self._version = -1
        self._keys: dict[str, list[tuple[str, str]]] = {}
        self._maps: dict[str, dict[str, set[str]]] = {name: {} for name in MAPS}

    @property
    def index(self) -> ModelIndex:
        index = self._index()
        if index is None:
            raise ReferenceError("the index of this song catalog was freed")
        return index

    def _refresh(self) -> None:
        """Caller holds the lock."""
        version, changed = self.index.changes_since(self._version)
        if changed is None:
            self._keys = {}
            self._maps = {name: {} for name in MAPS}
            view = self.index.view()
            changed = {view.ids[i] for i in range(view.n) if view.alive[i]}
        if changed:
            for track_id in changed:
                for name, key in self._keys.pop(track_id, ()):
                    ids = self._maps[name].get(key)
                    if ids is not None:
                        ids.discard(track_id)
            alive = self.index.known(changed)
            for track_id, info in self.index.info(alive).items():
                keys = _keys(info)
                self._keys[track_id] = keys
                for name, key in keys:
                    self._maps[name].setdefault(key, set()).add(track_id)
        self._version = version

    def lookup(self, name: str, key: str) -> set[str]:
        if not key:
            return set()
        with self._lock:
            self._refresh()
            return set(self._maps[name].get(key, ()))

    def song(self, ref: SongRef) -> str | None:
        """The track id a song resolves to here, or None."""
        if ref.id and self.index.known([ref.id]):
            return ref.id
        if ref.mbid:
            found = self.lookup("mbid", ref.mbid.strip().casefold())
            if found:
                return self._best(found, ref)
        title = title_key(ref.name)
        if not title:
            return None
        candidates = self.lookup("title", title)
        artists = [_words(a) for a in ref.artist_names()]
        artists = [a for a in artists if a]
        if artists:
            info = self.index.info(candidates)
            candidates = {t for t in candidates if t in info and _artist_matches(info[t], artists)}
        elif len(candidates) > 1 and ref.album:
            album = _words(ref.album)
            info = self.index.info(candidates)
            candidates = {t for t in candidates if t in info and _words(info[t].album) == album}
        return self._best(candidates, ref) if candidates else None

    def _best(self, candidates: set[str], ref: SongRef) -> str:
        if len(candidates) == 1:
            return next(iter(candidates))
        info = self.index.info(candidates)
        album = _words(ref.album or "")
        seconds = ref.seconds()

        def rank(track_id: str) -> tuple[int, float, str]:
            track = info.get(track_id, TrackInfo(track_id))
            same_album = 0 if album and _words(track.album) == album else 1
            gap = abs(track.duration - seconds) if seconds and track.duration else 1e9
            return same_album, gap, track_id

        return min(candidates, key=rank)

    def album(self, ref: AlbumRef) -> list[str]:
        found: set[str] = set()
        if ref.mbid:
            found = self.lookup("album_mbid", ref.mbid.strip().casefold())
        if not found and ref.name.strip():
            found = self.lookup("album", _words(ref.name))
            artist = _words(ref.artist or "")
            if artist and artist not in ("various artists", "various"):
                info = self.index.info(found)
                found = {t for t in found if t in info and _artist_matches(info[t], [artist])}
        return self._ordered(found)

    def artist(self, ref: ArtistRef) -> list[str]:
        found: set[str] = set()
        if ref.mbid:
            found = self.lookup("artist_mbid", ref.mbid.strip().casefold())
        if not found and ref.name.strip():
            found = self.lookup("artist", _words(ref.name))
        if not found and ref.id and self.index.known([ref.id]):
            found = {ref.id}  # unusual: an artist id that is a track id; harmless
        return self._ordered(found)

    def _ordered(self, ids: Iterable[str]) -> list[str]:
        """Album order where the metadata allows it: by album, then title; stable."""
        info = self.index.info(ids)
        return sorted(info, key=lambda t: (info[t].album.casefold(), info[t].title.casefold(), t))


_SEPARATORS = re.compile(r"\s*(?:[,;&/+]|\b(?:feat|ft|featuring|with|and|vs|x)\b\.?)\s*")


def _artist_matches(track: TrackInfo, artists: Sequence[str]) -> bool:
    """One of `artists` (normalised) is the track's artist, or one of the artists it names
    ("A feat. B", "A & B", "A, B")."""
    parts = {_words(track.artist), *(_words(p) for p in _SEPARATORS.split(track.artist.casefold()))}
    return any(a in parts for a in artists)


_catalogs: weakref.WeakKeyDictionary[ModelIndex, SongCatalog] = weakref.WeakKeyDictionary()
_catalogs_lock = threading.Lock()


def catalog_of(index: ModelIndex) -> SongCatalog:
    """The index's catalog (one per index, built on first use)."""
    with _catalogs_lock:
        catalog = _catalogs.get(index)
        if catalog is None:
            catalog = _catalogs[index] = SongCatalog(index)
        return catalog


def resolve_song(indexes: Sequence[ModelIndex], ref: SongRef) -> str | None:
    """The track a song is, in the first index that knows it; logs a miss once."""
    for index in indexes:
        found = catalog_of(index).song(ref)
        if found is not None:
            return found
    log_once(f"song {ref.describe()}", "not in sonicbus' library (not embedded yet?)")
    return None


def resolve_album(indexes: Sequence[ModelIndex], ref: AlbumRef) -> list[str]:
    for index in indexes:
        found = catalog_of(index).album(ref)
        if found:
            return found
    log_once(f"album {ref.name!r} (id {ref.id}, mbid {ref.mbid})", "has no embedded track")
    return []


def resolve_artist(indexes: Sequence[ModelIndex], ref: ArtistRef) -> list[str]:
    for index in indexes:
        found = catalog_of(index).artist(ref)
        if found:
            return found
    log_once(f"artist {ref.name!r} (id {ref.id}, mbid {ref.mbid})", "has no embedded track")
    return []


def log_once(what: str, why: str) -> None:
    with _logged_lock:
        if what in _logged:
            return
        if len(_logged) >= _LOGGED_MAX:
            _logged.clear()
        _logged.add(what)
    log.info("unresolved Navidrome seed: %s %s", what, why)
