"""sonicbus for Navidrome: `POST /navidrome/v1/similar`, `/path` and `/plugin/<function>`.

`/similar` and `/path` take songs as Navidrome's `SongRef`s, albums and artists
by id, name and MBID, and answer `{"matches": [{"song": SongRef, "similarity":
0..1}], "warnings": [...]}`, the shape Navidrome's SonicSimilarity capability
returns. `/plugin/<function>` is what the plugin (plugins/navidrome/) calls: the
body is Navidrome's request to the plugin function `nd_<function>`, unchanged,
the plugin's settings come as `X-Sonicbus-*` headers, and the answer is already
the function's response, so the plugin forwards both ways without reading JSON
(it is a few hundred lines of C: Navidrome starts it afresh for every call, and
a small module starts in microseconds). Nothing here reads
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
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError

from pipeline.config import Settings
from pipeline.errors import REPLY_HTTP_STATUS, SonicbusError, Unavailable
from pipeline.http.auth import reader_access
from pipeline.http.navidrome_queries import (
    Matches,
    PathBody,
    SimilarBody,
    matches,
    path_query,
    similar_query,
)
from pipeline.http.plugin_calls import PLUGIN_FUNCTIONS, PluginCall, plugin_answer, plugin_body
from pipeline.schemas.base import describe_validation_error
from pipeline.schemas.queries import QueryReply

log = logging.getLogger(__name__)


class Asker(Protocol):
    async def ask(self, request: Any, timeout: float | None = None) -> QueryReply: ...


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

    async def similar_matches(body: SimilarBody) -> Matches:
        if body.count <= 0:
            return Matches(warnings=[f"count {body.count}: nothing asked for"])
        warnings: list[str] = []
        return await answer(similar_query(body, warnings), body.timeout_s, warnings)

    async def path_matches(body: PathBody) -> Matches:
        if body.count <= 0:
            return Matches(warnings=[f"count {body.count}: nothing asked for"])
        warnings: list[str] = []
        return await answer(path_query(body, warnings), body.timeout_s, warnings)

    @router.post("/similar", response_model=Matches, response_model_exclude_none=True,
                 dependencies=[Depends(reader)])  # fmt: skip
    async def similar(body: SimilarBody) -> Matches:
        """Songs like a song, an album's songs or an artist's songs (Instant Mix, radio)."""
        return await similar_matches(body)

    @router.post("/path", response_model=Matches, response_model_exclude_none=True,
                 dependencies=[Depends(reader)])  # fmt: skip
    async def path(body: PathBody) -> Matches:
        """A path from `start` to `end` in `count` songs, both ends included, no repeats."""
        return await path_matches(body)

    @router.post("/plugin/{function}", dependencies=[Depends(reader)])
    async def plugin(function: str, request: Request) -> dict[str, Any]:
        """The plugin's call of `nd_<function>`: Navidrome's request in, its response out."""
        if function not in PLUGIN_FUNCTIONS:
            raise HTTPException(404, f"no plugin function {function!r}; "
                                f"known: {', '.join(PLUGIN_FUNCTIONS)}")  # fmt: skip
        try:
            call = PluginCall.read(function, await request.body(), request.headers)
            body = plugin_body(call)
        except ValidationError as exc:
            raise HTTPException(422, describe_validation_error(exc)) from exc
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        found = await (path_matches(body) if isinstance(body, PathBody) else similar_matches(body))
        if found.warnings:
            log.info("navidrome %s: %s", function, "; ".join(found.warnings))
        return plugin_answer(function, found)

    return router
