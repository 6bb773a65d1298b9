"""The music map's API under /api/map, for the /map page (pipeline/ops/music_map.py keeps the map).

- GET /api/map?model=M: every embedded track of the model as a point, in columns:
  `ids` (newline-separated), `x` and `y` (uint16 little-endian, base64: 0 is -1 and
  65535 is +1 on the map), `tag` (uint8, base64: each point's top tag, an index into
  `tag_names`, 255 for none), the legend (tags by how many points they top) and a
  `cursor` for /updates. gzip-compressed when the browser accepts it (1.1 MB for
  50,000 tracks with Navidrome-like ids; bench/ui_map.py). Titles and artists are not
  in it (they would double it): /tracks gives them for the points hovered, /search
  finds a song.
  `state` says "ready", "computing" (being drawn for the first time: ask again),
  or "empty" with a `message` the page shows.
- GET /api/map/updates?model=M&since=CURSOR: the points embedded (or moved) and the ids
  removed since, in the same columns, and the new cursor; `reload: true` when the map
  was redrawn since (or the cursor is unknown): fetch /api/map again.
- GET /api/map/tracks?model=M&ids=A,B: title, artist, album and top tags of those points.
- GET /api/map/search?model=M&q=TEXT: tracks on the map whose artist, title or album
  contains TEXT (every word of it).

All reads (`reader_access`). The path between songs and saving a selection are the
playlist builder's (`POST /api/playlists/build` mode "path", `/save`, `/m3u8`).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from pipeline.config import Settings
from pipeline.errors import InvalidInput
from pipeline.http.auth import reader_access
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.music_map import NO_TAG, LibraryMap, MusicMap, Point, tag_names
from pipeline.ops.replay import check_model

MAX_IDS = 100
SCALE = 65535
ModelQuery = Annotated[str | None, Query(description="A model; default: the first one.")]


class MapColumns(BaseModel):
    ids: str = Field(description="Track ids, newline-separated.")
    x: str = Field(description="uint16 LE, base64; 0 = -1, 65535 = +1.")
    y: str = Field(description="uint16 LE, base64; 0 = -1 (bottom), 65535 = +1 (top).")
    tag: str = Field(description=f"uint8, base64: index into tag_names; {NO_TAG} = none.")


class LegendEntry(BaseModel):
    tag: int = Field(description=f"Index into tag_names; {NO_TAG}: untagged.")
    name: str
    count: int


class MapDocument(BaseModel):
    model: str
    state: Literal["ready", "computing", "empty"]
    message: str | None = None
    version: int = 0
    cursor: str = ""
    count: int = 0
    method: str | None = None
    redrawing: bool = Field(False, description="A redraw runs in the background.")
    tag_names: list[str] = Field(default_factory=list)
    legend: list[LegendEntry] = Field(default_factory=list)
    columns: MapColumns | None = None


class MapUpdates(BaseModel):
    model: str
    reload: bool
    cursor: str
    count: int
    redrawing: bool = False
    columns: MapColumns | None = None
    removed: list[str] = Field(default_factory=list)


class TagScore(BaseModel):
    tag: str
    score: float


class MapTrack(BaseModel):
    track_id: str
    title: str
    artist: str
    album: str
    x: float
    y: float
    tags: list[TagScore]


class MapTracks(BaseModel):
    tracks: list[MapTrack]


def columns(points: Sequence[Point]) -> MapColumns:
    """The points as compact columns (see the module docstring)."""
    xy = np.asarray([(p.x, p.y) for p in points], np.float32).reshape(-1, 2)
    quantised = np.round((np.clip(xy, -1.0, 1.0) + 1.0) / 2.0 * SCALE).astype("<u2")
    tags = np.asarray([p.top_tag for p in points], np.uint8)

    def b64(array: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")

    return MapColumns(ids="\n".join(p.track_id for p in points), x=b64(quantised[:, 0]),
                      y=b64(quantised[:, 1]), tag=b64(tags))  # fmt: skip


def legend(points: Sequence[Point]) -> list[LegendEntry]:
    names = tag_names()
    counts: dict[int, int] = {}
    for point in points:
        counts[point.top_tag] = counts.get(point.top_tag, 0) + 1
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [LegendEntry(tag=t, name=names[t] if t < len(names) else "untagged", count=c)
            for t, c in ordered]  # fmt: skip


def map_document(model: str, library_map: LibraryMap | None, redrawing: bool) -> MapDocument:
    if library_map is None:
        return MapDocument(model=model, state="computing",
                           message=f"Drawing the map of {model} for the first time…")  # fmt: skip
    points = library_map.snapshot()
    if not points:
        return MapDocument(
            model=model, state="empty", version=library_map.version, cursor=library_map.cursor,
            redrawing=redrawing,
            message=f"The library is empty: nothing is embedded with {model} yet. Add music "
            "(or run `sonicbus embed`); tracks appear here as they are embedded.",
        )  # fmt: skip
    projection = library_map.projection
    return MapDocument(
        model=model, state="ready", version=library_map.version, cursor=library_map.cursor,
        count=len(points), method=projection.method if projection else None,
        redrawing=redrawing, tag_names=list(tag_names()), legend=legend(points),
        columns=columns(points),
    )  # fmt: skip


def wants_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def encoded(document: BaseModel, gzipped: bool) -> bytes:
    body = document.model_dump_json(exclude_none=True).encode()
    return gzip.compress(body, compresslevel=6) if gzipped else body


def json_response(body: bytes, gzipped: bool) -> Response:
    """JSON, gzip-compressed when the caller accepts it (the map is mostly base64)."""
    headers = {"Cache-Control": "no-store", "Vary": "Accept-Encoding"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


def compressed(request: Request, document: BaseModel) -> Response:
    gzipped = wants_gzip(request)
    return json_response(encoded(document, gzipped), gzipped)


def map_router(settings: Settings, runtime: Callable[[], OpsRuntime]) -> APIRouter:
    router = APIRouter(
        prefix="/api/map", tags=["map"], dependencies=[Depends(reader_access(settings.http))]
    )
    maps: dict[int, MusicMap] = {}
    documents: dict[tuple[object, ...], bytes] = {}

    def music_map() -> MusicMap:
        """One MusicMap per runtime; it follows the bus until the runtime stops."""
        rt = runtime()
        if id(rt) not in maps:
            maps.clear()
            maps[id(rt)] = MusicMap(settings, rt.store, rt.stop_event)
        return maps[id(rt)]

    def model_of(model: str | None) -> str:
        chosen = model or settings.embed.models[0]
        check_model(chosen)
        return chosen

    async def ready_map(model: str) -> LibraryMap:
        library_map = await music_map().get(model, wait_s=0.5)
        if library_map is None:
            raise InvalidInput(f"the map of {model} is still being drawn; ask again shortly")
        return library_map

    @router.get("", response_model=MapDocument)
    async def whole_map(request: Request, model: ModelQuery = None) -> Response:
        chosen = model_of(model)
        library_map = await music_map().get(chosen)
        redrawing = music_map().redrawing(chosen)
        gzipped = wants_gzip(request)
        # The same map (version and cursor) is encoded once: every page load after that
        # gets the bytes as they are; encoding 50,000 points runs off the event loop.
        key = (chosen, id(library_map), library_map.cursor if library_map else "", redrawing,
               gzipped)  # fmt: skip
        body = documents.get(key)
        if body is None:
            document = await asyncio.to_thread(map_document, chosen, library_map, redrawing)
            body = await asyncio.to_thread(encoded, document, gzipped)
            if len(documents) >= 8:
                documents.clear()
            documents[key] = body
        return json_response(body, gzipped)

    @router.get("/updates", response_model=MapUpdates)
    async def updates(
        request: Request, since: Annotated[str, Query(max_length=64)], model: ModelQuery = None
    ) -> Response:
        chosen = model_of(model)
        library_map = await ready_map(chosen)
        redrawing = music_map().redrawing(chosen)
        found = library_map.changes_since(since)
        count = len(library_map.points)
        if found is None:
            answer = MapUpdates(model=chosen, reload=True, cursor=library_map.cursor, count=count,
                                redrawing=redrawing)  # fmt: skip
        else:
            moved, removed = found
            answer = MapUpdates(
                model=chosen, reload=False, cursor=library_map.cursor, count=count,
                redrawing=redrawing, columns=columns(moved) if moved else None, removed=removed,
            )  # fmt: skip
        return compressed(request, answer)

    @router.get("/tracks", response_model=MapTracks)
    async def tracks(ids: Annotated[str, Query(max_length=30_000)],
                     model: ModelQuery = None) -> MapTracks:  # fmt: skip
        wanted = [t for t in ids.split(",") if t][:MAX_IDS]
        library_map = await ready_map(model_of(model))
        return MapTracks(tracks=[described(p) for t in wanted
                                 if (p := library_map.points.get(t)) is not None])  # fmt: skip

    @router.get("/search", response_model=MapTracks)
    async def search(
        q: Annotated[str, Query(min_length=1, max_length=200)],
        model: ModelQuery = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> MapTracks:
        words = q.casefold().split()
        library_map = await ready_map(model_of(model))
        found = []
        for point in library_map.snapshot():
            text = f"{point.artist} {point.title} {point.album} {point.track_id}".casefold()
            if all(word in text for word in words):
                found.append(described(point))
                if len(found) >= limit:
                    break
        return MapTracks(tracks=found)

    return router


def described(point: Point) -> MapTrack:
    names = tag_names()
    return MapTrack(
        track_id=point.track_id, title=point.title, artist=point.artist, album=point.album,
        x=point.x, y=point.y,
        tags=[TagScore(tag=names[i], score=s) for i, s in point.tags if i < len(names)],
    )  # fmt: skip
