"""Publishing to the `dlq` topic: a failed record travels there with its reason.

A dead letter is written (and acknowledged by the broker) before the offset
of the failed record is committed, so a failure is never lost in between.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.schemas import DeadLetter
from pipeline.schemas.deadletters import Stage

log = logging.getLogger(__name__)

# Keep the carried value well under the broker's record limit.
MAX_CARRIED_VALUE_BYTES = 512 * 1024


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="replace")


def dead_letter_for(
    *,
    stage: Stage,
    error: BaseException,
    key: bytes | str | None = None,
    value: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    group: str | None = None,
    attempts: int = 1,
) -> DeadLetter:
    """Describe a failure, carrying the original record (truncated if huge)."""
    truncated = value is not None and len(value) > MAX_CARRIED_VALUE_BYTES
    carried = value[:MAX_CARRIED_VALUE_BYTES] if value is not None else None
    value_text = value_b64 = None
    if carried is not None:
        try:
            value_text = carried.decode("utf-8")
        except UnicodeDecodeError:
            value_b64 = base64.b64encode(carried).decode()
    return DeadLetter(
        key=_text(key),
        stage=stage,
        error_class=type(error).__name__,
        message=str(error)[:4000] or type(error).__name__,
        attempts=attempts,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        consumer_group=group,
        value_text=value_text,
        value_base64=value_b64,
        value_truncated=truncated,
        headers={k: _text(v) or "" for k, v in (headers or [])},
    )


def dead_letter_for_record(
    record: Any, *, stage: Stage, error: BaseException, group: str | None, attempts: int = 1
) -> DeadLetter:
    """The same, from an aiokafka ConsumerRecord."""
    return dead_letter_for(
        stage=stage,
        error=error,
        key=record.key,
        value=record.value,
        headers=list(record.headers or []),
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        group=group,
        attempts=attempts,
    )


class DeadLetterSink:
    """Writes dead letters to the `dlq` topic through a shared producer."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, letter: DeadLetter) -> None:
        log.warning(
            "dead letter: %s at %s: %s",
            letter.key,
            letter.stage,
            letter.message,
            extra={"stage": letter.stage, "error_class": letter.error_class, "key": letter.key},
        )
        await self.producer.send_and_wait(
            self.topic, letter.to_bytes(), key=letter.key.encode() if letter.key else None
        )
