"""Navidrome-shaped requests as `QueryRequest`s, and query replies as Navidrome's matches.

The bodies of `POST /navidrome/v1/similar` and `/path` (songs as Navidrome's
`SongRef`s), the query each becomes, and the reply mapped back: `similarity` is
the cosine score clamped to [0, 1]; results carry Navidrome's id where known
plus title, artist, album and MBID, so Navidrome's own matcher finds them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.schemas.queries import MAX_LIMIT, QueryReply, ScoredTrack
from pipeline.schemas.songs import AlbumRef, ArtistRef, SongRef

MAX_PATH = 200  # PathRequest.steps' bound
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
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
