"""The dashboard's API under /api: what operators see, for the web page and a second terminal.

- GET /api/overview: the whole picture in one JSON document (`pipeline.ops.overview`:
  bus, Milvus, services, consumer groups, embedding backlog, collections, models,
  dead letters, re-embeds, pause state); 200 whenever this service runs, each part
  saying itself when it cannot be read.
- GET /api/events: the same document as server-sent events (`event: overview`) every
  `http.dashboard_refresh_s`; a failure of the bus or Milvus never ends the stream.
- GET /api/lag, /api/lag/{group}: exactly what `sonicbus lag [GROUP] --json` prints.
- GET /api/status: exactly what `sonicbus status --json` prints; the command asks it
  when Milvus Lite is held by this process (`sonicbus up`), so a second terminal
  still sees collections and row counts.
- GET /api/dead-letters?stage=&limit=: totals by stage and the newest letters;
  POST /api/dead-letters/retry {"stage", "limit"}: re-publish them to the topics they
  failed on, as `sonicbus dlq retry` does.

Reads follow `reader_access`, writes `admin_access` (pipeline.http.auth).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Settings
from pipeline.errors import InvalidInput, NotFound
from pipeline.http.auth import admin_access, reader_access
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.dlq import DlqFilter, RetryRefused, retry_dead_letters, retry_target
from pipeline.ops.lag import GroupLag, LagReader
from pipeline.ops.overview import DeadLetters, Overview, OverviewBuilder, dead_letter_lines
from pipeline.ops.status import StatusReport, collect_status, lag_groups
from pipeline.schemas.deadletters import Stage

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = get_args(Stage)


class LagView(BaseModel):
    """What `sonicbus lag --json` prints."""

    groups: list[GroupLag]


class RetryRequest(BaseModel):
    """Which dead letters to re-publish: a stage's (or all), the newest `limit` (or all)."""

    model_config = ConfigDict(extra="forbid")

    stage: str | None = Field(None, description=f"One of {', '.join(STAGES)}; null: every one.")
    limit: int | None = Field(None, ge=1, le=100_000, description="Newest N; null: all.")


class Skipped(BaseModel):
    dlq_offset: int
    reason: str


class RetryResult(BaseModel):
    retried: int
    skipped: list[Skipped] = Field(
        default_factory=list, description="Letters that cannot be re-published as they are."
    )


def refresh_s(settings: Settings) -> float:
    """Seconds between two overviews of the event stream (`http.dashboard_refresh_s`)."""
    return settings.http.dashboard_refresh_s


def check_stage(stage: str | None) -> None:
    if stage is not None and stage not in STAGES:
        raise NotFound(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")


def dashboard_router(settings: Settings, runtime: Callable[[], OpsRuntime]) -> APIRouter:
    """The /api router; `runtime()` gives the service's OpsRuntime once it started."""
    router = APIRouter(prefix="/api", tags=["dashboard"])
    reader_only = [Depends(reader_access(settings.http))]
    admin_only = [Depends(admin_access(settings.http))]
    builders: dict[int, OverviewBuilder] = {}

    def builder() -> OverviewBuilder:
        """One builder per runtime (its caches outlive a request)."""
        rt = runtime()
        if id(rt) not in builders:
            builders.clear()
            builders[id(rt)] = OverviewBuilder(
                settings,
                rt.store,
                rates=rt.rates,
                last_embedded=lambda: rt.metrics.last_embedded,
                components=rt.services,
            )
        return builders[id(rt)]

    @router.get("/overview", response_model=Overview, dependencies=reader_only)
    async def overview() -> Overview:
        return await builder().current(refresh_s(settings) / 2)

    @router.get(
        "/events",
        response_class=StreamingResponse,
        dependencies=reader_only,
        responses={200: {"content": {"text/event-stream": {}}, "description": "event: overview"}},
    )
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            _overview_events(request, builder(), refresh_s(settings)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @router.get("/lag", response_model=LagView, dependencies=reader_only)
    async def lag() -> LagView:
        async with LagReader(settings.kafka) as reader:
            return LagView(groups=await lag_groups(settings, reader, builder().tracker))

    @router.get("/lag/{group}", response_model=LagView, dependencies=reader_only)
    async def lag_of(group: str) -> LagView:
        async with LagReader(settings.kafka) as reader:
            return LagView(groups=await lag_groups(settings, reader, builder().tracker, group))

    @router.get("/status", response_model=StatusReport, dependencies=reader_only)
    async def status() -> StatusReport:
        return await collect_status(settings, runtime().store)

    @router.get("/dead-letters", response_model=DeadLetters, dependencies=reader_only)
    async def dead_letters(
        stage: str | None = None,
        limit: Annotated[int, Query(ge=0, le=1000)] = 20,
    ) -> DeadLetters:
        check_stage(stage)
        records = await builder().read_letters()
        selection = DlqFilter(stage=stage)
        return dead_letter_lines([r for r in records if selection.matches(r)], limit)

    @router.post("/dead-letters/retry", response_model=RetryResult, dependencies=admin_only)
    async def retry(body: RetryRequest) -> RetryResult:
        check_stage(body.stage)
        selection = DlqFilter(stage=body.stage)
        records = [r for r in await builder().read_letters() if selection.matches(r)]
        if body.limit is not None:
            records = records[-body.limit :]
        if not records:
            raise NotFound(f"no dead letter{f' of stage {body.stage}' if body.stage else ''}")
        ready, skipped = [], []
        for record in records:  # checked first: a letter that cannot go back is reported
            try:
                retry_target(record, settings.topics)
                ready.append(record)
            except RetryRefused as exc:
                skipped.append(Skipped(dlq_offset=record.offset, reason=str(exc)))
        if not ready:
            raise InvalidInput(f"none of {len(records)} dead letter(s) can be re-published: "
                               f"{skipped[0].reason}")  # fmt: skip
        done = await retry_dead_letters(settings.kafka, settings.topics, ready)
        return RetryResult(retried=len(done), skipped=skipped)

    return router


async def _overview_events(
    request: Request, builder: OverviewBuilder, every_s: float
) -> AsyncIterator[str]:
    """`event: overview` every `every_s` until the client goes; failures are reported in the
    document (or, for a bug, as an `event: error`), never by ending the stream."""
    yield f"retry: {int(every_s * 1000)}\n\n"
    while not await request.is_disconnected():
        try:
            document = (await builder.current(every_s / 2)).model_dump_json()
            yield f"event: overview\ndata: {document}\n\n"
        except Exception as exc:
            log.exception("building the dashboard overview failed")
            message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
            yield f"event: error\ndata: {message}\n\n"
        await asyncio.sleep(every_s)
