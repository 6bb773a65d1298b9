"""The `control` topic on the broker: reading, following and writing operator commands.

Pause and resume travel on the bus, not in Milvus beside the replay state: on
the default Milvus Lite the running `sonicbus up` holds the database, so a
second terminal could not write there, while every process (the CLI, the HTTP
service, each `sonicbus embed`) reaches Kafka. The topic is compacted, like
`tracks`, so it *is* the state: reading it from the start gives the standing
orders (`pipeline.schemas.control.PauseBoard`), and an embedder started later
obeys a pause given earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import TopicPartition

from pipeline.bus import make_consumer, make_producer, read_to_end
from pipeline.config import KafkaSettings, TopicSettings
from pipeline.errors import Unavailable
from pipeline.schemas.control import PauseBoard
from pipeline.topics import ensure_topics, list_topics

log = logging.getLogger(__name__)


class ControlUnavailable(Unavailable):
    """The control topic could not be read or written (the broker does not answer)."""


async def _catch_up(kafka: KafkaSettings, consumer: Any, topic: str, board: PauseBoard) -> bool:
    """Assign the topic's partitions and apply every record up to the current end.

    False when the topic does not exist (nothing to apply)."""
    partitions = (await list_topics(kafka)).get(topic)
    if not partitions:
        return False
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    async for record in read_to_end(consumer, tps):
        board.apply(record.key, record.value)
    return True


async def read_board(kafka: KafkaSettings, topic: str) -> PauseBoard:
    """The standing commands, read from the start of the topic to its end at call time."""
    board = PauseBoard()
    consumer = make_consumer(kafka, group_id=None, role="control")
    try:
        await consumer.start()
        await _catch_up(kafka, consumer, topic, board)
    except Exception as exc:
        where = kafka.bootstrap_servers
        raise ControlUnavailable(f"cannot read {topic} from {where}: {exc}") from exc
    finally:
        await consumer.stop()
    return board


async def publish(
    kafka: KafkaSettings, topics: TopicSettings, records: Sequence[tuple[str, bytes | None]]
) -> None:
    """Write (key, value) records, value None a tombstone, each acknowledged, in order."""
    producer = make_producer(kafka, role="control")
    try:
        await ensure_topics(kafka, topics)
        await producer.start()
        for key, value in records:
            await producer.send_and_wait(topics.control, value, key=key.encode())
    except Exception as exc:
        raise ControlUnavailable(
            f"cannot write {topics.control} on {kafka.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        await producer.stop()


class PauseFollower:
    """One embedder's view of the control topic: `is_paused()` answers from memory.

    `start` reads the topic to its end before the embedder fetches anything, so a
    pause given before the embedder started holds from its first batch; then a
    task follows new commands (seen within about a second).
    """

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, model: str) -> None:
        self.kafka = kafka
        self.topics = topics
        self.model = model
        self.board = PauseBoard()
        self._consumer = make_consumer(kafka, group_id=None, role=f"control-{model}")
        self._task: asyncio.Task[None] | None = None
        self._was_paused = False

    def is_paused(self) -> bool:
        return self.board.is_paused(self.model)

    async def start(self) -> None:
        await self._consumer.start()
        if not await _catch_up(self.kafka, self._consumer, self.topics.control, self.board):
            # An install older than the control topic: create it, then follow it.
            await ensure_topics(self.kafka, self.topics)
            await _catch_up(self.kafka, self._consumer, self.topics.control, self.board)
        self._note_change()
        self._task = asyncio.create_task(self._follow(), name=f"control-{self.model}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _follow(self) -> None:
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker away: keep the last known orders
                log.warning("control topic unreadable (%s); retrying", exc)
                await asyncio.sleep(2.0)
                continue
            for records in batch.values():
                for record in records:
                    self.board.apply(record.key, record.value)
            self._note_change()

    def _note_change(self) -> None:
        paused = self.is_paused()
        if paused != self._was_paused:
            command = self.board.command_for(self.model)
            by = f" (by {command.by})" if command is not None and command.by else ""
            state = "paused: finishing the batch in hand" if paused else "resumed"
            log.info("embedding with %s %s%s", self.model, state, by)
            self._was_paused = paused
