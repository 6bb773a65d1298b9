"""The jobs worker: consumer group `jobs` on the `jobs` topic; runs each job off the poll loop.

Why it is built this way:
- A job runs as a task of its own (its heavy parts in a thread) while the
  consumer keeps polling, so a job of an hour never exceeds
  `max.poll.interval.ms` and the worker keeps its place in the group.
- A request's offset is committed only when its job ended: the committed
  offset of a partition is the lowest offset of a job still running there
  (or the end of what was read). A worker that dies mid-job leaves it
  uncommitted, and whoever gets the partition reads it again.
- A request read again is looked up on the board of `job-events`: a job that
  ended is skipped (nothing completes twice, whichever scheduler or client
  published the id twice); one that another worker runs now (heard within
  `jobs.stale_after_s`) is watched until it ends or goes silent; one whose
  worker went silent or stopped (`interrupted`) is taken up again.
- One job of a kind at a time, across workers (the board shows the live
  ones): a second request is refused with the reason.
- A cancel request (`cancel:<id>` on job-events) sets the job's cancel flag;
  the job stops between steps and ends `cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.bus import make_consumer, make_producer
from pipeline.config import Settings
from pipeline.errors import SonicbusError
from pipeline.jobs.context import JobCancelled, JobContext, JobRunner, WorkerStopping
from pipeline.jobs.events import JobEventsFollower, send_event
from pipeline.jobs.kinds import RUNNERS
from pipeline.schemas import SchemaError
from pipeline.schemas.jobs import JobEvent, JobRequest
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics, jobs_group, jobs_topic

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.5


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: JobWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.worker.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.assignments += 1
        log.info("jobs worker %s assigned %s", self.worker.worker_id, sorted(assigned))


class JobWorker:
    def __init__(
        self,
        settings: Settings,
        store: VectorStore | None = None,
        runners: dict[str, JobRunner] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runners = runners or RUNNERS
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.jobs = settings.jobs
        self.stale_after = timedelta(seconds=self.jobs.stale_after_s)
        self.assignments = 0  # rebalances that gave this worker partitions (tests read it)
        self.running: dict[str, JobContext] = {}
        self._in_flight: dict[TopicPartition, dict[int, asyncio.Task[None]]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._producer = make_producer(settings.kafka, role="jobs")
        self._events = JobEventsFollower(settings.kafka, settings.topics, role="jobs")
        self._events.listeners.append(self._on_event)
        self._consumer: Any = None

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        await ensure_topics(settings.kafka, settings.topics)
        await self._producer.start()
        await self._events.start()
        self._consumer = make_consumer(
            settings.kafka,
            group_id=jobs_group(settings),
            role="jobs",
            max_poll_interval_ms=self.jobs.max_poll_interval_ms,
            session_timeout_ms=self.jobs.session_timeout_ms,
            heartbeat_interval_ms=max(300, self.jobs.session_timeout_ms // 4),
        )
        await self._consumer.start()
        self._consumer.subscribe([jobs_topic(settings.topics)], listener=_Rebalances(self))
        log.info("jobs worker %s ready", self.worker_id)
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=500, max_records=20)
                for tp, records in batch.items():
                    for record in records:
                        self._next[tp] = record.offset + 1
                        await self._handle(tp, record)
                await self._commit()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for context in self.running.values():
            context.stopping.set()
        tasks = [t for offsets in self._in_flight.values() for t in offsets.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        with contextlib.suppress(Exception):
            await self._commit()
        await self._consumer.stop()
        await self._events.stop()
        await self._producer.stop()

    def forget(self, revoked: Any) -> None:
        """Partitions taken away: their offsets are the new owner's to commit now (a job of
        theirs that runs here goes on; the new owner watches it end)."""
        for tp in revoked:
            self._in_flight.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    async def _commit(self) -> None:
        offsets = {}
        for tp, end in self._next.items():
            pending = [o for o, task in self._in_flight.get(tp, {}).items() if not task.done()]
            position = min(pending) if pending else end
            if self._committed.get(tp) != position:
                offsets[tp] = position
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
        except KafkaError as exc:  # a rebalance meanwhile: the new owner commits
            log.warning("jobs: commit failed (%s); the partition's new owner goes on", exc)

    # -- one request -------------------------------------------------------------------------

    async def _handle(self, tp: TopicPartition, record: Any) -> None:
        try:
            request = JobRequest.from_bytes(record.value)
        except SchemaError as exc:
            log.warning("jobs: skipping an invalid request at %s@%d: %s", tp, record.offset, exc)
            return
        board = self._events.board
        state = board.state(request.job_id)
        now = datetime.now(UTC)
        if state is not None and state.final:
            log.info("job %s already ended (%s): not run again", request.job_id, state.status)
            return
        if request.job_id in self.running:
            return  # a second copy of a job running here
        alive = state is not None and now - state.at <= self.stale_after
        if state is not None and alive and state.status != "interrupted":
            self._track(tp, record.offset, self._watch_then_run(request))
            return
        attempt = state.attempt + 1 if state is not None else 1
        await self._start(tp, record.offset, request, attempt)

    async def _start(
        self, tp: TopicPartition | None, offset: int, request: JobRequest, attempt: int
    ) -> None:
        now = datetime.now(UTC)
        if self._events.board.cancel_requested(request.job_id):
            await self._publish(request, "cancelled", attempt, "cancelled before it started")
            return
        runner = self.runners.get(request.kind)
        if runner is None:
            await self._publish(request, "refused", attempt, f"no runner for kind {request.kind}")
            return
        busy = self._events.board.running_of_kind(request.kind, now, self.stale_after)
        mine = next((c for c in self.running.values() if c.request.kind == request.kind), None)
        if mine is not None or (busy is not None and busy.job_id != request.job_id):
            other = mine.request.job_id if mine is not None else busy.job_id  # type: ignore[union-attr]
            await self._publish(
                request, "refused", attempt,
                f"a {request.kind} job is running ({other}): one job of a kind at a time; "
                "try again when it ended, or cancel it",
            )  # fmt: skip
            return
        context = JobContext(request, self.settings, self.store, self._producer)
        self.running[request.job_id] = context
        again = f" (attempt {attempt}: its worker was lost)" if attempt > 1 else ""
        await self._publish(request, "accepted", attempt, f"started on {self.worker_id}{again}")
        task = self._execute(context, runner, attempt)
        if tp is None:
            await task
        else:
            self._track(tp, offset, task)

    def _track(self, tp: TopicPartition, offset: int, work: Any) -> None:
        task = asyncio.create_task(work)
        self._in_flight.setdefault(tp, {})[offset] = task

    async def _watch_then_run(self, request: JobRequest) -> None:
        """Another worker runs this job: wait until it ends, or goes silent (then run it)."""
        while True:
            await asyncio.sleep(min(1.0, self.jobs.stale_after_s / 3))
            state = self._events.board.state(request.job_id)
            if state is None or state.final:
                return
            now = datetime.now(UTC)
            if state.status == "interrupted" or now - state.at > self.stale_after:
                log.info("job %s: its worker went silent; taking it up", request.job_id)
                await self._start(None, 0, request, state.attempt + 1)
                return

    async def _execute(self, context: JobContext, runner: JobRunner, attempt: int) -> None:
        request = context.request
        beat = asyncio.create_task(self._heartbeat(context, attempt))
        status, message, result = "done", "", None
        try:
            result = await runner(context)
            message = str(result.pop("message", "")) if result else ""
        except WorkerStopping:
            status, message = "interrupted", "the worker stopped; the job will be taken up again"
        except JobCancelled as exc:
            status, message = "cancelled", str(exc) or "cancelled on request"
        except SonicbusError as exc:
            status, message = "failed", str(exc)
        except Exception as exc:
            log.exception("job %s (%s) crashed", request.job_id, request.kind)
            status, message = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            self.running.pop(request.job_id, None)
        _, progress = context.latest()
        await self._publish(request, status, attempt, message, result=result, progress=progress)
        log.info("job %s (%s) %s %s", request.job_id, request.kind, status, message)

    async def _heartbeat(self, context: JobContext, attempt: int) -> None:
        """Publish progress when it changed (at most every 0.5 s), and at least every
        `jobs.heartbeat_s`, which tells the other workers this job is alive."""
        loop = asyncio.get_running_loop()
        sent_version, sent_at = -1, loop.time()
        while True:
            await asyncio.sleep(min(PROGRESS_EVERY_S, self.jobs.heartbeat_s))
            version, progress = context.latest()
            if version == sent_version and loop.time() - sent_at < self.jobs.heartbeat_s:
                continue
            try:
                await self._publish(context.request, "progress", attempt, progress.message,
                                    progress=progress)  # fmt: skip
            except KafkaError as exc:
                log.warning("job %s: progress not published (%s)", context.request.job_id, exc)
            sent_version, sent_at = version, loop.time()

    async def _publish(
        self,
        request: JobRequest,
        status: str,
        attempt: int,
        message: str = "",
        **fields: Any,
    ) -> None:
        event = JobEvent(
            job_id=request.job_id, kind=request.kind, status=status,  # type: ignore[arg-type]
            worker=self.worker_id, attempt=attempt, message=message,
            requested_by=request.requested_by,
            params=request.params if status in ("accepted", "refused") else None,
            **fields,
        )  # fmt: skip
        await send_event(self._producer, self.settings.topics, event)
        self._events.board.note(event)

    def _on_event(self, event: JobEvent) -> None:
        if event.status == "cancel_requested" and event.job_id in self.running:
            log.info("job %s: cancel requested (%s)", event.job_id, event.requested_by or "?")
            self.running[event.job_id].cancel.set()
