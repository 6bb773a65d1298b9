"""Long jobs on the bus: requests on `jobs`, their life on `job-events` (docs/jobs.md).

- `worker`: the `jobs` consumer group; runs jobs off the poll loop, one of a kind
  at a time, deduplicated by job id, taken up again when a worker is lost;
- `scheduler`, `schedules`: cron schedules (config file and HTTP API) publishing
  each due job once, under an id derived from the schedule and the due time;
- `client`: submit, follow, cancel and list jobs (the CLI and the HTTP API);
- `clustering`, `cleaning`, `scan`: the job kinds (`kinds` maps names to them);
- `events`, `context`, `playlist_output`: the job-events topic, what a running job
  gets, and where the clustering playlists are written.

Layer: above the services (a job may run a producer's scan), below the edges.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pipeline.config import Settings
from pipeline.store import VectorStore


def jobs_worker_component(
    settings: Settings, store: VectorStore | None
) -> Callable[[asyncio.Event], Awaitable[None]]:
    """The worker as a `Supervisor` component (`sonicbus up` passes its own store)."""

    async def component(stop: asyncio.Event) -> None:
        from pipeline.jobs.worker import JobWorker

        await JobWorker(settings, store).run(stop)

    return component


def scheduler_component(settings: Settings) -> Callable[[asyncio.Event], Awaitable[None]]:
    async def component(stop: asyncio.Event) -> None:
        from pipeline.jobs.scheduler import JobScheduler

        await JobScheduler(settings).run(stop)

    return component
