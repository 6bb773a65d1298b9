"""Consumer lag, with the figures Kafka's own consumer-group tool prints, plus what it leaves out.

Rows follow `kafka-consumer-groups --describe` (ConsumerGroupCommand in Kafka 4.1),
so an operator can check one against the other:
- one row per partition assigned to a member, with that member's consumer id,
  host and client id (members without an assignment add no row);
- one row per partition with a committed offset that no member holds (consumer "-");
- CURRENT-OFFSET is the committed offset, none when nothing was committed;
  LOG-END-OFFSET the high watermark (ListOffsets "latest", read_uncommitted, as
  the tool asks); LAG = end - committed, and none when nothing was committed:
  no guess, no NaN. A partition neither assigned nor committed has no row.

What the tool does not show and operators need:
- `pending`: records the group will still read: end - committed, or end - log
  start for a partition without a commit (sonicbus consumers start at the
  earliest offset) or whose committed records were deleted;
- `lag_seconds`: age of the oldest unconsumed record, from its timestamp (0
  when caught up);
- throughput over a window and the ETA derived from it (`LagTracker`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import BaseModel, Field, computed_field

from pipeline.bus import make_admin, make_consumer
from pipeline.config import KafkaSettings
from pipeline.errors import NotFound, Unavailable

ACTIVE_STATES = {"Stable", "PreparingRebalance", "CompletingRebalance"}


class GroupNotFound(NotFound):
    """No consumer group of that name exists on the broker."""


class BrokerUnavailable(Unavailable, ConnectionError):
    """The Kafka broker did not answer; the message names the address."""


class PartitionLag(BaseModel):
    topic: str
    partition: int
    committed: int | None = Field(description="Committed offset (CURRENT-OFFSET); None: none.")
    log_start: int = Field(description="First offset still in the log.")
    log_end: int = Field(description="High watermark (LOG-END-OFFSET).")
    lag: int | None = Field(description="log_end - committed, as Kafka's tool; None: no commit.")
    pending: int = Field(description="Records the group will still read.")
    lag_seconds: float = Field(0.0, description="Age of the oldest unconsumed record.")
    consumer_id: str | None = None
    host: str | None = None
    client_id: str | None = None

    @property
    def position(self) -> int:
        """Where the group will read next (what throughput is measured on)."""
        return self.log_end - self.pending


class Member(BaseModel):
    consumer_id: str
    client_id: str
    host: str
    assignment: list[str] = Field(default_factory=list, description="topic:partition held.")


class GroupLag(BaseModel):
    group: str
    state: str
    members: list[Member] = Field(default_factory=list)
    partitions: list[PartitionLag] = Field(default_factory=list)
    sampled_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    throughput: float | None = Field(None, description="Records/s over the tracker's window.")
    eta_s: float | None = Field(None, description="Seconds to catch up at that rate.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions if p.lag is not None)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pending(self) -> int:
        return sum(p.pending for p in self.partitions)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lag_seconds(self) -> float:
        return max((p.lag_seconds for p in self.partitions), default=0.0)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES and bool(self.members)

    def pending_on(self, topic: str) -> int:
        return sum(p.pending for p in self.partitions if p.topic == topic)


class LagReader:
    """An admin client and an offset reader, kept open across many lag samples."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 10.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.admin: AIOKafkaAdminClient | None = None
        self.reader: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        admin = make_admin(self.kafka)
        reader = make_consumer(
            self.kafka,
            group_id=None,
            role="lag-reader",
            isolation_level="read_uncommitted",  # the tool's ListOffsets default
            enable_auto_commit=False,
            max_partition_fetch_bytes=65_536,
        )
        try:
            await admin.start()
            await reader.start()
        except KafkaError as exc:
            await admin.close()
            await reader.stop()
            raise BrokerUnavailable(
                f"Kafka at {self.kafka.bootstrap_servers} is not reachable: {exc}"
            ) from exc
        self.admin, self.reader = admin, reader

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
        if self.admin is not None:
            await self.admin.close()
        self.admin = self.reader = None

    async def _guard(self, call):  # type: ignore[no-untyped-def]
        """Run `call()` under the timeout, retrying retriable errors (a broker that just
        started has no group coordinator for a few seconds)."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return await asyncio.wait_for(call(), max(0.1, deadline - time.monotonic()))
            except (KafkaConnectionError, TimeoutError) as exc:
                raise BrokerUnavailable(
                    f"Kafka at {self.kafka.bootstrap_servers} did not answer: {exc!r}"
                ) from exc
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def list_groups(self) -> list[str]:
        assert self.admin is not None, "use `async with LagReader(...)`"
        groups = await self._guard(self.admin.list_consumer_groups)
        return sorted(g[0] for g in groups if g[1] in ("consumer", ""))

    async def describe(self, group: str, ages: bool = True, prefix: str = "") -> GroupLag:
        """One group's lag, partition by partition (see the module docstring); with a
        `prefix`, only the rows of topics starting with it (members: all of them)."""
        assert self.admin is not None and self.reader is not None
        responses = await self._guard(lambda: self.admin.describe_consumer_groups([group]))
        error, _, state, _protocol_type, _protocol, raw_members = responses[0].groups[0][:6]
        if error:
            raise KafkaError(f"describing group {group!r} failed with error code {error}")
        if state == "Dead":
            raise GroupNotFound(f"consumer group {group!r} does not exist")
        committed = {
            tp: meta.offset
            for tp, meta in (
                await self._guard(lambda: self.admin.list_consumer_group_offsets(group))
            ).items()
            if meta.offset >= 0
        }
        members, owner = _members(raw_members)
        rows = [tp for m in members for tp in _tps(m.assignment)]
        rows += sorted((tp for tp in committed if tp not in owner), key=_tp_key)
        if prefix:
            rows = [tp for tp in rows if tp.topic.startswith(prefix)]
        starts, ends = await self.log_bounds(rows)
        partitions = []
        for tp in rows:
            end, start = ends[tp], starts[tp]
            offset = committed.get(tp)
            pending = max(0, end - max(offset if offset is not None else start, start))
            member = owner.get(tp)
            partitions.append(
                PartitionLag(
                    topic=tp.topic,
                    partition=tp.partition,
                    committed=offset,
                    log_start=start,
                    log_end=end,
                    lag=end - offset if offset is not None else None,
                    pending=pending,
                    consumer_id=member.consumer_id if member else None,
                    host=member.host if member else None,
                    client_id=member.client_id if member else None,
                )
            )
        report = GroupLag(group=group, state=state, members=members, partitions=partitions)
        if ages:
            await self.fill_ages(report)
        return report

    async def log_bounds(
        self, partitions: list[TopicPartition]
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(log start offsets, log end offsets) of the partitions."""
        if not partitions:
            return {}, {}
        reader = self.reader
        assert reader is not None
        starts = await self._guard(lambda: reader.beginning_offsets(partitions))
        ends = await self._guard(lambda: reader.end_offsets(partitions))
        return starts, ends

    async def fill_ages(self, report: GroupLag) -> None:
        """Set lag_seconds from the timestamp of each partition's next unread record."""
        wanted = {
            TopicPartition(p.topic, p.partition): p.position for p in report.partitions if p.pending
        }
        stamps = await self.timestamps_at(wanted)
        now_ms = time.time() * 1000
        for p in report.partitions:
            stamp = stamps.get(TopicPartition(p.topic, p.partition))
            if p.pending and stamp is not None:
                p.lag_seconds = round(max(0.0, (now_ms - stamp) / 1000), 3)

    async def timestamps_at(
        self, positions: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Timestamp (ms) of the first record at or after each position."""
        if not positions:
            return {}
        reader = self.reader
        assert reader is not None
        reader.assign(list(positions))
        for tp, offset in positions.items():
            reader.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + self.timeout_s
        while len(found) < len(positions) and time.monotonic() < deadline:
            batches = await reader.getmany(timeout_ms=200, max_records=len(positions) * 4)
            for tp, records in batches.items():
                if tp not in found and records:
                    found[tp] = records[0].timestamp
                    reader.pause(tp)
        reader.assign([])
        return found


def _members(raw_members: list) -> tuple[list[Member], dict[TopicPartition, Member]]:
    """Members ordered like the tool (most partitions first) and who holds which partition."""
    members: list[Member] = []
    for raw in raw_members:
        member_id, client_id, host, _metadata, assignment = (
            raw[0],
            raw[-4],
            raw[-3],
            raw[-2],
            raw[-1],
        )
        tps: list[TopicPartition] = []
        if assignment:
            tps = ConsumerProtocolMemberAssignment.decode(assignment).partitions()
        held = [f"{tp.topic}:{tp.partition}" for tp in sorted(tps, key=_tp_key)]
        members.append(
            Member(consumer_id=member_id, client_id=client_id, host=host, assignment=held)
        )
    members.sort(key=lambda m: -len(m.assignment))
    owner = {tp: m for m in members for tp in _tps(m.assignment)}
    return members, owner


def _tps(names: list[str]) -> list[TopicPartition]:
    out = []
    for name in names:
        topic, _, partition = name.rpartition(":")
        out.append(TopicPartition(topic, int(partition)))
    return out


def _tp_key(tp: TopicPartition) -> tuple[str, int]:
    return tp.topic, tp.partition


class LagTracker:
    """Throughput (records/s) and ETA per group, from successive lag samples.

    A group's position is the sum over its partitions of where it reads next;
    throughput is how fast that grew over the last `window_s` seconds. When a
    group's offsets move back (a replay reset them) its history starts over.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, report: GroupLag, now: float | None = None) -> GroupLag:
        now = time.monotonic() if now is None else now
        position = sum(p.position for p in report.partitions)
        samples = self._samples.setdefault(report.group, deque())
        if samples and position < samples[-1][1]:
            samples.clear()
        samples.append((now, position))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()
        report.throughput = self.rate(report.group)
        report.eta_s = eta(report.pending, report.throughput)
        return report

    def rate(self, group: str) -> float | None:
        samples = self._samples.get(group)
        if not samples or len(samples) < 2:
            return None
        (t0, p0), (t1, p1) = samples[0], samples[-1]
        return round((p1 - p0) / (t1 - t0), 3) if t1 > t0 else None


def eta(pending: int, rate: float | None) -> float | None:
    """Seconds to consume `pending` at `rate`; 0 when caught up, None when unknown/stalled."""
    if pending <= 0:
        return 0.0
    if not rate or rate <= 0:
        return None
    return round(pending / rate, 1)
