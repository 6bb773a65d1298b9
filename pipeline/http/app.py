"""`sonicbus serve`: health, Prometheus metrics, re-embed control and the older HTTP API.

Endpoints (OpenAPI at /openapi.json, try them at /docs):
- GET /healthz: broker, Milvus, and the consumer groups an operator expects;
  503 when the broker or Milvus does not answer, "degraded" when a group has
  no running member;
- GET /metrics: Prometheus text (see metrics.py);
- POST /reembed, GET /reembed/{model}, POST /reembed/{model}/cancel|resume|discard:
  bulk re-embed by replay (replay.py); writing ones need the admin token;
- POST /recommendations/{mode} (and the older path /playlist/{mode}), POST
  /embed_text, POST /batch/start, GET /batch/progress, POST /batch/cancel:
  the older HTTP API, bridged (bridge.py): recommendations go to the query
  service as QueryRequests over Kafka (QueryClient) and come back from its
  replies; the batch job is a replay per model.
- POST /navidrome/v1/similar, POST /navidrome/v1/path: what the Navidrome plugin
  asks (navidrome.py), bridged onto the bus the same way.
- /api/*: the dashboard's API (dashboard_api.py): overview, live events, lag, status,
  dead letters; GET /api/export/{model}: the collection as a file (exports.py).
- GET /api/embedding, POST /api/embedding/pause|resume: pause embedding, the CPU cap
  (embedding_control.py).
- GET /api/tracks, /api/tracks/{id}, /api/audio/{id}: the library pages' search, track
  details and audio with byte ranges (library_api.py).
- GET /api/playlists/options, POST /api/playlists/build|save|m3u8: the playlist builder's
  requests over the bus, Navidrome playlists and M3U8 downloads (playlists_api.py).
- GET /api/map, /api/map/updates|tracks|search: the music map's points (map_api.py).
- GET /: the web UI, the operations dashboard (web.py; `--no-web` leaves it out), and
  /login, /auth/*: the web login and its sessions (login.py).
`/embed_text` is answered here, with the encoders the query service uses
(models/text.py): the request/reply contract has no operation that returns a
vector, and a prompt's vector needs no library.

Who may call what is decided in one place, `pipeline.http.auth`: the admin
token for the writing endpoints, the client token (or the admin token) for the
read-only query endpoints, loopback only for those while no client token is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError

from pipeline import infra
from pipeline.config import Settings
from pipeline.errors import REPLY_HTTP_STATUS, SonicbusError
from pipeline.http import bridge
from pipeline.http.auth import admin_access, reader_access
from pipeline.http.dashboard_api import dashboard_router
from pipeline.http.embedding_control import embedding_router
from pipeline.http.exports import export_router
from pipeline.http.jobs_api import jobs_router
from pipeline.http.library_api import library_router
from pipeline.http.login import install_login
from pipeline.http.map_api import map_router
from pipeline.http.navidrome import navidrome_router
from pipeline.http.playlists_api import playlists_router
from pipeline.http.runtime import OpsRuntime
from pipeline.http.web import web_router
from pipeline.ops.progress import (
    ReplayProgress,
    ReplayRate,
    finish_replay,
    replay_progress,
)
from pipeline.ops.replay import (
    Replay,
    cancel_replay,
    check_model,
    current,
    discard_replay,
    resume_replay,
    start_replay,
)
from pipeline.ops.status import watched_groups as expected_groups
from pipeline.schemas.base import describe_validation_error
from pipeline.store import StoreUnavailable, VectorStore

log = logging.getLogger(__name__)




class ReembedRequest(BaseModel):
    model: str = Field(pattern=bridge.MODEL_NAME)
    fresh: bool = False
    force: bool = False
    since: datetime | None = None
    drop_old: bool = False
    wait_s: float | None = Field(None, ge=0, le=600, description="Wait for members to stop.")


class Health(BaseModel):
    status: str = Field(description="ok | degraded (a group has no member) | down")
    broker: dict[str, Any]
    milvus: dict[str, Any]
    consumers: list[dict[str, Any]]


def create_app(settings: Settings, runtime: OpsRuntime | None = None, web: bool = True) -> FastAPI:
    """The FastAPI app; with no `runtime` given, the app starts and stops its own.

    `web=False` (`--no-web`) leaves out the pages (web.py); the API and the login stay.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = app.state.runtime is None
        if own:
            app.state.runtime = OpsRuntime(settings)
            await app.state.runtime.start()
        try:
            yield
        finally:
            if own:
                await app.state.runtime.stop()

    app = FastAPI(
        title="sonicbus",
        version="0.1.0",
        summary="Operations and the older recommendation API of sonicbus, on Kafka and Milvus.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    def rt() -> OpsRuntime:
        return app.state.runtime  # type: ignore[no-any-return]

    admin_only = [Depends(admin_access(settings.http))]
    reader_only = [Depends(reader_access(settings.http))]

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and not length.isdigit():
            return JSONResponse({"detail": "bad Content-Length"}, status_code=400)
        if length and int(length) > settings.http.max_body_bytes:
            return JSONResponse({"detail": "request body too large"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(SonicbusError)
    async def sonicbus_error(_: Request, exc: SonicbusError) -> JSONResponse:
        """Every error of the hierarchy answers with its kind's status (pipeline.errors)."""
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(response: Response) -> Health:
        kafka = await infra.kafka_status(settings)
        milvus = await _milvus_health(rt().store)
        consumers = []
        for group in expected_groups(settings):
            snap = {g.group: g for g in rt().metrics.snapshot.groups}.get(group)
            consumers.append({"group": group, "state": snap.state if snap else "unknown",
                              "members": len(snap.members) if snap else 0,
                              "pending": snap.pending if snap else None,
                              "lag_seconds": snap.lag_seconds if snap else None})  # fmt: skip
        up = kafka.reachable and milvus["reachable"]
        status = "down" if not up else "ok" if all(c["members"] for c in consumers) else "degraded"
        response.status_code = 200 if up else 503
        return Health(
            status=status,
            broker={"reachable": kafka.reachable, "address": kafka.address, "detail": kafka.detail},
            milvus=milvus,
            consumers=consumers,
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        return Response(rt().metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/reembed",
        status_code=202,
        response_model=Replay,
        tags=["re-embed"],
        dependencies=admin_only,
    )
    async def reembed_start(body: ReembedRequest) -> Replay:
        return await start_replay(settings, rt().store, body.model, fresh=body.fresh,
                                  force=body.force, since=body.since, drop_old=body.drop_old,
                                  wait_s=body.wait_s)  # fmt: skip

    @app.get("/reembed/{model}", response_model=ReplayProgress, tags=["re-embed"])
    async def reembed_progress(model: str) -> ReplayProgress:
        runtime = rt()
        check_model(model)
        rate = runtime.rates.setdefault(model, ReplayRate())
        progress = await replay_progress(settings, runtime.store, model, runtime.reader, rate)
        if await finish_replay(runtime.store, progress) is None:
            return progress
        return await replay_progress(settings, runtime.store, model, runtime.reader, rate)

    @app.post(
        "/reembed/{model}/cancel", response_model=Replay, tags=["re-embed"], dependencies=admin_only
    )
    async def reembed_cancel(model: str) -> Replay:
        return await cancel_replay(rt().store, model)

    @app.post(
        "/reembed/{model}/resume", response_model=Replay, tags=["re-embed"], dependencies=admin_only
    )
    async def reembed_resume(model: str) -> Replay:
        return await resume_replay(rt().store, model)

    @app.post(
        "/reembed/{model}/discard",
        response_model=Replay,
        tags=["re-embed"],
        dependencies=admin_only,
    )
    async def reembed_discard(model: str, wait_s: float | None = None) -> Replay:
        return await discard_replay(settings, rt().store, model, wait_s)

    @app.post("/recommendations/{mode}", response_model=bridge.RecommendationResponse,
              tags=["older API"], dependencies=reader_only)  # fmt: skip
    @app.post("/playlist/{mode}", response_model=bridge.RecommendationResponse,
              tags=["older API"], include_in_schema=False, dependencies=reader_only)  # fmt: skip
    async def recommendations(
        mode: str, body: bridge.RecommendationRequest
    ) -> bridge.RecommendationResponse:
        try:
            query = bridge.to_query(mode, body)
        except ValidationError as exc:
            raise HTTPException(422, describe_validation_error(exc)) from exc
        reply = await rt().client.ask(query, timeout=settings.http.reply_timeout_s)
        if not reply.ok and reply.error is not None:
            status = REPLY_HTTP_STATUS.get(reply.error.code, 502)
            raise HTTPException(status, f"{reply.error.code}: {reply.error.message}")
        return bridge.from_reply(reply, body)

    app.include_router(navidrome_router(settings, lambda: rt().client))
    app.include_router(dashboard_router(settings, rt))
    app.include_router(embedding_router(settings))
    app.include_router(export_router(settings, rt))
    app.include_router(jobs_router(settings))
    app.include_router(map_router(settings, rt))
    app.include_router(library_router(settings, rt))
    app.include_router(playlists_router(settings, rt))
    install_login(app, settings)
    if web:
        app.include_router(web_router(settings))

    @app.post("/embed_text", response_model=bridge.TextEmbeddingResponse, tags=["older API"],
              dependencies=reader_only)  # fmt: skip
    async def embed_text(body: bridge.TextEmbeddingRequest) -> bridge.TextEmbeddingResponse:
        return await asyncio.to_thread(rt().text_embedding, body)

    @app.post("/batch/start", tags=["older API"], dependencies=admin_only)
    async def batch_start(body: bridge.BatchEmbeddingRequest) -> dict[str, Any]:
        for model in body.models:  # every model checked before any replay starts
            check_model(model)
            _, replay = await current(rt().store, model)
            if replay and replay.status in ("running", "cancelled"):
                raise HTTPException(409, f"A job is already running: replay {replay.id} of {model}")
        started = [
            await start_replay(
                settings,
                rt().store,
                m,
                fresh=body.clearExisting,
                force=body.force,
                wait_s=body.wait_s,
            )
            for m in body.models
        ]
        return {"status": "started", "job_id": ",".join(r.id for r in started),
                "replays": [r.model_dump(mode="json") for r in started]}  # fmt: skip

    @app.get("/batch/progress", response_model=bridge.BatchProgress, tags=["older API"])
    async def batch_progress() -> bridge.BatchProgress:
        return await rt().batch_progress()

    @app.post("/batch/cancel", tags=["older API"], dependencies=admin_only)
    async def batch_cancel() -> dict[str, Any]:
        cancelled = []
        for model in settings.embed.models:
            _, replay = await current(rt().store, model)
            if replay and replay.status == "running":
                cancelled.append((await cancel_replay(rt().store, model)).model)
        if not cancelled:
            raise HTTPException(404, "No job running")
        return {"status": "cancelling", "models": cancelled}

    return app


async def _milvus_health(store: VectorStore) -> dict[str, Any]:
    """Does Milvus answer? (listing collections: cheap enough for a frequent health check)"""
    try:
        names = await asyncio.to_thread(store.ping)
    except StoreUnavailable as exc:
        return {"reachable": False, "address": store.uri, "detail": str(exc)}
    kind = "Milvus Lite" if store.is_lite else "Milvus server"
    return {"reachable": True, "address": store.uri, "detail": f"{kind}, {len(names)} collections"}
