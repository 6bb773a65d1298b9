"""The `job-events` topic on the broker: reading it into a `JobBoard`, following it, writing it.

Every worker follows the whole topic (no consumer group): the board it keeps
says which jobs ended (a redelivered request for one of them is skipped),
which run now and where (one job of a kind at a time), and which were asked
to stop. Clients read it to list and follow jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.bus import make_consumer, read_to_end
from pipeline.config import KafkaSettings, TopicSettings
from pipeline.errors import Unavailable
from pipeline.schemas.jobs import JobBoard, JobEvent, cancel_key
from pipeline.topics import ensure_topics, job_events_topic, list_topics

log = logging.getLogger(__name__)


class JobsUnavailable(Unavailable):
    """The job topics could not be read or written (the broker does not answer)."""


async def catch_up(kafka: KafkaSettings, consumer: Any, topic: str, board: JobBoard) -> bool:
    """Assign every partition of `topic` and apply every record up to its current end.

    False when the topic does not exist."""
    partitions = (await list_topics(kafka)).get(topic)
    if not partitions:
        return False
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    async for record in read_to_end(consumer, tps, max_records=5000):
        board.apply(record.key, record.value)
    return True


async def read_job_board(kafka: KafkaSettings, topics: TopicSettings) -> JobBoard:
    """Every job's latest state, read from the start of `job-events` to its end now."""
    board = JobBoard()
    consumer = make_consumer(kafka, group_id=None, role="job-events")
    topic = job_events_topic(topics)
    try:
        await consumer.start()
        await catch_up(kafka, consumer, topic, board)
    except Exception as exc:
        raise JobsUnavailable(f"cannot read {topic} from {kafka.bootstrap_servers}: {exc}") from exc
    finally:
        await consumer.stop()
    return board


async def send_event(producer: AIOKafkaProducer, topics: TopicSettings, event: JobEvent) -> None:
    """Publish one event, acknowledged, under the job's key (a cancel: `cancel:<id>`)."""
    key = cancel_key(event.job_id) if event.status == "cancel_requested" else event.job_id
    await producer.send_and_wait(job_events_topic(topics), event.to_bytes(), key=key.encode())


class JobEventsFollower:
    """A live `JobBoard`: read to the end at `start`, then kept up to date by a task.

    `listeners` are called with every event applied (the worker wakes a job that
    was asked to stop; a client follows one job)."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, role: str = "jobs") -> None:
        self.kafka = kafka
        self.topics = topics
        self.board = JobBoard()
        self.listeners: list[Callable[[JobEvent], None]] = []
        self._consumer = make_consumer(kafka, group_id=None, role=f"{role}-events")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        topic = job_events_topic(self.topics)
        try:
            await self._consumer.start()
            if not await catch_up(self.kafka, self._consumer, topic, self.board):
                await ensure_topics(self.kafka, self.topics)
                await catch_up(self.kafka, self._consumer, topic, self.board)
        except Exception as exc:
            await self._consumer.stop()
            raise JobsUnavailable(f"cannot read {topic}: {exc}") from exc
        self._task = asyncio.create_task(self._follow(), name="job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away: keep what is known
                log.warning("job-events unreadable (%s); retrying", exc)
                await asyncio.sleep(2.0)
                continue
            for records in batch.values():
                for record in records:
                    event = self.board.apply(record.key, record.value)
                    if event is not None:
                        for listener in list(self.listeners):
                            listener(event)
