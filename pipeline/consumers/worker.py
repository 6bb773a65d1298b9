"""The consume loop every sonicbus consumer shares: batch, decode, handle, commit.

Guarantees, in order of the loop:
- a value that does not decode into the topic's schema goes to `dlq`
  (stage `decode`) and never reaches the handler;
- the handler sees valid records (and tombstones, as `value=None`);
- a `TransientError` (Milvus down, broker hiccup) means "nothing happened":
  the worker seeks back to the batch's first offsets, waits with backoff,
  and tries again, without committing;
- a per-record `PermanentError` returned by the handler goes to `dlq` with
  its stage, and the partition moves on;
- offsets are committed only after the handler returned and every dead
  letter was acknowledged by the broker: at-least-once, nothing skipped.
A handler that raises anything else is retried; when the batch keeps failing,
its records are retried one by one so a single poison record is isolated and
dead-lettered instead of blocking the partition.

A `PauseGate` (the operator's pause, `sonicbus pause`) is asked between
batches: while it says paused, the worker fetches nothing and commits nothing
(its partitions are paused in the consumer, which still polls, so it stays in
its group); the batch in hand was finished and committed before.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from pipeline.deadletters import DeadLetterSink, dead_letter_for_record
from pipeline.schemas import Record, SchemaError
from pipeline.schemas.deadletters import Stage

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 6  # about 10 s of retries with the default backoff
COMMIT_BACKOFF_MAX_S = 4.0

T = TypeVar("T", bound=Record)


class TransientError(RuntimeError):
    """The batch could not be processed now but may be later: retry, don't commit."""


class PermanentError(RuntimeError):
    """This record will never succeed as it is: dead-letter it with its stage."""

    def __init__(self, message: str, stage: Stage = "ingest") -> None:
        super().__init__(message)
        self.stage: Stage = stage


@dataclass
class Delivery(Generic[T]):
    """One consumed record, decoded. `value` is None for a tombstone."""

    record: Any
    key: str | None
    value: T | None

    @property
    def is_tombstone(self) -> bool:
        return self.value is None


@dataclass
class Failure:
    delivery: Delivery[Any]
    error: PermanentError


Handler = Callable[[list[Delivery[T]]], Awaitable[list[Failure]]]


class PauseGate(Protocol):
    """Says whether the worker must hold between batches (pipeline.control.PauseFollower)."""

    def is_paused(self) -> bool: ...


@dataclass
class Backoff:
    """Exponential backoff with jitter, capped."""

    initial_s: float = 0.5
    maximum_s: float = 30.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        base = min(self.maximum_s, self.initial_s * self.factor ** max(0, attempt - 1))
        return base * random.uniform(0.8, 1.2)


@dataclass
class WorkerStats:
    batches: int = 0
    handled: int = 0
    dead_lettered: int = 0
    transient_retries: int = 0


class BatchWorker(Generic[T]):
    """Consumes one topic in a consumer group and hands batches to a handler."""

    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        dlq_topic: str,
        group_id: str,
        schema: type[T],
        handler: Handler[T],
        batch_size: int = 32,
        batch_timeout_ms: int = 500,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        gate: PauseGate | None = None,
    ) -> None:
        self.consumer = consumer
        self.dlq = DeadLetterSink(producer, dlq_topic)
        self.group_id = group_id
        self.schema = schema
        self.handler = handler
        self.batch_size = batch_size
        self.batch_timeout_ms = batch_timeout_ms
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.gate = gate
        self.stats = WorkerStats()
        self._failed_attempts = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; the current batch is finished first."""
        while not stop.is_set():
            if self.gate is not None and self.gate.is_paused():
                await self.hold(stop)
                continue
            await self.step()

    async def hold(self, stop: asyncio.Event) -> None:
        """While paused: fetch and commit nothing, but keep polling (group membership)."""
        try:
            while not stop.is_set() and self.gate is not None and self.gate.is_paused():
                assigned = self.consumer.assignment()
                if assigned:
                    self.consumer.pause(*assigned)
                batches = await self.consumer.getmany(timeout_ms=self.batch_timeout_ms)
                # A rebalance may hand over a partition between pause() and getmany():
                # its records were not worked on, so put its position back.
                stray = [r for partition_records in batches.values() for r in partition_records]
                if stray:
                    self._rewind(stray)
                if not assigned:
                    await asyncio.sleep(self.batch_timeout_ms / 1000)
        finally:
            paused = self.consumer.paused()
            if paused:
                self.consumer.resume(*paused)

    async def step(self) -> int:
        """Fetch and process one batch; returns the number of records it covered."""
        batches = await self.consumer.getmany(
            timeout_ms=self.batch_timeout_ms, max_records=self.batch_size
        )
        records = [r for partition_records in batches.values() for r in partition_records]
        if not records:
            return 0
        try:
            await self._process(records)
        except (TransientError, KafkaError) as exc:
            self._failed_attempts += 1
            self.stats.transient_retries += 1
            delay = self.backoff.delay(self._failed_attempts)
            log.warning(
                "batch of %d not processed (%s); retrying in %.1f s",
                len(records),
                exc,
                delay,
                extra={"group": self.group_id, "attempt": self._failed_attempts},
            )
            self._rewind(records)
            await asyncio.sleep(delay)
            return len(records)
        self._failed_attempts = 0
        await self._commit(records)
        self.stats.batches += 1
        return len(records)

    async def _process(self, records: list[Any]) -> None:
        deliveries: list[Delivery[T]] = []
        for record in records:
            try:
                deliveries.append(self._decode(record))
            except SchemaError as exc:
                await self._dead_letter(record, "decode", exc)
        if not deliveries:
            return
        failures = await self._handle_isolating_poison(deliveries)
        for failure in failures:
            await self._dead_letter(failure.delivery.record, failure.error.stage, failure.error)
        self.stats.handled += len(deliveries) - len(failures)

    def _decode(self, record: Any) -> Delivery[T]:
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        if record.value is None:
            if key is None:
                raise SchemaError("tombstone without a key")
            return Delivery(record=record, key=key, value=None)
        return Delivery(record=record, key=key, value=self.schema.from_bytes(record.value))

    async def _handle_isolating_poison(self, deliveries: list[Delivery[T]]) -> list[Failure]:
        """Run the handler; if it keeps crashing, retry record by record."""
        last_error: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self.handler(deliveries)
            except (TransientError, KafkaError):
                raise
            except Exception as exc:
                last_error = exc
                log.exception(
                    "handler failed on a batch of %d (attempt %d/%d)",
                    len(deliveries),
                    attempt,
                    self.max_attempts,
                    extra={"group": self.group_id},
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff.delay(attempt))
        if len(deliveries) == 1:
            error = PermanentError(f"{type(last_error).__name__}: {last_error}", stage="ingest")
            return [Failure(deliveries[0], error)]
        failures: list[Failure] = []
        for delivery in deliveries:
            failures.extend(await self._handle_isolating_poison([delivery]))
        return failures

    async def _dead_letter(self, record: Any, stage: Stage, error: BaseException) -> None:
        letter = dead_letter_for_record(
            record, stage=stage, error=error, group=self.group_id, attempts=1
        )
        await self.dlq.send(letter)
        self.stats.dead_lettered += 1

    def _rewind(self, records: list[Any]) -> None:
        """Seek each partition back to the first offset of the batch (nothing was done)."""
        first: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            first[tp] = min(first.get(tp, record.offset), record.offset)
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    async def _commit(self, records: list[Any]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, 0), record.offset + 1)
        # Only this batch's offsets, and only once it was handled: a retry commits the same
        # offsets again, never past work not done.
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            # A partition taken away by a rebalance while the batch was handled is not ours
            # to commit (aiokafka raises IllegalStateError, which crashed the embedder under
            # test_faults_replicas): its new owner re-reads those records (idempotent by key).
            assigned = self.consumer.assignment()
            offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
            if not offsets:
                return
            try:
                await self.consumer.commit(offsets)
                return
            except CommitFailedError as exc:
                # The group rebalanced under us: the new owner re-reads these records
                # (at-least-once); handlers are idempotent by key.
                log.warning(
                    "commit failed after a rebalance: %s", exc, extra={"group": self.group_id}
                )
                return
            except KafkaError as exc:
                # The coordinator moved, a request timed out, the broker is restarting:
                # said once, retried with a short backoff.
                if attempt == 1:
                    log.warning(
                        "commit of %d records not acknowledged (%s: %s); retrying",
                        len(records), type(exc).__name__, exc, extra={"group": self.group_id},
                    )  # fmt: skip
                if attempt == COMMIT_ATTEMPTS:
                    # Not committing is safe: the records were handled, and whoever owns
                    # these partitions next re-reads them (at-least-once, idempotent).
                    log.warning(
                        "commit gave up after %d attempts: these records may be handled again",
                        attempt, extra={"group": self.group_id},
                    )  # fmt: skip
                    return
                await asyncio.sleep(min(COMMIT_BACKOFF_MAX_S, self.backoff.delay(attempt)))
