"""A track's audio for the browser's player: from the music folders, or through Navidrome.

`GET /api/audio/<track_id>` never takes a path from the URL: the id names a stored row, and
the row's `extra.path` names the file. That path is still not trusted (a row written by
another producer, a symlink planted in a folder): the file is served only when its real
path, symlinks resolved, lies inside one of the configured music roots, which are

- `watcher.roots` (`sonicbus up MUSIC_DIR` puts its folders there for its HTTP service),
- `navidrome.music_folder`, when set,
- the local folders of `navidrome.path_map`.

Outside every root, a file that exists is refused with 404 and a log line naming the path
(the caller learns nothing about the disk); a missing file under a root is 404 too. A file
that is simply not on this machine (a Navidrome elsewhere, whose paths are its own) is
streamed through Subsonic `stream` when `navidrome.url` is set, passing the Range header
through; a Navidrome that refuses (unknown id, file gone, server down) answers 502 with its
reason. Byte ranges, 416 and HEAD of local files are Starlette's `FileResponse`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response, StreamingResponse

from pipeline.config import Settings
from pipeline.errors import NotFound, Unavailable
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.subsonic import SubsonicClient

log = logging.getLogger(__name__)

AUDIO_TYPES = {
    ".flac": "audio/flac",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".wav": "audio/wav",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
    ".wma": "audio/x-ms-wma",
    ".ape": "audio/x-ape",
    ".wv": "audio/x-wavpack",
}
PASSED_HEADERS = ("content-type", "content-length", "content-range", "accept-ranges")


class AudioRefused(NotFound):
    """No audio for this track here: not a file under a music root (the log says which)."""


class NavidromeStreamFailed(Unavailable):
    """Navidrome would not stream the track: the gateway's answer was bad, hence 502."""

    http_status = 502


def music_roots(settings: Settings) -> list[str]:
    """The folders audio may be served from, symlinks resolved (see the module docstring)."""
    folders: list[Path | str] = [*settings.watcher.roots, *settings.navidrome.path_map.values()]
    if settings.navidrome.music_folder is not None:
        folders.append(settings.navidrome.music_folder)
    roots = []
    for folder in folders:
        real = os.path.realpath(os.path.expanduser(str(folder)))
        if real not in roots:
            roots.append(real)
    return roots


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def can_stream_from_navidrome(settings: Settings) -> bool:
    return bool(settings.navidrome.url and settings.navidrome.user)


def refuse(track_id: str, path: str, reason: str) -> AudioRefused:
    log.warning("audio of track %s refused: %s (%s)", track_id, reason, path or "no path",
                extra={"track_id": track_id})  # fmt: skip
    return AudioRefused(f"no audio for track {track_id!r} here")


def local_file(track_id: str, path: str, roots: list[str]) -> str | None:
    """The real path of the track's file when it may be served; None when the file is not
    on this machine at all (Navidrome may have it); AudioRefused otherwise."""
    if not path:
        return None
    if not os.path.isabs(path) or "\x00" in path:
        raise refuse(track_id, path, "stored path is not absolute")
    real = os.path.realpath(path)
    under_root = any(inside(real, root) for root in roots)
    if not os.path.lexists(path):
        if under_root or any(inside(os.path.normpath(path), root) for root in roots):
            raise refuse(track_id, path, "file missing")
        return None
    if not under_root:
        raise refuse(
            track_id, path, "outside the music roots " + (", ".join(roots) or "(none set)")
        )
    if not os.path.isfile(real):
        raise refuse(track_id, path, "not a regular file (or a dangling symlink)")
    return real


def file_response(real: str) -> Response:
    """The file with Range support (206, 416 with `Content-Range: bytes */size`, HEAD)."""
    media_type = AUDIO_TYPES.get(os.path.splitext(real)[1].lower(), "application/octet-stream")
    return FileResponse(real, media_type=media_type)


async def navidrome_stream(
    settings: Settings, track_id: str, range_header: str | None, head: bool
) -> Response:
    """The track through Subsonic `stream`, its Range passed through; 502 when refused."""
    stack = contextlib.AsyncExitStack()
    try:
        client = await stack.enter_async_context(SubsonicClient.from_settings(settings.navidrome))
        headers = {"Range": range_header} if range_header else None
        response: httpx.Response = await stack.enter_async_context(
            client.stream("stream", headers=headers, id=track_id)
        )
        await _check_answer(client, track_id, response)
    except httpx.TransportError as exc:
        await stack.aclose()
        raise _failed(
            track_id, f"cannot reach {settings.navidrome.url}: {type(exc).__name__}"
        ) from exc
    except BaseException:
        await stack.aclose()
        raise
    passed = {k: v for k in PASSED_HEADERS if (v := response.headers.get(k)) is not None}
    if head or response.status_code == 416:
        await stack.aclose()
        return Response(status_code=response.status_code, headers=passed)
    return StreamingResponse(_body(response), status_code=response.status_code, headers=passed,
                             background=BackgroundTask(stack.aclose))  # fmt: skip


async def _body(response: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in response.aiter_raw(1 << 16):
        yield chunk


async def _check_answer(client: SubsonicClient, track_id: str, response: httpx.Response) -> None:
    kind = response.headers.get("content-type", "")
    if response.status_code == 416:
        return
    if response.status_code >= 400 or "json" in kind or "xml" in kind:
        await response.aread()
        try:  # Navidrome answers a refused stream with a Subsonic error, HTTP 200
            client.answer("stream", response)
        except NavidromeUnavailable as exc:
            raise _failed(track_id, str(exc)) from None
        raise _failed(track_id, f"{client.url} sent no audio ({kind})")


def _failed(track_id: str, reason: str) -> NavidromeStreamFailed:
    log.warning("Navidrome did not stream track %s: %s", track_id, reason,
                extra={"track_id": track_id})  # fmt: skip
    return NavidromeStreamFailed(f"Navidrome refused to stream track {track_id!r}: {reason}")
