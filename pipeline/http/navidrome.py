"""The endpoints the Navidrome plugin calls: `POST /navidrome/v1/similar` and `/path`.

The plugin (plugins/navidrome/) forwards what Navidrome gives it, songs as
Navidrome's `SongRef`s, albums and artists by id, name and MBID, and gets
back `{"matches": [{"song": SongRef, "similarity": 0..1}], "warnings": [...]}`,
the shape Navidrome's SonicSimilarity capability returns. Nothing here reads
the store: each call becomes one `QueryRequest` on `requests` (through the
runtime's `QueryClient`), the query service resolves the songs (it holds the
catalog, `recommender/songs.py`) and the reply is mapped back. docs/navidrome.md
has the contract; in short:

- `count` <= 0: an empty answer at once; above the cap (500 similar, 200 on a
  path) clamped, with a warning; a path has at least its two ends;
- `similarity` = the cosine score clamped to [0, 1] (1: the same sound);
- a seed sonicbus does not know: 200, no matches, a warning (the query
  service logs the reason once); a path from a song to itself: that song alone;
- a bad body 422, no reply within the deadline (`http.reply_timeout_s`, or
  the body's shorter `timeout_s`) 504, the bus or Milvus down 503, a wrong
  token 401; without `http.client_token` only loopback callers (or the admin
  token) get in: 403 for the others.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.config import Settings
from pipeline.errors import REPLY_HTTP_STATUS, SonicbusError, Unavailable
from pipeline.http.auth import reader_access
from pipeline.schemas.queries import MAX_LIMIT, QueryReply, ScoredTrack
from pipeline.schemas.songs import AlbumRef, ArtistRef, SongRef

log = logging.getLogger(__name__)

MAX_PATH = 200  # PathRequest.steps' bound
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
class Asker(Protocol):
    async def ask(self, request: Any, timeout: float | None = None) -> QueryReply: ...


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    count: int = Field(20, description="Songs wanted; <= 0: none; clamped to the cap.")
    models: list[str] | None = Field(None, min_length=1, max_length=8)
    timeout_s: float | None = Field(
        None, gt=0, description="A deadline shorter than http.reply_timeout_s."
    )

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(MODEL_NAME.match(m) for m in value):
            raise ValueError(f"not model names: {value}")
        return list(dict.fromkeys(value)) if value else value


class SimilarBody(_Body):
    """Exactly one of song, album, artist."""

    song: SongRef | None = None
    album: AlbumRef | None = None
    artist: ArtistRef | None = None
    diversity: float | None = Field(None, ge=0.0, le=1.0)
    max_per_artist: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_seed(self) -> SimilarBody:
        given = [n for n in ("song", "album", "artist") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of song, album, artist (got {given or 'none'})")
        return self


class PathBody(_Body):
    start: SongRef
    end: SongRef
    count: int = Field(10, description="Songs on the path, both ends included.")


class Match(BaseModel):
    song: SongRef
    similarity: float = Field(ge=0.0, le=1.0)


class Matches(BaseModel):
    matches: list[Match] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def song_ref(track: ScoredTrack) -> SongRef:
    """A reply's track as Navidrome matches songs: id (= Navidrome's id when the library was
    ingested from Navidrome), then MBID, then title + artist (+ album, duration)."""
    duration = track.duration or None
    return SongRef(
        id=track.track_id,
        name=track.title or "",
        mbid=track.mbid,
        artist=track.artist,
        album=track.album,
        duration=duration,
        duration_ms=round(duration * 1000) if duration else None,
    )


def similarity(score: float) -> float:
    """The cosine score clamped to [0, 1]: 1 the same sound, 0 unrelated (or opposite)."""
    return round(min(1.0, max(0.0, float(score))), 6)


def matches(reply: QueryReply, warnings: list[str]) -> Matches:
    found = [Match(song=song_ref(t), similarity=similarity(t.score)) for t in reply.tracks]
    return Matches(matches=found, warnings=[*warnings, *reply.warnings])


def _count(count: int, cap: int, warnings: list[str]) -> int:
    if count > cap:
        warnings.append(f"count {count} is above the cap; clamped to {cap}")
        return cap
    return count


def similar_query(body: SimilarBody, warnings: list[str]) -> dict[str, Any]:
    query: dict[str, Any] = {
        "type": "similar",
        "request_id": f"nd-{uuid.uuid4().hex[:16]}",
        "limit": _count(body.count, MAX_LIMIT, warnings),
    }
    for name in ("song", "album", "artist"):
        ref = getattr(body, name)
        if ref is not None:
            query[name] = ref.model_dump(exclude_none=True)
    for name in ("models", "diversity", "max_per_artist"):
        if getattr(body, name) is not None:
            query[name] = getattr(body, name)
    return query


def path_query(body: PathBody, warnings: list[str]) -> dict[str, Any]:
    steps = _count(body.count, MAX_PATH, warnings)
    if steps < 2:
        warnings.append(f"count {steps}: a path has at least its two ends; 2 given")
        steps = 2
    query: dict[str, Any] = {
        "type": "path",
        "request_id": f"nd-{uuid.uuid4().hex[:16]}",
        "start": body.start.model_dump(exclude_none=True),
        "end": body.end.model_dump(exclude_none=True),
        "steps": steps,
        "limit": steps,
        "exact_length": True,
    }
    if body.models:
        query["models"] = body.models
    return query


def navidrome_router(settings: Settings, client: Callable[[], Asker]) -> APIRouter:
    """The endpoints, asking through `client()` (the runtime's QueryClient)."""
    router = APIRouter(prefix="/navidrome/v1", tags=["navidrome"])
    http = settings.http

    reader = reader_access(http)

    async def ask(query: dict[str, Any], timeout_s: float | None) -> QueryReply:
        timeout = min(http.reply_timeout_s, timeout_s or http.reply_timeout_s)
        try:
            return await client().ask(query, timeout=timeout)
        except SonicbusError:
            raise
        except Exception as exc:  # the broker gone, the client stopped
            raise Unavailable(f"the bus cannot be reached: {type(exc).__name__}: {exc}") from exc

    async def answer(
        query: dict[str, Any], timeout_s: float | None, warnings: list[str]
    ) -> Matches:
        reply = await ask(query, timeout_s)
        if reply.ok:
            return matches(reply, warnings)
        assert reply.error is not None
        if reply.error.code == "not_found":  # a seed not embedded: nothing to say, not an error
            return Matches(warnings=[*warnings, *reply.warnings, reply.error.message])
        status = REPLY_HTTP_STATUS.get(reply.error.code, 502)
        raise HTTPException(status, f"{reply.error.code}: {reply.error.message}")

    @router.post("/similar", response_model=Matches, response_model_exclude_none=True,
                 dependencies=[Depends(reader)])  # fmt: skip
    async def similar(body: SimilarBody) -> Matches:
        """Songs like a song, an album's songs or an artist's songs (Instant Mix, radio)."""
        if body.count <= 0:
            return Matches(warnings=[f"count {body.count}: nothing asked for"])
        warnings: list[str] = []
        return await answer(similar_query(body, warnings), body.timeout_s, warnings)

    @router.post("/path", response_model=Matches, response_model_exclude_none=True,
                 dependencies=[Depends(reader)])  # fmt: skip
    async def path(body: PathBody) -> Matches:
        """A path from `start` to `end` in `count` songs, both ends included, no repeats."""
        if body.count <= 0:
            return Matches(warnings=[f"count {body.count}: nothing asked for"])
        warnings: list[str] = []
        return await answer(path_query(body, warnings), body.timeout_s, warnings)

    return router
