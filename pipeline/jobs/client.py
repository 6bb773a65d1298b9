"""What clients (the CLI, the HTTP API) do with jobs: submit, wait, follow, cancel, list.

`submit` starts following `job-events` before it publishes, so the worker's
answer (accepted, or refused with the reason) cannot be missed; without a
worker running, the request waits on the topic and `answer` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipeline.bus import make_producer
from pipeline.config import Settings
from pipeline.errors import Conflict, InvalidInput, NotFound
from pipeline.jobs.cleaning import CleaningParams
from pipeline.jobs.clustering import clustering_options
from pipeline.jobs.daily_mixes import mix_options
from pipeline.jobs.events import JobEventsFollower, JobsUnavailable, read_job_board, send_event
from pipeline.schemas.jobs import JOB_KINDS, JobEvent, JobRequest
from pipeline.topics import ensure_topics, jobs_topic


def new_job_id(kind: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{kind}-{stamp}-{uuid.uuid4().hex[:6]}"


def check_params(settings: Settings, kind: str, params: dict[str, Any]) -> None:
    """Refuse bad params before anything is published (InvalidInput says why)."""
    if kind not in JOB_KINDS:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    if kind == "clustering":
        clustering_options(settings.jobs.clustering, params)
    elif kind == "daily_mixes":
        mix_options(settings.jobs.daily_mixes, params)
    elif kind == "cleaning":
        try:
            CleaningParams.model_validate(params)
        except ValueError as exc:
            raise InvalidInput(f"cleaning params: {exc}") from exc
    elif params:
        raise InvalidInput(f"the {kind} job takes no params")


class JobFollow:
    """Following one job's events from before it is published until it ends."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self.settings = settings
        self.job_id = job_id
        self.events: asyncio.Queue[JobEvent] = asyncio.Queue()
        self.follower = JobEventsFollower(settings.kafka, settings.topics, role="job-client")
        self.follower.listeners.append(self._note)

    def _note(self, event: JobEvent) -> None:
        if event.job_id == self.job_id:
            self.events.put_nowait(event)

    async def __aenter__(self) -> JobFollow:
        await self.follower.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.follower.stop()

    async def next(self, timeout: float | None) -> JobEvent | None:
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None

    async def until_answer(self, timeout: float) -> JobEvent | None:
        """The first event that says what became of the request (accepted, refused, ...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            event = await self.next(left)
            if event is not None and event.status != "cancel_requested":
                return event
        return None

    async def until_end(
        self, on_event: Callable[[JobEvent], None], timeout: float | None = None
    ) -> JobEvent | None:
        state = self.follower.board.state(self.job_id)
        if state is not None and state.final:
            on_event(state)
            return state
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            event = await self.next(left)
            if event is None:
                continue
            on_event(event)
            if event.final:
                return event


async def publish_request(settings: Settings, request: JobRequest) -> None:
    producer = make_producer(settings.kafka, role="job-client")
    try:
        await ensure_topics(settings.kafka, settings.topics)
        await producer.start()
        await producer.send_and_wait(
            jobs_topic(settings.topics), request.to_bytes(), key=request.kind.encode()
        )
    except Exception as exc:
        raise JobsUnavailable(f"cannot publish the job request: {exc}") from exc
    finally:
        await producer.stop()


def make_request(
    settings: Settings, kind: str, params: dict[str, Any], by: str, job_id: str | None = None
) -> JobRequest:
    check_params(settings, kind, params)
    try:
        return JobRequest(job_id=job_id or new_job_id(kind), kind=kind,  # type: ignore[arg-type]
                          params=params, requested_by=by)  # fmt: skip
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


async def cancel_job(settings: Settings, job_id: str, by: str) -> JobEvent:
    """Ask the job's worker to stop it: NotFound for an unknown job, Conflict if it ended."""
    board = await read_job_board(settings.kafka, settings.topics)
    state = board.state(job_id)
    if state is None:
        raise NotFound(f"no job {job_id!r}")
    if state.final:
        raise Conflict(f"job {job_id} already ended: {state.status}")
    event = JobEvent(job_id=job_id, kind=state.kind, status="cancel_requested", requested_by=by)
    producer = make_producer(settings.kafka, role="job-client")
    try:
        await producer.start()
        await send_event(producer, settings.topics, event)
    except Exception as exc:
        raise JobsUnavailable(f"cannot publish the cancel request: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
    return event


async def list_jobs(settings: Settings, limit: int = 50) -> list[JobEvent]:
    board = await read_job_board(settings.kafka, settings.topics)
    return board.newest(limit)


async def job_state(settings: Settings, job_id: str) -> JobEvent:
    board = await read_job_board(settings.kafka, settings.topics)
    state = board.state(job_id)
    if state is None:
        raise NotFound(f"no job {job_id!r} (no worker has answered it yet, or it never existed)")
    return state
