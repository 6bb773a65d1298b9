"""Consumer lag: sonicbus' figures against Kafka's own `kafka-consumer-groups --describe`.

The operator's story: a group with one partition lagging, one idle (caught up),
one never committed, and a committed partition of a topic it no longer reads.
`sonicbus lag` must print what Kafka's tool prints for it, partition by
partition, while the member runs and after it left; and it adds what the tool
leaves out: records still to read, their age, throughput and an ETA.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import TopicPartition

from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.ops.lag import GroupLag, GroupNotFound, LagReader, LagTracker, eta
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.kafka_tool import describe_offsets, describe_state

pytestmark = pytest.mark.timeout(120)


async def produce(producer, topic: str, counts: dict[int, int]) -> None:
    for partition, count in counts.items():
        for i in range(count):
            await producer.send_and_wait(topic, b"{}", key=f"k{i}".encode(), partition=partition)


def ours(report: GroupLag) -> dict[tuple[str, int], dict]:
    """Our rows in the tool's terms (numbers as the text it prints, "-" as None)."""

    def text(value: int | None) -> str | None:
        return None if value is None else str(value)

    return {
        (p.topic, p.partition): {
            "committed": text(p.committed),
            "log_end": text(p.log_end),
            "lag": text(p.lag),
            "consumer_id": p.consumer_id,
            "host": p.host,
            "client_id": p.client_id,
        }
        for p in report.partitions
    }


async def sonicbus_lag_json(settings: Settings, group: str) -> dict:
    process = await asyncio.create_subprocess_exec(
        *sonicbus_command("lag", group, "--json"),
        env=cli_env(settings), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    return json.loads(out)


async def test_lag_equals_kafkas_consumer_group_tool_partition_by_partition(
    settings: Settings, producer
) -> None:
    tracks, embeddings = settings.topics.tracks, settings.topics.embeddings
    await produce(producer, tracks, {0: 5, 1: 4, 2: 2})
    await produce(producer, embeddings, {0: 3})
    group = f"lag-{uuid.uuid4().hex[:8]}"

    # Once upon a time the group read `embeddings` (committed, nobody holds it now).
    old = make_consumer(settings.kafka, group_id=group, role="old-reader")
    await old.start()
    old.assign([TopicPartition(embeddings, 0)])
    await old.commit({TopicPartition(embeddings, 0): 1})
    await old.stop()

    member = make_consumer(settings.kafka, tracks, group_id=group, role="lag-member")
    await member.start()
    try:
        async with asyncio.timeout(20):
            while len(member.assignment()) < 3:
                await member.getmany(timeout_ms=200)
        await member.commit({TopicPartition(tracks, 0): 2, TopicPartition(tracks, 1): 4})

        async with LagReader(settings.kafka) as reader:
            report = await reader.describe(group)
        kafka_rows = await describe_offsets(settings, group)
        assert ours(report) == kafka_rows
        assert (report.state, len(report.members)) == await describe_state(settings, group)
        assert report.state == "Stable" and len(report.members) == 1

        by = {(p.topic, p.partition): p for p in report.partitions}
        lagging, idle, uncommitted = by[(tracks, 0)], by[(tracks, 1)], by[(tracks, 2)]
        assert (lagging.committed, lagging.lag, lagging.pending) == (2, 3, 3)
        assert (idle.committed, idle.lag, idle.pending, idle.lag_seconds) == (4, 0, 0, 0.0)
        # Never committed: the tool shows "-" (no lag guessed); the member will read both records.
        assert (uncommitted.committed, uncommitted.lag, uncommitted.pending) == (None, None, 2)
        unowned = by[(embeddings, 0)]
        assert (unowned.consumer_id, unowned.lag, unowned.pending) == (None, 2, 2)
        assert 0 < lagging.lag_seconds < 60 and uncommitted.lag_seconds > 0
        assert report.lag == 5 and report.pending == 7

        cli = await sonicbus_lag_json(settings, group)
        assert [g["group"] for g in cli["groups"]] == [group]
        cli_rows = {(p["topic"], p["partition"]): p for p in cli["groups"][0]["partitions"]}
        assert {k: (v["committed"], v["log_end"], v["lag"]) for k, v in cli_rows.items()} == {
            k: (p.committed, p.log_end, p.lag) for k, p in by.items()
        }
    finally:
        await member.stop()

    # The member left: the never-committed partition has no row any more, in both views.
    async with LagReader(settings.kafka) as reader:
        report = await reader.describe(group)
    assert ours(report) == await describe_offsets(settings, group)
    assert report.state == "Empty" and report.members == []
    assert sorted(ours(report)) == [(embeddings, 0), (tracks, 0), (tracks, 1)]


async def test_unknown_group_and_a_broker_that_is_down(settings: Settings) -> None:
    async with LagReader(settings.kafka) as reader:
        with pytest.raises(GroupNotFound, match="does not exist"):
            await reader.describe(f"nobody-{uuid.uuid4().hex[:6]}")

    from pipeline.ops.lag import BrokerUnavailable

    down = settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        async with LagReader(down):
            pass
    assert time.monotonic() - started < 30


def test_throughput_and_eta_come_from_successive_samples() -> None:
    from pipeline.ops.lag import PartitionLag

    def sample(committed: int, end: int = 1000) -> GroupLag:
        part = PartitionLag(
            topic="t", partition=0, committed=committed, log_start=0, log_end=end,
            lag=end - committed, pending=end - committed,
        )  # fmt: skip
        return GroupLag(group="g", state="Stable", partitions=[part])

    tracker = LagTracker(window_s=60)
    first = tracker.observe(sample(100), now=0.0)
    assert first.throughput is None and first.eta_s is None  # one sample: no rate yet
    later = tracker.observe(sample(300), now=10.0)
    assert later.throughput == 20.0 and later.eta_s == 35.0  # 700 left at 20/s
    assert tracker.observe(sample(50), now=11.0).throughput is None  # offsets reset: start over
    assert eta(0, None) == 0.0 and eta(5, 0.0) is None
