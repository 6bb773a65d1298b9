"""The playlist builder's API under /api/playlists, for the /builder page and any client.

- GET /api/playlists/options: the modes, the configured models, whether Navidrome is set up;
- POST /api/playlists/build {"mode", ...the fields of that QueryRequest type, "exclude"}:
  the body becomes one `QueryRequest` (pipeline/schemas/queries.py: `mode` is its
  `type`, `exclude` joins `exclude_track_ids`, the request id is made here), published
  on `requests` with the runtime's QueryClient like any other client's; the answer is
  the reply's tracks (id, title, artist, album, duration, score, found_by), its warnings,
  alchemy's `filtered_out`, and `request`: the QueryRequest exactly as sent. A field the
  mode does not have, or a bad value, is 422 naming it; the reply's error codes map
  through `REPLY_HTTP_STATUS` (an unknown track: 404); no reply in time 504; the bus
  gone 503;
- POST /api/playlists/save {"name", "track_ids", "target": "navidrome"}: a Navidrome
  playlist of the configured user (`navidrome.user`), replacing one of that name; ids
  Navidrome does not know are resolved by metadata (playlist_targets.py); Navidrome
  unset, down or refusing: 503 saying so; nothing of it in Navidrome: 422;
- POST /api/playlists/m3u8 {"name", "track_ids"}: an M3U8 download with the absolute
  file paths of the store's rows (404 for ids not in the library).
Build and M3U8 read (`reader_access`); save writes (`admin_access`: a browser session
sends its CSRF header).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal, Protocol, get_args

from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config import Settings
from pipeline.errors import (
    REPLY_HTTP_STATUS,
    InvalidInput,
    NotFound,
    SonicbusError,
    Unavailable,
)
from pipeline.http.auth import admin_access, reader_access
from pipeline.http.playlist_targets import (
    SavedPlaylist,
    attachment,
    m3u8_text,
    save_to_navidrome,
    track_rows,
)
from pipeline.schemas.base import describe_validation_error
from pipeline.schemas.queries import (
    MAX_LIMIT,
    AlchemyRequest,
    InstantPlan,
    InstantRequest,
    PathRequest,
    QueryReply,
    RecommendRequest,
    ScoredTrack,
    SimilarRequest,
    TextRequest,
    query_request_adapter,
)
from pipeline.store import VectorStore

BuildMode = Literal["similar", "text", "path", "alchemy", "recommend", "instant"]
MODES: tuple[str, ...] = get_args(BuildMode)
REQUEST_TYPES: dict[str, type[BaseModel]] = {
    "similar": SimilarRequest,
    "text": TextRequest,
    "path": PathRequest,
    "alchemy": AlchemyRequest,
    "recommend": RecommendRequest,
    "instant": InstantRequest,
}
# Fields of a QueryRequest the builder sets itself, never the caller.
OWN_FIELDS = {"type", "request_id", "deadline_ms", "schema_version"}
MAX_TRACKS = 1000


class Runtime(Protocol):
    """What the router needs of the HTTP runtime (pipeline.http.runtime.OpsRuntime)."""

    @property
    def client(self) -> Any: ...

    @property
    def store(self) -> VectorStore: ...


class BuiltTrack(BaseModel):
    track_id: str
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    duration: float | None = None
    bpm: float | None = None
    key: str | None = None
    energy: float | None = None
    year: int | None = None
    genre: str | None = None
    score: float
    found_by: list[str] = Field(default_factory=list)


class BuildAnswer(BaseModel):
    request_id: str
    tracks: list[BuiltTrack]
    warnings: list[str] = Field(default_factory=list)
    filtered_out: list[BuiltTrack] = Field(
        default_factory=list, description="alchemy: tracks too close to the subtract set."
    )
    plan: InstantPlan | None = Field(None, description="instant: the sentence as read.")
    request: dict[str, Any] = Field(description="The QueryRequest as published.")
    elapsed_ms: float = Field(description="The query service's time for the answer.")


class NamedTracks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    track_ids: list[str] = Field(min_length=1, max_length=MAX_TRACKS)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the name cannot be blank")
        return " ".join(value.split())

    @field_validator("track_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not t.strip() or len(t) > 256]
        if bad:
            raise ValueError(f"not track ids: {bad[:3]}")
        return list(dict.fromkeys(t.strip() for t in value))


class SaveRequest(NamedTracks):
    target: Literal["navidrome"] = "navidrome"


class BuildOptions(BaseModel):
    modes: list[str]
    models: list[str] = Field(description="The configured models (`embed.models`).")
    navidrome: bool = Field(description="Whether saving to Navidrome is set up.")
    max_limit: int = MAX_LIMIT


def build_query(body: dict[str, Any]) -> Any:
    """The QueryRequest of a builder body (see the module doc); InvalidQuery for bad input."""
    given = dict(body)
    mode = given.pop("mode", None)
    if mode not in MODES:
        raise InvalidQuery(f"mode: one of {', '.join(MODES)} (got {mode!r})")
    exclude = given.pop("exclude", None) or []
    if not isinstance(exclude, list) or not all(isinstance(t, str) for t in exclude):
        raise InvalidQuery("exclude: a list of track ids")
    fields = set(REQUEST_TYPES[mode].model_fields) - OWN_FIELDS
    unknown = sorted(set(given) - fields)
    if unknown:
        raise InvalidQuery(
            f"{', '.join(unknown)}: not a field of mode {mode} (its fields: "
            f"{', '.join(sorted(fields))}, and exclude)"
        )
    before = given.get("exclude_track_ids") or []
    if not isinstance(before, list):
        raise InvalidQuery("exclude_track_ids: a list of track ids")
    query = {
        **given,
        "type": mode,
        "request_id": f"builder-{uuid.uuid4().hex[:16]}",
        "exclude_track_ids": list(dict.fromkeys([*before, *exclude])),
    }
    try:
        return query_request_adapter.validate_python(query)
    except ValidationError as exc:
        raise InvalidQuery(describe_validation_error(exc)) from exc


class InvalidQuery(InvalidInput):
    """A builder body that makes no QueryRequest (422, the message names the field)."""


def built(track: ScoredTrack) -> BuiltTrack:
    return BuiltTrack(**track.model_dump(include=set(BuiltTrack.model_fields)))


def build_answer(reply: QueryReply, sent: dict[str, Any]) -> BuildAnswer:
    return BuildAnswer(
        request_id=reply.request_id,
        tracks=[built(t) for t in reply.tracks],
        warnings=reply.warnings,
        filtered_out=[built(t) for t in reply.extra.get("filtered_out", [])],
        plan=reply.plan,
        request=sent,
        elapsed_ms=reply.elapsed_ms,
    )


def playlists_router(settings: Settings, runtime: Callable[[], Runtime]) -> APIRouter:
    router = APIRouter(prefix="/api/playlists", tags=["playlists"])
    reader_only = [Depends(reader_access(settings.http))]
    admin_only = [Depends(admin_access(settings.http))]
    timeout = settings.http.reply_timeout_s

    async def rows_of(track_ids: list[str]) -> dict[str, Any]:
        models = settings.embed.models
        return await asyncio.to_thread(track_rows, runtime().store, models, track_ids)

    @router.get("/options", response_model=BuildOptions, dependencies=reader_only)
    async def options() -> BuildOptions:
        n = settings.navidrome
        return BuildOptions(
            modes=list(MODES), models=settings.embed.models, navidrome=bool(n.url and n.user)
        )

    @router.post("/build", response_model=BuildAnswer, dependencies=reader_only)
    async def build(body: dict[str, Any] = Body(...)) -> BuildAnswer:  # noqa: B008
        """One QueryRequest over the bus (see the module doc)."""
        query = build_query(body)
        query = query.model_copy(update={"deadline_ms": int((time.time() + timeout) * 1000)})
        sent = query.model_dump(mode="json", exclude_none=True)
        try:
            reply = await runtime().client.ask(query, timeout=timeout)
        except SonicbusError:
            raise
        except Exception as exc:  # the broker gone, the client stopped
            raise Unavailable(f"the bus cannot be reached: {type(exc).__name__}: {exc}") from exc
        if not reply.ok and reply.error is not None:
            status = REPLY_HTTP_STATUS.get(reply.error.code, 502)
            raise HTTPException(status, f"{reply.error.code}: {reply.error.message}")
        return build_answer(reply, sent)

    @router.post("/save", response_model=SavedPlaylist, dependencies=admin_only)
    async def save(body: SaveRequest) -> SavedPlaylist:
        """The list as a Navidrome playlist (see the module doc)."""
        rows = await rows_of(body.track_ids)
        return await save_to_navidrome(settings.navidrome, body.name, body.track_ids, rows)

    @router.post(
        "/m3u8",
        response_class=Response,
        dependencies=reader_only,
        responses={200: {"content": {"audio/x-mpegurl": {}}, "description": "The M3U8 file."}},
    )
    async def m3u8(body: NamedTracks) -> Response:
        """The list as an M3U8 file of absolute paths, in order."""
        rows = await rows_of(body.track_ids)
        unknown = [t for t in body.track_ids if t not in rows]
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise NotFound(f"not in sonicbus' library: {shown}")
        return Response(
            m3u8_text(body.name, body.track_ids, rows),
            media_type="audio/x-mpegurl; charset=utf-8",
            headers={"Content-Disposition": attachment(body.name, ".m3u8")},
        )

    return router
