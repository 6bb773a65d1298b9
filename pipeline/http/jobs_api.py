"""The jobs API under /api, for the web page and any client (docs/jobs.md).

- GET /api/jobs?limit=: the newest jobs, each its latest event;
- POST /api/jobs {"kind", "params"}: publish a request, then wait up to `wait_s`
  (default 5) for the worker's answer: 202 with the accepted event; 409 with the
  reason when refused (one job of a kind at a time); 202 with `status: queued`
  when no worker answered in time (the request waits on the bus); 422 bad params;
- GET /api/jobs/{id}: its latest event (404 unknown);
- POST /api/jobs/{id}/cancel: 202 (404 unknown, 409 already ended);
- GET /api/mixes: every user's daily mixes, as the latest finished `daily_mixes` job wrote
  them (the builder page shows them);
- GET /api/schedules: the effective schedules (config and API), each with its source;
- PUT /api/schedules [ {name, kind, cron, params, enabled}, ... ]: replace the API's
  schedules (422 for an invalid cron expression).
Reads follow `reader_access`, writes `admin_access` (pipeline.http.auth).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Settings
from pipeline.http.auth import admin_access, reader_access
from pipeline.jobs.client import (
    JobFollow,
    cancel_job,
    job_state,
    list_jobs,
    make_request,
    publish_request,
)
from pipeline.jobs.daily_mixes import WrittenMix
from pipeline.jobs.schedules import ScheduleView, effective_schedules, put_schedules
from pipeline.schemas.jobs import JobEvent, JobKind, Schedule


class JobSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict)
    wait_s: float = Field(5.0, ge=0, le=60, description="How long to wait for the answer.")


class UserMixes(BaseModel):
    user: str
    mixes: dict[str, WrittenMix]


class MixesView(BaseModel):
    """The latest finished `daily_mixes` run: what each user got, and its warnings."""

    job_id: str | None = Field(None, description="None: no run has finished yet.")
    at: datetime | None = None
    users: list[UserMixes] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


def latest_mixes(events: list[JobEvent]) -> MixesView:
    done = [e for e in events if e.kind == "daily_mixes" and e.status == "done" and e.result]
    if not done:
        return MixesView()
    latest = max(done, key=lambda e: e.at)
    result = latest.result or {}
    users = [UserMixes(user=user, mixes=report.get("mixes") or {})
             for user, report in sorted((result.get("users") or {}).items())]  # fmt: skip
    return MixesView(job_id=latest.job_id, at=latest.at, users=users,
                     warnings=result.get("warnings") or [])  # fmt: skip


def jobs_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["jobs"])
    admin_only = [Depends(admin_access(settings.http))]
    reader_only = [Depends(reader_access(settings.http))]

    @router.get("/jobs", response_model=list[JobEvent], dependencies=reader_only)
    async def jobs(limit: int = Query(50, ge=1, le=1000)) -> list[JobEvent]:
        return await list_jobs(settings, limit)

    @router.post("/jobs", status_code=202, dependencies=admin_only)
    async def submit(body: JobSubmission) -> JSONResponse:
        request = make_request(settings, body.kind, body.params, by="http")
        async with JobFollow(settings, request.job_id) as follow:
            await publish_request(settings, request)
            answer = await follow.until_answer(body.wait_s) if body.wait_s else None
        if answer is None:
            queued = {
                "job_id": request.job_id,
                "kind": request.kind,
                "status": "queued",
                "message": "no worker answered yet; the request waits on the bus",
            }
            return JSONResponse(queued, status_code=202)
        if answer.status == "refused":
            raise HTTPException(409, answer.message)
        return JSONResponse(answer.model_dump(mode="json"), status_code=202)

    @router.get("/jobs/{job_id}", response_model=JobEvent, dependencies=reader_only)
    async def job(job_id: str) -> JobEvent:
        return await job_state(settings, job_id)

    @router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobEvent,
                 dependencies=admin_only)  # fmt: skip
    async def cancel(job_id: str) -> JobEvent:
        return await cancel_job(settings, job_id, by="http")

    @router.get("/mixes", response_model=MixesView, dependencies=reader_only)
    async def mixes() -> MixesView:
        return latest_mixes(await list_jobs(settings, 1000))

    @router.get("/schedules", response_model=list[ScheduleView], dependencies=reader_only)
    async def schedules() -> list[ScheduleView]:
        return await effective_schedules(settings)

    @router.put("/schedules", response_model=list[ScheduleView], dependencies=admin_only)
    async def replace_schedules(body: list[Schedule]) -> list[ScheduleView]:
        return await put_schedules(settings, body)

    return router
