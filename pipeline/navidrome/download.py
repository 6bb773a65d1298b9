"""The original audio file of a Navidrome track, fetched through Subsonic `download` when the
path on the event cannot be read here.

A library listed through the Subsonic API of a Navidrome on another machine gives events
whose paths are that machine's (or made up, for a player without "Report Real Path"), so
an embedder on a GPU box could not open them. Rather than asking for a shared folder,
the embedder downloads the original bytes: authenticated like every Subsonic call,
streamed to a temporary file that is deleted after decoding, cut off at a size limit and
under an overall timeout.

Errors: `NavidromeRefused` (the server answered, and will not serve this track: unknown
id, file gone, too large) is permanent, the track is dead-lettered with the reason;
`NavidromeUnavailable` (server down, timeout) may pass, the batch is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator

import httpx

from pipeline.config import NavidromeSettings
from pipeline.errors import InvalidInput
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.subsonic import SubsonicClient
from pipeline.schemas import TrackEvent


class NavidromeRefused(InvalidInput):
    """Navidrome answered but will not serve this track; asking again will not help."""


def from_navidrome(event: TrackEvent) -> bool:
    """True when the event's track id is Navidrome's (so `download?id=` can fetch it)."""
    return event.source == "navidrome" or event.navidrome_library_id is not None


def readable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.R_OK)


@contextlib.asynccontextmanager
async def reachable_audio(event: TrackEvent, navidrome: NavidromeSettings) -> AsyncIterator[str]:
    """The event's path when it can be read here, else a downloaded copy (deleted on exit)."""
    if readable(event.path) or not from_navidrome(event) or not navidrome.download_fallback:
        yield event.path
        return
    if not (navidrome.url and navidrome.user):
        raise NavidromeRefused(
            f"{event.path} cannot be read here and no Navidrome to download it from is "
            "configured (navidrome.url, navidrome.user, navidrome.password)"
        )
    suffix = f".{event.suffix}" if event.suffix else os.path.splitext(event.path)[1]
    handle, temporary = tempfile.mkstemp(prefix="sonicbus-", suffix=suffix)
    os.close(handle)
    try:
        await download(navidrome, event.track_id, temporary)
        yield temporary
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


async def download(navidrome: NavidromeSettings, track_id: str, destination: str) -> int:
    """Stream the original of `track_id` into `destination`; returns its size in bytes."""
    limit = navidrome.download_max_mb * 1024 * 1024
    seconds = navidrome.download_timeout_s
    async with SubsonicClient.from_settings(navidrome) as client:
        try:
            async with asyncio.timeout(seconds):
                return await _stream(client, track_id, destination, limit)
        except TimeoutError:
            raise NavidromeUnavailable(
                f"downloading track {track_id} from {client.url} took over {seconds:g} s "
                "(navidrome.download_timeout_s)"
            ) from None
        except httpx.TransportError as exc:
            raise NavidromeUnavailable(
                f"cannot download track {track_id} from {client.url}: {type(exc).__name__}: {exc}"
            ) from exc


async def _stream(client: SubsonicClient, track_id: str, destination: str, limit: int) -> int:
    async with client.stream("download", id=track_id) as response:
        kind = response.headers.get("content-type", "")
        if response.status_code >= 500:
            raise NavidromeUnavailable(
                f"{client.url} answered HTTP {response.status_code} to download of {track_id}"
            )
        if response.status_code >= 400 or "json" in kind or "xml" in kind:
            # Navidrome answers a refused download with a Subsonic error (HTTP 200).
            await response.aread()
            try:
                client.answer("download", response)
            except NavidromeUnavailable as exc:
                reason = f"Navidrome refused to serve track {track_id}: {exc}"
                raise NavidromeRefused(reason) from None
            raise NavidromeRefused(f"{client.url} sent no audio for track {track_id} ({kind})")
        declared = int(response.headers.get("content-length") or 0)
        if declared > limit:
            raise _too_large(track_id, declared, limit)
        size = 0
        with open(destination, "wb") as out:
            async for chunk in response.aiter_bytes(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise _too_large(track_id, size, limit)
                out.write(chunk)
        return size


def _too_large(track_id: str, size: int, limit: int) -> NavidromeRefused:
    return NavidromeRefused(
        f"track {track_id} is larger than the download limit ({size} > {limit} bytes; "
        "navidrome.download_max_mb)"
    )
