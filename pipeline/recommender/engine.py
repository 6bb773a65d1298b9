"""From a request to its reply: dispatch by type, the limit cap, the deadline, errors.

Everything here is synchronous and thread-safe: the query consumer runs
`answer` in worker threads (numpy releases the GIL), so one slow request
does not hold up the others. Every outcome is a `QueryReply`: results with
warnings, or `ok=False` with an error code and a message a person can act on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, get_args

from pipeline.config import QuerySettings
from pipeline.errors import SonicbusError
from pipeline.recommender import (
    alchemy,
    duplicates,
    fingerprint,
    instant,
    path,
    recommend,
    similar,
    text_search,
)
from pipeline.recommender.common import Candidate, Outcome, QueryContext
from pipeline.recommender.index import TrackInfo
from pipeline.recommender.library import Library
from pipeline.recommender.prompts import TextSupport
from pipeline.recommender.seeds import SeedSource
from pipeline.schemas import SchemaError, parse_query_request
from pipeline.schemas.queries import QueryReply, QueryType, ReplyError, ScoredTrack

log = logging.getLogger(__name__)

QUERY_TYPES: tuple[str, ...] = get_args(QueryType)
OPERATIONS: dict[str, Callable[[QueryContext], Outcome]] = {
    "recommend": recommend.run,
    "text": text_search.run,
    "similar": similar.run,
    "path": path.run,
    "alchemy": alchemy.run,
    "fingerprint": fingerprint.run,
    "duplicates": duplicates.run,
    "instant": instant.run,
}


class QueryEngine:
    """Answers decoded requests against one library (see the module docstring)."""

    def __init__(
        self,
        settings: QuerySettings,
        library: Library,
        text: TextSupport,
        seeds: SeedSource | None = None,
    ) -> None:
        self.settings = settings
        self.library = library
        self.text = text
        self.seeds = seeds

    def answer(self, request: Any, deadline: float | None = None) -> QueryReply:
        """The reply to one valid request; `deadline` is a time.monotonic() value."""
        ctx = QueryContext(
            request=request,
            settings=self.settings,
            library=self.library,
            text=self.text,
            seeds=self.seeds,
            deadline=deadline,
        )
        ctx.limit = request.limit
        if request.limit > self.settings.max_limit:
            ctx.limit = self.settings.max_limit
            ctx.warn(f"limit {request.limit} is above the cap; clamped to {ctx.limit}")
        try:
            ctx.check_deadline()
            reply = self._reply(ctx, OPERATIONS[request.type](ctx))
        except SonicbusError as exc:  # a kind of pipeline.errors: its code is the reply's
            reply = self._error(ctx, ReplyError(code=exc.code, message=str(exc)[:4000]))
        except Exception as exc:
            log.exception("query %s (%s) failed", request.request_id, request.type)
            message = f"{type(exc).__name__}: {exc}"[:4000]
            reply = self._error(ctx, ReplyError(code="internal", message=message))
        reply.elapsed_ms = round((time.monotonic() - ctx.started) * 1000, 3)
        return reply

    def _error(self, ctx: QueryContext, error: ReplyError) -> QueryReply:
        request = ctx.request
        return QueryReply(
            request_id=request.request_id,
            type=request.type,
            ok=False,
            error=error,
            warnings=ctx.warnings,
        )

    def _reply(self, ctx: QueryContext, outcome: Outcome) -> QueryReply:
        loaded = self.library.loaded()
        indexes = [loaded[m] for m in ctx.request.models if m in loaded]
        everything = [*outcome.tracks, *(c for cs in outcome.extra.values() for c in cs)]
        info = ctx.info(indexes, (c.track_id for c in everything))
        return QueryReply(
            request_id=ctx.request.request_id,
            type=ctx.request.type,
            tracks=[scored(c, info) for c in outcome.tracks],
            extra={name: [scored(c, info) for c in cs] for name, cs in outcome.extra.items()},
            pairs=outcome.pairs,
            plan=outcome.plan,
            warnings=ctx.warnings,
        )


def scored(candidate: Candidate, info: dict[str, TrackInfo]) -> ScoredTrack:
    track = info.get(candidate.track_id, TrackInfo(candidate.track_id))
    return ScoredTrack(
        track_id=candidate.track_id,
        score=round(float(candidate.score), 6),
        artist=track.artist or None,
        title=track.title or None,
        album=track.album or None,
        found_by=candidate.found_by,
        mbid=track.mbid or None,
        duration=round(track.duration, 3) or None,
        bpm=track.bpm or None,
        key=track.musical_key or None,
        energy=track.energy if track.energy >= 0 else None,
        year=track.year or None,
        genre=track.genre or None,
    )


def invalid_request_reply(raw: bytes | None, key: str | None = None) -> QueryReply | None:
    """The error reply for a value that is not a valid request; None if it is one after all.

    Says which of three things went wrong, because the fix differs: not JSON
    at all, an unknown `type` (a newer client?), or a field out of range.
    """
    request_id = key or "unknown"
    try:
        data = json.loads(raw or b"")
    except (ValueError, UnicodeDecodeError) as exc:
        return _invalid(request_id, None, "invalid_request", f"malformed JSON: {exc}")
    if not isinstance(data, dict):
        message = f"a request is a JSON object, not {type(data).__name__}"
        return _invalid(request_id, None, "invalid_request", message)
    if isinstance(data.get("request_id"), str) and data["request_id"]:
        request_id = data["request_id"][:128]
    kind = data.get("type")
    if kind not in QUERY_TYPES:
        message = f"unknown request type {kind!r}; expected one of: {', '.join(QUERY_TYPES)}"
        return _invalid(request_id, None, "unknown_type", message)
    try:
        parse_query_request(raw)
    except SchemaError as exc:
        return _invalid(request_id, kind, "invalid_request", str(exc))
    return None


def _invalid(request_id: str, kind: str | None, code: Any, message: str) -> QueryReply:
    return QueryReply(
        request_id=request_id,
        type=kind,
        ok=False,
        error=ReplyError(code=code, message=message[:4000]),
    )
