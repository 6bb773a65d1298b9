"""The library pages' API: search, a track's details, and its audio.

- GET /api/tracks?q=TEXT&limit=N: tracks whose title, artist or album hold every word of
  TEXT (the autocomplete of /library), best first; no TEXT lists the library
  (`track_catalog`: where the catalog comes from and why);
- GET /api/tracks/{id}?similar=N: the track, its top MusiCNN tags, and the tracks similar
  to it, asked over the bus with this service's QueryClient like any other client's
  `similar` request (so the page shows exactly the bus's answer); 404 for an unknown id;
- GET|HEAD /api/audio/{id}: the audio, with byte ranges, only from files under the music
  roots, else through Navidrome (`audio_stream`).

All reads: `reader_access` (the browser's session, or the client token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field

from models.musicnn_net import MSD_TAGS
from models.text import TAGGED_MODELS
from pipeline.client import QueryTimeout
from pipeline.config import Settings
from pipeline.errors import NotFound
from pipeline.http.audio_stream import (
    can_stream_from_navidrome,
    file_response,
    local_file,
    music_roots,
    navidrome_stream,
    refuse,
)
from pipeline.http.auth import reader_access
from pipeline.http.runtime import OpsRuntime
from pipeline.http.track_catalog import MAX_RESULTS, TrackCatalog, TrackSummary
from pipeline.schemas.queries import SimilarRequest
from pipeline.store import StoredTrack, VectorStore

log = logging.getLogger(__name__)

TOP_TAGS = 10
TrackId = Annotated[str, PathParam(min_length=1, max_length=256)]


class TrackList(BaseModel):
    tracks: list[TrackSummary]


class TrackInfo(TrackSummary):
    file_name: str = Field("", description="The file's name (not its folder).")
    model: str = Field(description="The model whose collection the track is read from.")


class TagScore(BaseModel):
    tag: str
    score: float = Field(description="MusiCNN's probability of the tag, 0..1.")


class SimilarTrack(TrackSummary):
    score: float


class TrackDetails(BaseModel):
    track: TrackInfo
    top_tags: list[TagScore] = Field(description="Best first; empty when no tagged model.")
    similar: list[SimilarTrack] = Field(description="The bus's reply to a `similar` request.")
    similar_error: str | None = Field(None, description="Why `similar` is empty, if it failed.")


def top_tags(row: StoredTrack, k: int = TOP_TAGS) -> list[TagScore]:
    """The row's k most probable MusiCNN tags (none when the row holds no tag vector)."""
    tags = row.extra.get("tags")
    if not isinstance(tags, list) or len(tags) != len(MSD_TAGS):
        return []
    ranked = sorted(zip(MSD_TAGS, tags, strict=True), key=lambda pair: -float(pair[1]))
    return [TagScore(tag=name, score=round(float(score), 4)) for name, score in ranked[:k]]


def plausible_id(track_id: str) -> bool:
    """Could this be a track id? (never a path: no slash, backslash, `..` or control chars)"""
    return (
        0 < len(track_id) <= 256
        and ".." not in track_id
        and not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in track_id)
    )


def library_model(settings: Settings) -> str:
    """The model whose collection is the library the pages show (the first one embedded)."""
    return settings.embed.models[0] if settings.embed.models else "musicnn"


def library_router(settings: Settings, rt: Callable[[], OpsRuntime]) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["library"],
                       dependencies=[Depends(reader_access(settings.http))])  # fmt: skip
    model = library_model(settings)
    roots = music_roots(settings)
    catalogs: dict[int, TrackCatalog] = {}

    def catalog() -> TrackCatalog:
        store = rt().store
        if id(store) not in catalogs:  # one per store (tests give the app a runtime each)
            catalogs[id(store)] = TrackCatalog(store, model)
        return catalogs[id(store)]

    async def stored_row(store: VectorStore, track_id: str, of_model: str) -> StoredTrack | None:
        def read() -> StoredTrack | None:
            collection = store.active_collection(of_model)
            if not store.has_collection(collection):
                return None
            return store.get(collection, [track_id]).get(track_id)

        return await asyncio.to_thread(read)

    async def track_row(track_id: str) -> StoredTrack:
        row = await stored_row(rt().store, track_id, model)
        if row is None:
            raise NotFound(f"no track {track_id!r} in the library")
        return row

    async def tags_of(row: StoredTrack) -> list[TagScore]:
        found = top_tags(row)
        for other in sorted(TAGGED_MODELS - {model}):
            if found or other not in settings.embed.models:
                break
            tagged = await stored_row(rt().store, row.track_id, other)
            found = top_tags(tagged) if tagged is not None else []
        return found

    async def similar_to(track_id: str, limit: int) -> tuple[list[SimilarTrack], str | None]:
        if limit == 0:
            return [], None
        request = SimilarRequest(request_id=f"http-{uuid.uuid4().hex[:16]}", track_id=track_id,
                                 limit=limit, models=[model])  # fmt: skip
        try:
            reply = await rt().client.ask(request, timeout=settings.http.reply_timeout_s)
        except QueryTimeout as exc:
            return [], str(exc)
        if not reply.ok:
            return [], f"{reply.error.code}: {reply.error.message}" if reply.error else "failed"
        return [
            SimilarTrack(track_id=t.track_id, title=t.title or t.track_id, artist=t.artist or "",
                         album=t.album or "", duration=t.duration or None, score=t.score)
            for t in reply.tracks
        ], None  # fmt: skip

    @router.get("/tracks", response_model=TrackList)
    async def search_tracks(
        q: Annotated[
            str, Query(max_length=200, description="Words of a title, artist, album.")
        ] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = 20,
    ) -> TrackList:
        found = await asyncio.to_thread((await catalog().fresh()).search, q, limit)
        return TrackList(tracks=[entry.summary() for entry in found])

    @router.get("/tracks/{track_id}", response_model=TrackDetails)
    async def track_details(
        track_id: TrackId,
        similar: Annotated[int, Query(ge=0, le=100, description="Similar tracks wanted.")] = 12,
    ) -> TrackDetails:
        row = await track_row(track_id)
        tags, (neighbours, error) = await asyncio.gather(
            tags_of(row), similar_to(track_id, similar)
        )
        path = str(row.extra.get("path") or "")
        info = TrackInfo(track_id=row.track_id, title=row.title or os.path.basename(path),
                         artist=row.artist, album=row.album, duration=row.duration or None,
                         file_name=os.path.basename(path), model=model)  # fmt: skip
        return TrackDetails(track=info, top_tags=tags, similar=neighbours, similar_error=error)

    # `:path`: an id with slashes (a traversal attempt, decoded from %2F) still reaches the
    # handler, so it is refused with a log line like every other one. HEAD (players probe
    # the length) is the same handler, kept out of the schema: one operation, one id.
    @router.head("/audio/{track_id:path}", response_class=Response, include_in_schema=False)
    @router.get("/audio/{track_id:path}", response_class=Response)
    async def audio(track_id: str, request: Request) -> Response:
        if not plausible_id(track_id):
            raise refuse(track_id[:300], "", "not a track id (a path or control characters)")
        row = await stored_row(rt().store, track_id, model)
        if row is None:
            raise refuse(track_id, "", "unknown track id")
        path = str(row.extra.get("path") or "")
        real = await asyncio.to_thread(local_file, track_id, path, roots)
        if real is not None:
            return file_response(real)
        if not can_stream_from_navidrome(settings):
            raise refuse(track_id, path, "file not on this machine and no navidrome.url set")
        head = request.method == "HEAD"
        return await navidrome_stream(settings, track_id, request.headers.get("range"), head)

    return router
