"""Prometheus metrics of the whole pipeline, exported by `sonicbus serve` at /metrics.

Two sources, so a scrape never waits on the broker:
- gauges come from the last `Snapshot` the HTTP service sampled (every
  `ops.sample_interval_s`): lag per partition in records and seconds,
  throughput, ETA, members, dead letters in the topic, collection rows, model
  load state (inferred, see status.py), replay progress;
- histograms and counters follow the bus as it flows (`BusFollower`): embed
  stage durations from `embeddings` (EmbeddingEvent.timings, measured by the
  embedders), query latencies from `replies` (QueryReply.elapsed_ms, measured
  by the query service) and dead letters by stage and group from `dlq`.
Each service keeps its own registry (no process-global state), so tests can
build as many as they like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.ops.lag import GroupLag
from pipeline.ops.progress import ReplayProgress
from pipeline.ops.status import CollectionInfo, ModelInfo
from pipeline.schemas import DeadLetter, EmbeddingEvent, QueryReply, SchemaError
from pipeline.topics import list_topics

log = logging.getLogger(__name__)

STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
QUERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class Snapshot:
    """What the sampler saw last; gauges are read from here at scrape time."""

    groups: list[GroupLag] = field(default_factory=list)
    dlq_records: int = 0
    collections: list[CollectionInfo] = field(default_factory=list)
    models: list[ModelInfo] = field(default_factory=list)
    replays: list[ReplayProgress] = field(default_factory=list)
    sampled_at: datetime | None = None


class OpsMetrics:
    """A registry with the pipeline's metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.snapshot = Snapshot()
        self.last_embedded: dict[str, datetime] = {}
        self.embed_seconds = Histogram(
            "sonicbus_embed_stage_seconds",
            "Per-track time of an embedding stage (decode, embed, upsert), from EmbeddingEvents.",
            ["model", "stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.embeddings = Counter(
            "sonicbus_embedding_events",
            "EmbeddingEvents seen on the embeddings topic, by model and status.",
            ["model", "status"],
            registry=self.registry,
        )
        self.query_seconds = Histogram(
            "sonicbus_query_latency_seconds",
            "Time the query service took per request (QueryReply.elapsed_ms), by type.",
            ["type", "ok"],
            buckets=QUERY_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "sonicbus_dead_letters",
            "Dead letters read from the dlq topic (from its start), by stage and group.",
            ["stage", "group"],
            registry=self.registry,
        )
        self.registry.register(_SnapshotCollector(self))

    def observe_embedding(self, event: EmbeddingEvent) -> None:
        self.embeddings.labels(event.model, event.status).inc()
        if event.status != "embedded":
            return
        seen = self.last_embedded.get(event.model)
        self.last_embedded[event.model] = max(seen or event.emitted_at, event.emitted_at)
        timings = event.timings
        for stage, ms in (("decode", timings.decode_ms), ("embed", timings.embed_ms),
                          ("upsert", timings.upsert_ms)):  # fmt: skip
            self.embed_seconds.labels(event.model, stage).observe(ms / 1000)

    def observe_reply(self, reply: QueryReply) -> None:
        self.query_seconds.labels(reply.type or "unknown", str(reply.ok).lower()).observe(
            reply.elapsed_ms / 1000
        )

    def observe_dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters.labels(letter.stage, letter.consumer_group or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    def __init__(self, metrics: OpsMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot
        part = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(
            "sonicbus_consumer_lag_records",
            "Records the group will still read, per partition (Kafka's LAG when committed).",
            labels=part,
        )
        seconds = GaugeMetricFamily(
            "sonicbus_consumer_lag_seconds",
            "Age of the oldest unread record, per partition (0 when caught up).",
            labels=part,
        )
        committed = GaugeMetricFamily(
            "sonicbus_consumer_committed_offset", "Committed offset (absent: none).", labels=part
        )
        end = GaugeMetricFamily("sonicbus_log_end_offset", "High watermark.", labels=part)
        rate = GaugeMetricFamily(
            "sonicbus_consumer_throughput_records_per_second",
            "Records/s the group consumed over ops.rate_window_s.",
            labels=["group"],
        )
        eta = GaugeMetricFamily(
            "sonicbus_consumer_eta_seconds",
            "Seconds until caught up at that rate.",
            labels=["group"],
        )
        members = GaugeMetricFamily(
            "sonicbus_consumer_group_members", "Active members.", labels=["group", "state"]
        )
        for g in snap.groups:
            members.add_metric([g.group, g.state], len(g.members))
            if g.throughput is not None:
                rate.add_metric([g.group], g.throughput)
            if g.eta_s is not None:
                eta.add_metric([g.group], g.eta_s)
            for p in g.partitions:
                labels = [g.group, p.topic, str(p.partition)]
                lag.add_metric(labels, p.pending)
                seconds.add_metric(labels, p.lag_seconds)
                end.add_metric(labels, p.log_end)
                if p.committed is not None:
                    committed.add_metric(labels, p.committed)
        yield from (lag, seconds, committed, end, rate, eta, members)
        yield GaugeMetricFamily(
            "sonicbus_dlq_records", "Dead letters in the dlq topic now.", value=snap.dlq_records
        )
        rows = GaugeMetricFamily(
            "sonicbus_collection_rows", "Rows per collection.", labels=["collection", "role"]
        )
        for c in snap.collections:
            rows.add_metric([c.name, c.role], c.rows)
        loaded = GaugeMetricFamily(
            "sonicbus_model_loaded",
            "1 when the model is loaded in a running embedder (inferred from the bus).",
            labels=["model", "state"],
        )
        for m in snap.models:
            loaded.add_metric([m.model, m.load_state], 1.0 if m.load_state == "loaded" else 0.0)
        progress = GaugeMetricFamily(
            "sonicbus_replay_progress_ratio",
            "Share of the replay done.",
            labels=["model", "status"],
        )
        replay_eta = GaugeMetricFamily(
            "sonicbus_replay_eta_seconds", "Seconds until the replay completes.", labels=["model"]
        )
        for r in snap.replays:
            progress.add_metric([r.replay.model, r.replay.status], r.percent / 100)
            if r.eta_s is not None:
                replay_eta.add_metric([r.replay.model], r.eta_s)
        yield from (rows, loaded, progress, replay_eta)


class BusFollower:
    """Feeds the histograms and counters from `embeddings`, `replies` and `dlq`.

    No consumer group: every HTTP service instance sees everything. Embeddings
    and replies are read from their end (what happens from now on), dead
    letters from the start of the topic.
    """

    def __init__(self, settings: Settings, metrics: OpsMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.ready = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        topics = self.settings.topics
        consumer = make_consumer(self.settings.kafka, group_id=None, role="ops-metrics")
        try:
            await consumer.start()  # inside: a failed start is stopped too
            counts = await list_topics(self.settings.kafka)
            partitions = [
                TopicPartition(topic, p)
                for topic in (topics.embeddings, topics.replies, topics.dlq)
                for p in range(counts.get(topic, 0))
            ]
            consumer.assign(partitions)
            tail = [tp for tp in partitions if tp.topic != topics.dlq]
            await consumer.seek_to_end(*tail)
            await consumer.seek_to_beginning(*[tp for tp in partitions if tp.topic == topics.dlq])
            for tp in partitions:
                await consumer.position(tp)
            self.ready.set()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=2000)
                for tp, records in batches.items():
                    for record in records:
                        self._observe(tp.topic, record.value)
        finally:
            await consumer.stop()

    def _observe(self, topic: str, value: bytes | None) -> None:
        topics = self.settings.topics
        try:
            if topic == topics.embeddings:
                self.metrics.observe_embedding(EmbeddingEvent.from_bytes(value))
            elif topic == topics.replies:
                self.metrics.observe_reply(QueryReply.from_bytes(value))
            elif topic == topics.dlq:
                self.metrics.observe_dead_letter(DeadLetter.from_bytes(value))
        except SchemaError as exc:
            log.debug("metrics: skipping a record of %s: %s", topic, exc)
