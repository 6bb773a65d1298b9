"""The Subsonic API of a Navidrome server, as far as listing a library needs it.

Token authentication (t = md5(password + salt), s = salt, with u, v, c and
f=json on every call), `ping`, `getMusicFolders`, and `search3` with an empty
query paged through `songCount`/`songOffset`, once per music folder, which is
how Navidrome lists a whole library to clients that sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from typing import Any

import httpx
from pydantic import ValidationError

from pipeline.config import NavidromeSettings
from pipeline.navidrome.database import (
    NavidromeListing,
    NavidromeTrack,
    NavidromeUnavailable,
    TrackAnnotation,
    parse_time,
    positive_number,
)
from pipeline.schemas import TrackMetadata
from pipeline.schemas.base import describe_validation_error

log = logging.getLogger(__name__)


class SubsonicClient:
    """A small async Subsonic client; every failure becomes NavidromeUnavailable.

    Timeouts, connection errors and HTTP 5xx are retried with backoff; an API
    error (wrong password, unknown endpoint) is not, since it would not change.
    """

    @classmethod
    def from_settings(cls, navidrome: NavidromeSettings) -> SubsonicClient:
        """The client of the configured server and user; the one place it is built.

        Raises NavidromeUnavailable when the URL or the user is not configured.
        """
        n = navidrome
        if not (n.url and n.user):
            raise NavidromeUnavailable(
                "the Subsonic API needs navidrome.url, navidrome.user and navidrome.password "
                "(SONICBUS_NAVIDROME__URL, ...)"
            )
        return cls(
            n.url,
            n.user,
            n.password.get_secret_value() if n.password else "",
            client_name=n.client_name,
            api_version=n.api_version,
            timeout_s=n.timeout_s,
            retries=n.retries,
        )

    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        *,
        client_name: str = "sonicbus",
        api_version: str = "1.16.1",
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self._password = password
        self.client_name = client_name
        self.api_version = api_version
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> SubsonicClient:
        self._http = httpx.AsyncClient(timeout=self.timeout_s)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _auth(self) -> dict[str, str]:
        salt = secrets.token_hex(8)
        token = hashlib.md5((self._password + salt).encode()).hexdigest()
        return {
            "u": self.user,
            "t": token,
            "s": salt,
            "v": self.api_version,
            "c": self.client_name,
            "f": "json",
        }

    async def call(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """One API call; returns the `subsonic-response` object of a successful answer."""
        if self._http is None:
            raise RuntimeError("use `async with SubsonicClient(...)`")
        url = f"{self.url}/rest/{endpoint}"
        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await self._http.get(url, params={**self._auth(), **params})
            except httpx.TimeoutException:
                failure = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.TransportError as exc:
                failure = f"cannot connect: {type(exc).__name__}: {exc}"
                continue
            if response.status_code >= 500:
                failure = f"HTTP {response.status_code}"
                continue
            return self._answer(endpoint, response)
        tries = self.retries + 1
        raise NavidromeUnavailable(
            f"Subsonic server {self.url}: {endpoint} failed after {tries} tries: {failure}"
        )

    def stream(self, endpoint: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
        """A streamed GET (`download`, `stream`): `async with client.stream(...) as response`.
        The caller reads the body, or passes an error answer to `answer`; `headers` go along
        (a player's Range, say)."""
        if self._http is None:
            raise RuntimeError("use `async with SubsonicClient(...)`")
        url = f"{self.url}/rest/{endpoint}"
        return self._http.stream("GET", url, params={**self._auth(), **params}, headers=headers)

    def answer(self, endpoint: str, response: httpx.Response) -> dict[str, Any]:
        """The `subsonic-response` of a read response; NavidromeUnavailable on an error."""
        return self._answer(endpoint, response)

    def _answer(self, endpoint: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise NavidromeUnavailable(
                f"Subsonic server {self.url}: {endpoint} answered HTTP {response.status_code}"
            )
        try:
            body = response.json()["subsonic-response"]
        except (ValueError, KeyError, TypeError):
            raise NavidromeUnavailable(
                f"{self.url} did not answer {endpoint} like a Subsonic server (no JSON "
                "subsonic-response); check the URL"
            ) from None
        if body.get("status") != "ok":
            error = body.get("error") or {}
            raise NavidromeUnavailable(
                f"Subsonic server {self.url}: {endpoint} failed: error {error.get('code')}: "
                f"{error.get('message', 'no message')}"
            )
        return body

    async def ping(self) -> None:
        await self.call("ping")

    async def music_folders(self) -> list[tuple[int, str]]:
        body = await self.call("getMusicFolders")
        folders = (body.get("musicFolders") or {}).get("musicFolder") or []
        return [(int(f["id"]), str(f.get("name", ""))) for f in folders]

    async def songs(self, page_size: int, folder_id: int | None = None) -> list[dict[str, Any]]:
        """Every song (of one music folder), page by page."""
        songs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"query": "", "artistCount": 0, "albumCount": 0}
        if folder_id is not None:
            params["musicFolderId"] = folder_id
        while True:
            body = await self.call("search3", songCount=page_size, songOffset=len(songs), **params)
            page = (body.get("searchResult3") or {}).get("song") or []
            songs.extend(page)
            if len(page) < page_size:
                return songs

    async def library(self, page_size: int) -> NavidromeListing:
        """All songs of all music folders as NavidromeTracks (music folder id = library id)."""
        await self.ping()
        folders: list[tuple[int | None, str]] = [*await self.music_folders()] or [(None, "")]
        listing = NavidromeListing()
        seen: set[str] = set()
        for folder_id, _name in folders:
            for song in await self.songs(page_size, folder_id):
                try:
                    track = track_from_song(song, folder_id)
                except ValidationError as exc:
                    key = str(song.get("id") or song.get("path") or "?")
                    reason = f"unusable Subsonic song: {describe_validation_error(exc)}"
                    listing.problems.append((key, reason))
                    continue
                if track.id not in seen:  # servers that ignore musicFolderId repeat songs
                    seen.add(track.id)
                    listing.tracks.append(track)
        return listing


def _first(items: Any, key: str) -> str | None:
    if isinstance(items, list) and items and isinstance(items[0], dict):
        value = items[0].get(key)
        return str(value) if value else None
    return None


def track_from_song(song: dict[str, Any], library_id: int | None) -> NavidromeTrack:
    """A Subsonic `song` (with OpenSubsonic fields when present) as a NavidromeTrack.

    The API carries no MusicBrainz album or artist ids and whole seconds only.
    """
    duration = song.get("duration")
    return NavidromeTrack(
        id=str(song.get("id") or ""),
        path=str(song.get("path") or ""),
        library_id=library_id,
        suffix=song.get("suffix") or None,
        size=song.get("size"),
        metadata=TrackMetadata(
            title=song.get("title") or None,
            artist=song.get("artist") or None,
            album_artist=song.get("displayAlbumArtist") or _first(song.get("albumArtists"), "name"),
            album=song.get("album") or None,
            track_number=positive_number(song.get("track")),
            disc_number=positive_number(song.get("discNumber")),
            year=positive_number(song.get("year")),
            genre=song.get("genre") or None,
            duration_s=float(duration) if duration else None,
            mbz_recording_id=song.get("musicBrainzId") or None,
        ),
        annotation=TrackAnnotation(
            play_count=int(song.get("playCount") or 0),
            play_date=parse_time(song.get("played")),
            rating=int(song.get("userRating") or 0),
            starred=bool(song.get("starred")),
            starred_at=parse_time(song.get("starred")),
        ),
    )
