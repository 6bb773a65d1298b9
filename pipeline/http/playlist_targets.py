"""Where a built playlist goes: a Navidrome playlist (Subsonic API) or an M3U8 file.

Both start from the store's rows of the tracks (`track_rows`): their metadata, and
the file path the embedder read (`extra["path"]`).

**Navidrome ids.** A library ingested from Navidrome (or by the watcher with
`navidrome.db_path` set) keeps Navidrome's media file ids as track ids, and
those go to `createPlaylist` as they are. A track id Navidrome does not know
(a library read from a music folder alone derives ids from paths) is resolved
by its metadata, as the query service resolves Navidrome's songs
(`recommender/songs.py`): a `search3` for its title, then the song with the
same normalised title and artist; among several, the same album first, then
the closest duration. What resolves to nothing is left out of the playlist and
named in the answer's `missing`, with the reason. Navidrome itself drops
unknown ids without a word, so each id is checked first (`getSong`).

**M3U8.** One `#EXTINF` line (seconds, "artist - title") and the path per
track, in order. The paths are absolute, as the embedder read them on the
machine sonicbus runs on; a track whose row has no path gets a comment line.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, Field

from pipeline.config import NavidromeSettings
from pipeline.errors import InvalidInput
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.playlists import navidrome_playlist
from pipeline.navidrome.subsonic import SubsonicClient
from pipeline.recommender.songs import title_key
from pipeline.store import StoredTrack, VectorStore

NOT_FOUND = 70  # the Subsonic error code of "the requested data was not found"
CHECKS_AT_ONCE = 8
SEARCH_SONGS = 50


def track_rows(
    store: VectorStore, models: Sequence[str], track_ids: Sequence[str]
) -> dict[str, StoredTrack]:
    """Blocking: each id's stored row, from the first model (in `models` order) holding it."""
    rows: dict[str, StoredTrack] = {}
    for model in models:
        wanted = [t for t in dict.fromkeys(track_ids) if t not in rows]
        if not wanted:
            break
        collection = store.active_collection(model)
        if store.has_collection(collection):
            rows.update(store.get(collection, wanted))
    return rows


# -- M3U8 ---------------------------------------------------------------------------------------


def m3u8_text(name: str, track_ids: Sequence[str], rows: dict[str, StoredTrack]) -> str:
    """The playlist as M3U8 (UTF-8): absolute paths, in the order given."""
    lines = ["#EXTM3U", f"#PLAYLIST:{_one_line(name)}"]
    for track_id in track_ids:
        row = rows[track_id]
        label = _one_line(f"{row.artist or '?'} - {row.title or track_id}")
        lines.append(f"#EXTINF:{round(row.duration) if row.duration else -1},{label}")
        path = str(row.extra.get("path") or "")
        lines.append(_one_line(path) if path else f"# {_one_line(track_id)} (no path known)")
    return "\n".join(lines) + "\n"


def attachment(name: str, suffix: str) -> str:
    """A Content-Disposition naming the download after the playlist (ASCII and UTF-8 forms)."""
    plain = re.sub(r"[^A-Za-z0-9 ._-]+", "_", name).strip(" ._") or "playlist"
    full = urllib.parse.quote(f"{name}{suffix}", safe="")
    return f"attachment; filename=\"{plain}{suffix}\"; filename*=UTF-8''{full}"


def _one_line(text: str) -> str:
    """Line breaks in a tag would start a new entry: they become spaces."""
    return " ".join(text.splitlines())


# -- Navidrome ----------------------------------------------------------------------------------


class MissingTrack(BaseModel):
    track_id: str
    reason: str


class SavedPlaylist(BaseModel):
    """What `POST /api/playlists/save` answers."""

    playlist_id: str
    name: str
    tracks: list[str] = Field(description="The Navidrome song ids written, in order.")
    created: bool = Field(description="False: a playlist of this name was replaced.")
    resolved: dict[str, str] = Field(
        default_factory=dict, description="Track id -> Navidrome id, where they differ."
    )
    missing: list[MissingTrack] = Field(default_factory=list)


async def save_to_navidrome(
    navidrome: NavidromeSettings,
    name: str,
    track_ids: Sequence[str],
    rows: dict[str, StoredTrack],
) -> SavedPlaylist:
    """Write the playlist `name` of the configured user (a playlist of that name is replaced,
    as `sonicbus playlist --to-navidrome` does). Raises NavidromeUnavailable (503) when the
    server cannot be reached or refuses; `NoSongs` (422) when no track is in Navidrome."""
    ordered = list(dict.fromkeys(track_ids))
    async with SubsonicClient.from_settings(navidrome) as client:
        await client.ping()  # a server that is down or refuses us: one clear 503, before any work
        limit = asyncio.Semaphore(CHECKS_AT_ONCE)

        async def song_of(track_id: str) -> str | MissingTrack:
            async with limit:
                return await _navidrome_id(client, track_id, rows.get(track_id))

        found = await asyncio.gather(*(song_of(t) for t in ordered))
    resolved = {t: s for t, s in zip(ordered, found, strict=True) if isinstance(s, str)}
    missing = [s for s in found if isinstance(s, MissingTrack)]
    written = list(dict.fromkeys(resolved[t] for t in ordered if t in resolved))
    if not written:
        raise NoSongs(
            "none of these tracks is in Navidrome: "
            + "; ".join(f"{m.track_id}: {m.reason}" for m in missing[:5])
        )
    playlist_id, created = await navidrome_playlist(navidrome, name, written)
    return SavedPlaylist(
        playlist_id=playlist_id,
        name=name,
        tracks=written,
        created=created,
        resolved={t: s for t, s in resolved.items() if t != s},
        missing=missing,
    )


class NoSongs(InvalidInput):
    """Nothing of the playlist is in Navidrome: nothing to write (422)."""


async def _navidrome_id(
    client: SubsonicClient, track_id: str, row: StoredTrack | None
) -> str | MissingTrack:
    """The track's Navidrome song id: its own id when Navidrome knows it, else by metadata."""
    if await _song(client, track_id) is not None:
        return track_id
    if row is None:
        return MissingTrack(
            track_id=track_id, reason="not in sonicbus' library, and not a Navidrome song id"
        )
    if not row.title:
        return MissingTrack(
            track_id=track_id, reason="not a Navidrome song id, and no title to look it up by"
        )
    found = await _song_by_metadata(client, row)
    if found is None:
        who = row.artist or "an unknown artist"
        return MissingTrack(
            track_id=track_id, reason=f"no Navidrome song titled {row.title!r} by {who!r}"
        )
    return found


async def _song(client: SubsonicClient, song_id: str) -> dict[str, Any] | None:
    """Navidrome's song of this id, or None when it has none (error 70)."""
    try:
        async with client.stream("getSong", id=song_id) as response:
            await response.aread()
    except httpx.HTTPError as exc:
        raise NavidromeUnavailable(f"Subsonic server {client.url}: getSong failed: {exc}") from exc
    try:
        body = response.json()["subsonic-response"]
    except (ValueError, KeyError, TypeError):
        body = {}
    if body.get("status") == "ok":
        return dict(body.get("song") or {})
    if (body.get("error") or {}).get("code") == NOT_FOUND:
        return None
    client.answer("getSong", response)  # raises NavidromeUnavailable with Navidrome's reason
    return None


async def _song_by_metadata(client: SubsonicClient, row: StoredTrack) -> str | None:
    """The Navidrome id of the song with the row's title and artist (see the module doc)."""
    title = title_key(row.title)
    body = await client.call(
        "search3", query=title, songCount=SEARCH_SONGS, artistCount=0, albumCount=0
    )
    songs = (body.get("searchResult3") or {}).get("song") or []
    artist = title_key(row.artist)
    matches = [
        s for s in songs
        if title_key(str(s.get("title") or "")) == title
        and (not artist or artist in _artists_of(s))
    ]  # fmt: skip
    if not matches:
        return None
    album = title_key(row.album)

    def preference(song: dict[str, Any]) -> tuple[bool, float]:
        seconds = float(song.get("duration") or 0.0)
        far = abs(seconds - row.duration) if row.duration and seconds else 0.0
        return (title_key(str(song.get("album") or "")) != album, far)

    return str(min(matches, key=preference)["id"])


def _artists_of(song: dict[str, Any]) -> set[str]:
    names = [song.get("artist"), song.get("displayArtist")]
    names += [a.get("name") for a in song.get("artists") or [] if isinstance(a, dict)]
    return {title_key(str(n)) for n in names if n}
