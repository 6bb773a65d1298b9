"""Which `requests` offsets the query service may commit: those below every unanswered one.

A query replica commits a request only after its reply (or its dead letter)
was acknowledged by the broker, so a replica that is `kill -9`'d loses
nothing: the replica that takes its partitions over reads again from the
first request it had not answered. Requests are answered concurrently and
finish out of order, so the committable offset of a partition is the lowest
offset still in hand, or one past the highest answered when none is. A
request answered twice (the dead replica had replied, but not committed yet)
gives its client a duplicate reply, which it drops by `correlation_id`
(docs/wire-contract.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)


class AnsweredOffsets:
    """Per partition: offsets taken and not answered yet, and the next offset to commit."""

    def __init__(self) -> None:
        self._in_hand: dict[TopicPartition, set[int]] = {}
        self._answered: dict[TopicPartition, int] = {}  # one past the highest answered
        self._committed: dict[TopicPartition, int] = {}

    def taken(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.setdefault(tp, set()).add(offset)

    def answered(self, tp: TopicPartition, offset: int) -> None:
        self._in_hand.get(tp, set()).discard(offset)
        self._answered[tp] = max(self._answered.get(tp, 0), offset + 1)

    def due(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets to commit now, for partitions still assigned, that move a commit forward.

        State of partitions no longer assigned is dropped: their new owner reads
        from their last commit, and answers again what was in hand here.
        """
        for tp in [tp for tp in self._answered if tp not in assigned]:
            self._answered.pop(tp, None)
            self._in_hand.pop(tp, None)
            self._committed.pop(tp, None)
        due = {}
        for tp, next_offset in self._answered.items():
            in_hand = self._in_hand.get(tp)
            # Never past an offset not seen answered: one read but not handed over yet
            # (still in FastStream's queue) is in neither set.
            offset = min(min(in_hand), next_offset) if in_hand else next_offset
            if offset > self._committed.get(tp, -1):
                due[tp] = offset
        return due

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._committed[tp] = max(self._committed.get(tp, -1), offset)

    @property
    def in_hand(self) -> int:
        return sum(len(offsets) for offsets in self._in_hand.values())


class AnswerCommits:
    """Commits, every `interval_s`, the answered requests of the consumer `consumer()` returns.

    `consumer` is asked each time (None while the subscriber is not started): the
    query service's consumer belongs to FastStream's subscriber.
    """

    def __init__(
        self, consumer: Callable[[], AIOKafkaConsumer | None], interval_s: float = 0.1
    ) -> None:
        self.consumer = consumer
        self.interval_s = interval_s
        self.offsets = AnsweredOffsets()

    def taken(self, record: Any) -> None:
        self.offsets.taken(TopicPartition(record.topic, record.partition), record.offset)

    def answered(self, record: Any) -> None:
        self.offsets.answered(TopicPartition(record.topic, record.partition), record.offset)

    async def commit(self) -> None:
        consumer = self.consumer()
        if consumer is None:
            return
        due = self.offsets.due(set(consumer.assignment()))
        if not due:
            return
        try:
            await consumer.commit(due)
        except KafkaError as exc:
            # A rebalance, or the group coordinator moving (its broker died): the next
            # round commits again, or the new owner re-reads and answers again (a
            # duplicate reply, never a lost request).
            log.info("committing answered requests failed (%s); retrying", exc)
            return
        self.offsets.committed(due)

    async def run(self) -> None:
        """Until cancelled; never dies of an error (an uncommitted request is only replayed)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.commit()
            except Exception:
                log.exception("committing answered requests failed")
