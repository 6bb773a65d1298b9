"""Moving a consumer group's committed offsets, as `kafka-consumer-groups --reset-offsets` does.

Kafka lets a group's offsets be changed only while the group has no active
member: a running consumer would overwrite them with its next commit. So the
group is described first and the change refused (or waited for) while members
are active. The new offsets are committed by a consumer that carries the group
id but never joins the group (manual assignment): an OffsetCommit outside any
generation, which the broker accepts only for an empty group, the request the
Java admin's alterConsumerGroupOffsets sends (aiokafka's admin client has no
such call). Nothing is committed unless every check passed.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from pipeline.bus import make_consumer
from pipeline.config import KafkaSettings
from pipeline.errors import Conflict
from pipeline.ops.lag import GroupLag, GroupNotFound, LagReader


class GroupBusy(Conflict):
    """The group has active members, so its offsets may not be moved now."""


async def describe_or_none(reader: LagReader, group: str, topic: str = "") -> GroupLag | None:
    """The group (its rows of `topic` only, when given), or None if it does not exist."""
    try:
        return await reader.describe(group, ages=False, prefix=topic)
    except GroupNotFound:
        return None


def busy_message(report: GroupLag, what: str) -> str:
    clients = ", ".join(sorted({f"{m.client_id}@{m.host}" for m in report.members}))
    return (
        f"group {report.group} has {len(report.members)} active member(s) ({clients}); "
        f"Kafka only lets {what} while a group is empty: stop its consumers "
        f"(`sonicbus embed` / `sonicbus up`) first, or pass --wait"
    )


async def wait_until_idle(
    reader: LagReader,
    group: str,
    wait_s: float | None,
    what: str,
    poll_s: float = 1.0,
    topic: str = "",
) -> GroupLag | None:
    """The group's report once it has no active member; GroupBusy if not within `wait_s`.

    None when the group does not exist yet (nothing consumed: also idle).
    """
    deadline = time.monotonic() + (wait_s or 0.0)
    while True:
        report = await describe_or_none(reader, group, topic)
        if report is None or not report.active:
            return report
        if wait_s is None or time.monotonic() >= deadline:
            suffix = f" (waited {wait_s:g} s)" if wait_s else ""
            raise GroupBusy(busy_message(report, what) + suffix)
        await asyncio.sleep(poll_s)


async def topic_partitions(reader: LagReader, topic: str) -> list[TopicPartition]:
    assert reader.admin is not None
    described = await reader.admin.describe_topics([topic])
    if not described or described[0].get("error_code") or not described[0]["partitions"]:
        raise LookupError(f"topic {topic} does not exist (run `sonicbus topics --create`)")
    return sorted(
        (TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]),
        key=lambda tp: tp.partition,
    )


async def offsets_since(
    reader: LagReader, partitions: list[TopicPartition], since: datetime | None
) -> dict[TopicPartition, int]:
    """Where a replay starts: the log start, or the first record at/after `since`."""
    starts, ends = await reader.log_bounds(partitions)
    if since is None:
        return dict(starts)
    assert reader.reader is not None
    found = await reader.reader.offsets_for_times(
        {tp: int(since.timestamp() * 1000) for tp in partitions}
    )
    return {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in partitions}


async def commit_offsets(
    kafka: KafkaSettings, group: str, offsets: dict[TopicPartition, int]
) -> None:
    """Commit `offsets` for an idle group (see the module docstring)."""
    if not offsets:
        return
    consumer = make_consumer(kafka, group_id=group, role="offsets-reset")
    try:
        await consumer.start()  # inside: a failed start is stopped too
        consumer.assign(list(offsets))
        await consumer.commit(dict(offsets))
    except KafkaError as exc:
        raise GroupBusy(
            f"group {group} got an active member while its offsets were being reset, so Kafka "
            f"refused them ({type(exc).__name__}); nothing changed: stop its consumers "
            "(`sonicbus embed` / `sonicbus up`) first, or pass --wait"
        ) from exc
    finally:
        await consumer.stop()
