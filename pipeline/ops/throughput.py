"""Throughput and ETA from one look: how fast the groups' output topics grew recently.

A `LagTracker` needs two samples of a group's offsets, so a one-shot `sonicbus lag`
or `status` had no throughput and no ETA. The groups sonicbus runs leave a trail
instead: an embedder publishes an `EmbeddingEvent` per track it handled (embedded,
skipped as unchanged, deleted) to `embeddings`, and the query service a reply per
request to `replies`. The records of the last `ops.rate_window_s` seconds give the
rate: (records - 1) / (now - first record's time). When a group stops, the rate
decays over the window instead of staying at its last value.

The same figures serve `lag` (one-shot and --watch), `status`, the HTTP API and the
dashboard, so they agree; other groups (`ops.groups`) keep the tracker's rate.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from aiokafka import TopicPartition

from pipeline.config import Settings
from pipeline.ops.lag import GroupLag, LagReader, eta
from pipeline.schemas import EmbeddingEvent, SchemaError
from pipeline.topics import embed_group, list_topics, query_group

MAX_RECORDS = 5_000  # per partition and look: a busy replies topic must not stall a view
READ_TIMEOUT_S = 10.0


async def output_rates(
    settings: Settings, reader: LagReader, window_s: float | None = None
) -> dict[str, float]:
    """Records/s per consumer group over the last window, from `embeddings` and `replies`.

    Groups with no output in the window get 0.0; the query group appears only when
    its topic exists.
    """
    window_s = window_s or settings.ops.rate_window_s
    topics = settings.topics
    counts = await list_topics(settings.kafka)
    partitions = [
        TopicPartition(topic, p)
        for topic in (topics.embeddings, topics.replies)
        for p in range(counts.get(topic, 0))
    ]
    now = time.time()
    stamps = await _recent(reader, partitions, now - window_s, topics.embeddings)
    rates = {embed_group(settings, m): 0.0 for m in settings.embed.models}
    if counts.get(topics.replies):
        rates[query_group(settings)] = 0.0
    for key, times in stamps.items():
        group = query_group(settings) if key is None else embed_group(settings, key)
        rates[group] = rate_of(times, now)
    return rates


def rate_of(times: list[float], now: float) -> float:
    """(n - 1) / (now - first): the pace since the first record of the window."""
    if len(times) < 2:
        return 0.0
    span = now - min(times)
    return round((len(times) - 1) / span, 3) if span > 0 else 0.0


async def _recent(
    reader: LagReader, partitions: list[TopicPartition], since: float, embeddings: str
) -> dict[str | None, list[float]]:
    """Record times (s) since `since`, by model for `embeddings` (None: replies)."""
    found: dict[str | None, list[float]] = defaultdict(list)
    if not partitions:
        return found
    consumer = reader.reader
    assert consumer is not None, "use `async with LagReader(...)`"
    starts = await consumer.offsets_for_times({tp: int(since * 1000) for tp in partitions})
    ends = await consumer.end_offsets(partitions)
    wanted = {}
    for tp in partitions:
        start = starts[tp].offset if starts.get(tp) else ends[tp]
        if start < ends[tp]:
            wanted[tp] = max(start, ends[tp] - MAX_RECORDS)
    if not wanted:
        return found
    consumer.assign(list(wanted))
    for tp, offset in wanted.items():
        consumer.seek(tp, offset)
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            while [tp for tp in wanted if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(timeout_ms=200, max_records=2_000)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset >= ends[tp]:
                            continue
                        key = None
                        if tp.topic == embeddings:
                            try:
                                key = EmbeddingEvent.from_bytes(record.value).model
                            except SchemaError:
                                continue
                        found[key].append(record.timestamp / 1000)
    finally:
        consumer.assign([])
    return found


def apply_rates(groups: list[GroupLag], rates: dict[str, float]) -> list[GroupLag]:
    """Throughput and ETA of the groups that have an output rate (others keep theirs)."""
    for group in groups:
        if group.group in rates:
            group.throughput = rates[group.group]
            group.eta_s = eta(group.pending, group.throughput)
    return groups
