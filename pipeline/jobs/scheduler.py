"""The scheduler: publishes a JobRequest for each due run of each enabled schedule.

The job id is derived from the schedule's name and the due time
(`nightly@20250101T030000Z`), so any number of schedulers may run (one per
`sonicbus up`, or the compose service twice by mistake): they publish the
same id, and the worker runs it once. Cron times are local time. A scheduler
that starts looks back `jobs.scheduler_catch_up_s` for a due time it may have
missed while restarting; after a longer outage only the latest missed run of
a schedule is published, not a burst. Schedules are re-read every few
seconds, so a change through the HTTP API takes effect without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from croniter import croniter

from pipeline.bus import make_producer
from pipeline.config import Settings
from pipeline.jobs.schedules import effective_schedules
from pipeline.schemas.jobs import JobRequest, Schedule, scheduled_job_id
from pipeline.topics import ensure_topics, jobs_topic

log = logging.getLogger(__name__)
REFRESH_S = 5.0


def latest_due(schedule: Schedule, after: datetime, until: datetime) -> datetime | None:
    """The last time in (after, until] the cron expression names, if any."""
    found = None
    times = croniter(schedule.cron, after.astimezone())
    while (due := times.get_next(datetime)) <= until:
        found = due
    return found


class JobScheduler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.published: list[str] = []  # job ids, for the logs and tests

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        await ensure_topics(settings.kafka, settings.topics)
        producer = make_producer(settings.kafka, role="scheduler")
        await producer.start()
        catch_up = timedelta(seconds=settings.jobs.scheduler_catch_up_s)
        checked = datetime.now().astimezone() - catch_up
        schedules: list[Schedule] = []
        refreshed = -REFRESH_S
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                if loop.time() - refreshed >= REFRESH_S:
                    try:
                        views = await effective_schedules(settings)
                        schedules = [v.schedule for v in views if v.schedule.enabled]
                    except Exception as exc:  # keep the last known set
                        log.warning("scheduler: schedules unreadable (%s)", exc)
                    refreshed = loop.time()
                now = datetime.now().astimezone()
                for schedule in schedules:
                    due = latest_due(schedule, checked, now)
                    if due is not None:
                        await self._publish(producer, schedule, due)
                checked = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.jobs.scheduler_tick_s)
        finally:
            await producer.stop()

    async def _publish(self, producer: object, schedule: Schedule, due: datetime) -> None:
        request = JobRequest(
            job_id=scheduled_job_id(schedule.name, due),
            kind=schedule.kind,
            params=schedule.params,
            requested_by=f"scheduler:{schedule.name}",
            due_at=due,
        )
        await producer.send_and_wait(  # type: ignore[attr-defined]
            jobs_topic(self.settings.topics), request.to_bytes(), key=request.kind.encode()
        )
        self.published.append(request.job_id)
        log.info("scheduled job %s (%s) published", request.job_id, schedule.kind)
