"""The bus on a real broker: round trips, topic configs, dead letters, retries."""

from __future__ import annotations

import asyncio
import uuid

from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.consumers.worker import (
    Backoff,
    BatchWorker,
    Delivery,
    Failure,
    PermanentError,
    TransientError,
)
from pipeline.schemas import DeadLetter, TrackEvent
from pipeline.topics import list_topics, topic_config
from tests.fixtures.bus import committed_offsets, drain


def track(track_id: str) -> TrackEvent:
    return TrackEvent(track_id=track_id, path=f"/music/{track_id}.flac")


async def test_round_trip_keeps_keys_headers_and_values(settings: Settings, producer) -> None:
    event = track("t-1")
    await producer.send_and_wait(
        settings.topics.tracks,
        event.to_bytes(),
        key=b"t-1",
        headers=[("correlation_id", b"c-42"), ("origin", b"test")],
    )
    await producer.send_and_wait(settings.topics.tracks, None, key=b"t-2")
    records = await drain(settings, settings.topics.tracks, 2)
    by_key = {r.key: r for r in records}
    assert TrackEvent.from_bytes(by_key[b"t-1"].value) == event
    assert dict(by_key[b"t-1"].headers) == {"correlation_id": b"c-42", "origin": b"test"}
    assert by_key[b"t-2"].value is None


async def test_topics_exist_with_their_configs(settings: Settings) -> None:
    topics = await list_topics(settings.kafka)
    assert topics[settings.topics.tracks] == 3
    assert topics[settings.topics.dlq] == 1
    config = await topic_config(settings.kafka, settings.topics.tracks)
    assert config["cleanup.policy"] == "compact"
    assert (await topic_config(settings.kafka, settings.topics.embeddings))["cleanup.policy"] == (
        "delete"
    )


def worker_for(settings: Settings, producer, group: str, handler, **kwargs) -> BatchWorker:
    consumer = make_consumer(settings.kafka, settings.topics.tracks, group_id=group, role="test")
    return BatchWorker(
        consumer=consumer,
        producer=producer,
        dlq_topic=settings.topics.dlq,
        group_id=group,
        schema=TrackEvent,
        handler=handler,
        backoff=Backoff(initial_s=0.05, maximum_s=0.2),
        **kwargs,
    )


async def run_until(worker: BatchWorker, condition, timeout: float = 30.0) -> None:
    await worker.consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await worker.step()
    finally:
        await worker.consumer.stop()


async def committed(settings: Settings, group: str) -> int:
    """Total committed offsets of a group on the tracks topic (as the broker reports)."""
    offsets = await committed_offsets(settings, group)
    return sum(o.offset for tp, o in offsets.items() if tp.topic == settings.topics.tracks)


async def test_malformed_record_goes_to_dlq_and_the_next_one_is_processed(
    settings: Settings, producer
) -> None:
    # One partition key for all three, so they are in order on one partition.
    topic = settings.topics.tracks
    await producer.send_and_wait(topic, track("before").to_bytes(), key=b"k", partition=0)
    await producer.send_and_wait(topic, b'{"track_id": 12, "oops"', key=b"k", partition=0)
    await producer.send_and_wait(topic, track("after").to_bytes(), key=b"k", partition=0)

    seen: list[str] = []

    async def handler(batch: list[Delivery[TrackEvent]]) -> list[Failure]:
        seen.extend(d.value.track_id for d in batch if d.value is not None)
        return []

    group = f"g-{uuid.uuid4().hex[:6]}"
    worker = worker_for(settings, producer, group, handler)
    await run_until(worker, lambda: len(seen) >= 2 and worker.stats.dead_lettered >= 1)
    assert seen == ["before", "after"]

    letters = [
        DeadLetter.from_bytes(r.value) for r in await drain(settings, settings.topics.dlq, 1)
    ]
    assert len(letters) == 1
    letter = letters[0]
    assert letter.stage == "decode"
    assert letter.error_class == "SchemaError"
    assert "Invalid JSON" in letter.message
    assert letter.value_text == '{"track_id": 12, "oops"'
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (topic, 0, 1)
    assert letter.consumer_group == group
    assert await committed(settings, group) == 3


async def test_transient_failure_retries_without_losing_or_committing(
    settings: Settings, producer
) -> None:
    for i in range(5):
        await producer.send_and_wait(settings.topics.tracks, track(f"t{i}").to_bytes(), key=b"k")
    attempts = 0
    done: list[str] = []

    async def flaky(batch: list[Delivery[TrackEvent]]) -> list[Failure]:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise TransientError("milvus is down")
        done.extend(d.value.track_id for d in batch if d.value is not None)
        return []

    group = f"g-{uuid.uuid4().hex[:6]}"
    worker = worker_for(settings, producer, group, flaky, batch_size=10)
    await run_until(worker, lambda: len(done) >= 5)
    assert sorted(done) == [f"t{i}" for i in range(5)]
    assert worker.stats.transient_retries == 2
    assert worker.stats.dead_lettered == 0
    assert await committed(settings, group) == 5


async def test_permanent_failures_and_poison_records_are_isolated(
    settings: Settings, producer
) -> None:
    for name in ("good-1", "undecodable", "poison", "good-2"):
        await producer.send_and_wait(settings.topics.tracks, track(name).to_bytes(), key=b"k")
    done: list[str] = []

    async def handler(batch: list[Delivery[TrackEvent]]) -> list[Failure]:
        if any(d.value is not None and d.value.track_id == "poison" for d in batch):
            raise ZeroDivisionError("a bug that only this record triggers")
        failures = []
        for d in batch:
            assert d.value is not None
            if d.value.track_id == "undecodable":
                failures.append(Failure(d, PermanentError("not audio", stage="audio")))
            else:
                done.append(d.value.track_id)
        return failures

    group = f"g-{uuid.uuid4().hex[:6]}"
    worker = worker_for(settings, producer, group, handler, batch_size=10, max_attempts=2)
    await run_until(worker, lambda: worker.stats.dead_lettered >= 2 and len(done) >= 2)
    assert sorted(done) == ["good-1", "good-2"]
    letters = [
        DeadLetter.from_bytes(r.value) for r in await drain(settings, settings.topics.dlq, 2)
    ]
    by_id = {TrackEvent.from_bytes(letter.original_value()).track_id: letter for letter in letters}
    assert by_id["undecodable"].stage == "audio"
    assert by_id["undecodable"].message == "not audio"
    assert "ZeroDivisionError" in by_id["poison"].message
    assert await committed(settings, group) == 4
