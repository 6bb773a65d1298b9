"""Topic layout, and the idempotent bootstrapper that creates it.

`tracks` is log-compacted: its latest value per key is the catalog, so
replaying it from the start re-embeds the whole library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from pipeline.bus import make_admin
from pipeline.config import KafkaSettings, Settings, TopicSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(topics: TopicSettings, max_message_bytes: int) -> list[TopicSpec]:
    """Every topic sonicbus needs, with its configuration."""
    rf = topics.replication_factor
    common = {"max.message.bytes": str(max_message_bytes)}
    if rf >= 3:
        # With acks=all, a write then needs two copies: one broker may die without a loss
        # or a stall, whatever the cluster's own default (Kafka's is 1).
        common["min.insync.replicas"] = "2"
    return [
        TopicSpec(
            topics.tracks,
            topics.partitions,
            rf,
            {
                **common,
                "cleanup.policy": "compact",
                "min.compaction.lag.ms": "60000",
                "delete.retention.ms": str(24 * 3600 * 1000),
            },
        ),
        TopicSpec(
            topics.embeddings,
            topics.partitions,
            rf,
            {**common, "retention.ms": str(7 * 24 * 3600 * 1000)},
        ),
        TopicSpec(topics.dlq, 1, rf, {**common, "retention.ms": str(topics.dlq_retention_ms)}),
        TopicSpec(
            topics.requests, topics.partitions, rf, {**common, "retention.ms": str(3600 * 1000)}
        ),
        TopicSpec(
            topics.replies,
            topics.reply_partitions,
            rf,
            {**common, "retention.ms": str(3600 * 1000)},
        ),
        # Operator commands (pause/resume embedding, pipeline.control): one partition, so
        # every follower sees them in the order given; compacted, so the latest per key stays.
        TopicSpec(
            topics.control,
            1,
            rf,
            {**common, "cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
        # Long jobs (pipeline.jobs): requests kept a week; their events compacted, so the
        # latest per job id is the job's state (how a redelivered request is deduplicated);
        # the schedules set through the HTTP API compacted by name, one partition.
        TopicSpec(
            jobs_topic(topics), topics.partitions, rf,
            {**common, "retention.ms": str(7 * 24 * 3600 * 1000)},
        ),
        TopicSpec(
            job_events_topic(topics), topics.partitions, rf,
            {**common, "cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"},
        ),
        TopicSpec(
            job_schedules_topic(topics), 1, rf,
            {**common, "cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
    ]


def jobs_topic(topics: TopicSettings) -> str:
    """`jobs`: JobRequests keyed by kind, so all requests of a kind meet in one partition and
    one worker sees them in order: one job of a kind at a time (pipeline.schemas.jobs)."""
    return topics.name("jobs")


def job_events_topic(topics: TopicSettings) -> str:
    """`job-events`: JobEvents keyed by job id (cancel requests: `cancel:<job id>`)."""
    return topics.name("job-events")


def job_schedules_topic(topics: TopicSettings) -> str:
    """`job-schedules`: the schedules set through the HTTP API, keyed by name."""
    return topics.name("job-schedules")


async def ensure_topics(kafka: KafkaSettings, topics: TopicSettings) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the created names."""
    specs = topic_specs(topics, kafka.max_message_bytes)
    admin = make_admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created = []
        for spec in missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            spec.name,
                            spec.partitions,
                            spec.replication_factor,
                            topic_configs=spec.config,
                        )
                    ]
                )
                created.append(spec.name)
                log.info("created topic %s (%d partitions)", spec.name, spec.partitions)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()


async def list_topics(kafka: KafkaSettings) -> dict[str, int]:
    """Topic name -> partition count, internal topics left out."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        names = [n for n in await admin.list_topics() if not n.startswith("__")]
        described = await admin.describe_topics(names) if names else []
        return {t["topic"]: len(t["partitions"]) for t in described}
    finally:
        await admin.close()


async def topic_config(kafka: KafkaSettings, topic: str) -> dict[str, str]:
    """The effective configuration of one topic, as the broker reports it."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = make_admin(kafka)
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        config = {}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    config[entry[0]] = entry[1]
        return config
    finally:
        await admin.close()


# -- consumer groups ------------------------------------------------------------


def embed_group(settings: Settings, model: str) -> str:
    """The `embed-<model>` consumer group (with the install's group prefix)."""
    return settings.topics.group(f"embed-{model}")


def jobs_group(settings: Settings) -> str:
    """The `jobs` consumer group (with the install's group prefix)."""
    return settings.topics.group("jobs")


def query_group(settings: Settings) -> str:
    """The `query` consumer group (with the install's group prefix)."""
    return settings.topics.group("query")


async def read_from_end(consumer: Any, settings: Settings, topic: str) -> None:
    """Assign every partition of `topic` and resolve each position at its current end.

    Resolving now (not at the first fetch) is what makes "nothing published
    after this call is missed" true.
    """
    count = (await list_topics(settings.kafka)).get(topic)
    if not count:
        raise ValueError(f"topic {topic} does not exist")
    partitions = [TopicPartition(topic, p) for p in range(count)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)
