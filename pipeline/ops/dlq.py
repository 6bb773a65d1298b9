"""Dead letters: inspect them by stage and reason, re-publish them after a fix, purge them.

The `dlq` topic has one partition (pipeline.topics), so a dead letter is named
by its offset, the number `sonicbus dlq list` prints and `show`/`retry` take.
A retry re-publishes the original value with its original key and headers to
the topic it came from, so the consumer that failed sees it again as new input
(at-least-once: a record fixed by then is processed, one still broken comes
back to the dlq). `purge` deletes records below an offset with Kafka's
DeleteRecords (the log start moves; nothing is rewritten).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import RecordsToDelete
from pydantic import BaseModel, Field

from pipeline.bus import make_admin, make_consumer, make_producer
from pipeline.config import KafkaSettings, TopicSettings
from pipeline.errors import InvalidInput
from pipeline.schemas import DeadLetter, SchemaError
from pipeline.topics import list_topics

log = logging.getLogger(__name__)


class DeadLetterRecord(BaseModel):
    offset: int
    partition: int = 0
    timestamp: datetime
    letter: DeadLetter


class DlqFilter(BaseModel):
    """Which dead letters a command applies to; every given criterion must match."""

    stage: str | None = None
    reason: str | None = Field(None, description="Case-insensitive text in message or error.")
    group: str | None = None
    key: str | None = None
    since: datetime | None = None
    offsets: list[int] | None = None

    def matches(self, record: DeadLetterRecord) -> bool:
        letter = record.letter
        if self.offsets is not None and record.offset not in self.offsets:
            return False
        if self.stage and letter.stage != self.stage:
            return False
        if self.group and letter.consumer_group != self.group:
            return False
        if self.key and letter.key != self.key:
            return False
        if self.since and letter.failed_at < self.since:
            return False
        if self.reason:
            text = f"{letter.error_class} {letter.message}".lower()
            if self.reason.lower() not in text:
                return False
        return True


async def read_dead_letters(
    kafka: KafkaSettings,
    topics: TopicSettings,
    selection: DlqFilter | None = None,
    timeout_s: float = 15.0,
) -> list[DeadLetterRecord]:
    """Every dead letter still in the topic that matches, oldest first."""
    selection = selection or DlqFilter()
    consumer = make_consumer(kafka, group_id=None, role="dlq-reader")
    try:
        await consumer.start()  # inside: a failed start is stopped too
        partitions = await dlq_partitions(kafka, topics)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        if selection.since is not None:
            found = await consumer.offsets_for_times(
                {tp: int(selection.since.timestamp() * 1000) for tp in partitions}
            )
            for tp in partitions:
                consumer.seek(tp, found[tp].offset if found.get(tp) else ends[tp])
        else:
            await consumer.seek_to_beginning(*partitions)
        out: list[DeadLetterRecord] = []
        async with asyncio.timeout(timeout_s):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, records in batches.items():
                    out.extend(_decoded(tp, records))
        return [r for r in out if selection.matches(r)]
    finally:
        await consumer.stop()


def _decoded(tp: TopicPartition, records: list) -> list[DeadLetterRecord]:
    out = []
    for record in records:
        try:
            letter = DeadLetter.from_bytes(record.value)
        except SchemaError as exc:
            log.warning("dlq offset %d is not a dead letter: %s", record.offset, exc)
            continue
        stamp = datetime.fromtimestamp(record.timestamp / 1000, UTC)
        out.append(
            DeadLetterRecord(
                offset=record.offset, partition=tp.partition, timestamp=stamp, letter=letter
            )
        )
    return out


async def dlq_partitions(kafka: KafkaSettings, topics: TopicSettings) -> list[TopicPartition]:
    count = (await list_topics(kafka)).get(topics.dlq)
    if not count:
        raise LookupError(f"topic {topics.dlq} does not exist (run `sonicbus topics --create`)")
    return [TopicPartition(topics.dlq, p) for p in range(count)]


def summarise(records: list[DeadLetterRecord]) -> dict[str, int]:
    """Dead letters per `stage/consumer group`."""
    counts = Counter(f"{r.letter.stage}/{r.letter.consumer_group or '-'}" for r in records)
    return dict(sorted(counts.items()))


class RetryRefused(InvalidInput):
    """A dead letter cannot be re-published as it is; the message says why."""


def retry_target(record: DeadLetterRecord, topics: TopicSettings) -> str:
    """The topic a dead letter goes back to, or RetryRefused."""
    letter = record.letter
    source = letter.source_topic
    if not source or not source.startswith(topics.prefix) or source == topics.dlq:
        raise RetryRefused(f"dlq {record.offset}: source topic {source!r} is not a sonicbus topic")
    if letter.value_truncated:
        raise RetryRefused(f"dlq {record.offset}: the original value was truncated when stored")
    if letter.original_value() is None and letter.key is None:
        raise RetryRefused(f"dlq {record.offset}: neither value nor key to re-publish")
    return source


async def retry_dead_letters(
    kafka: KafkaSettings,
    topics: TopicSettings,
    records: list[DeadLetterRecord],
    producer: AIOKafkaProducer | None = None,
) -> list[tuple[int, str]]:
    """Re-publish each record's original value (key, headers) to its source topic.

    Every record is checked first, so a refusal publishes nothing. Returns
    (dlq offset, topic) per re-published record.
    """
    targets = [(r, retry_target(r, topics)) for r in records]
    own = producer is None
    producer = producer or make_producer(kafka, role="dlq-retry")
    if own:
        await producer.start()
    try:
        done = []
        for record, topic in targets:
            letter = record.letter
            headers = [(k, v.encode()) for k, v in letter.headers.items()]
            headers.append(("sonicbus-retry-of", f"{topics.dlq}:{record.offset}".encode()))
            await producer.send_and_wait(
                topic,
                letter.original_value(),
                key=letter.key.encode() if letter.key is not None else None,
                headers=headers,
            )
            done.append((record.offset, topic))
        return done
    finally:
        if own:
            await producer.stop()


async def purge_dead_letters(
    kafka: KafkaSettings, topics: TopicSettings, before: int | None
) -> dict[int, int]:
    """Delete dead letters below offset `before` (None: all); returns partition -> new log start."""
    consumer = make_consumer(kafka, group_id=None, role="dlq-purge")
    try:
        await consumer.start()  # inside: a failed start is stopped too
        partitions = await dlq_partitions(kafka, topics)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    cut = {tp: min(ends[tp], before) if before is not None else ends[tp] for tp in partitions}
    admin = make_admin(kafka)
    await admin.start()
    try:
        result = await admin.delete_records({tp: RecordsToDelete(o) for tp, o in cut.items()})
    finally:
        await admin.close()
    return {tp.partition: low for tp, low in result.items()}
