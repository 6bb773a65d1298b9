"""The one-screen overview behind `sonicbus status`, `/healthz` and part of `/metrics`.

Services (broker, Milvus), consumer groups with their lag, the dead letters,
the collections with their row counts and roles, and per model: which
collection is active, the replay, the embedders and whether the model is
loaded. Model load state lives inside the embedder processes, so it is
inferred from the bus: an embedder loads its model before joining its group
and unloads it `embed.idle_unload_s` after its last batch, so "loaded" means
members are running and the model's last `embeddings` event is more recent
than that (or idle unloading is off); "unloaded (idle)" means members run but
have been idle longer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import TopicPartition
from pydantic import BaseModel, Field

from pipeline import infra
from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.ops.dlq import read_dead_letters, summarise
from pipeline.ops.lag import GroupLag, GroupNotFound, LagReader, LagTracker
from pipeline.ops.throughput import apply_rates, output_rates
from pipeline.schemas import EmbeddingEvent, SchemaError
from pipeline.store import VectorStore
from pipeline.topics import embed_group, list_topics, query_group
from pipeline.wiring import vector_store

log = logging.getLogger(__name__)


class ServiceState(BaseModel):
    name: str
    reachable: bool
    address: str
    detail: str = ""


class CollectionInfo(BaseModel):
    name: str
    rows: int
    role: str = ""


class ModelInfo(BaseModel):
    model: str
    active_collection: str
    target_collection: str
    replay: str = Field("", description="Latest replay: id, status.")
    embedders: int = 0
    load_state: str = Field(description="loaded | unloaded (idle) | not running (inferred)")
    last_embedded_at: datetime | None = None


class StatusReport(BaseModel):
    services: list[ServiceState]
    groups: list[GroupLag] = Field(default_factory=list)
    missing_groups: list[str] = Field(default_factory=list, description="Expected, never seen.")
    dead_letters: int = 0
    dead_letters_by: dict[str, int] = Field(default_factory=dict)
    collections: list[CollectionInfo] = Field(default_factory=list)
    models: list[ModelInfo] = Field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(s.reachable for s in self.services)


def watched_groups(settings: Settings) -> list[str]:
    """Groups an operator expects: each configured model's embedder, the query service, extras."""
    groups = [embed_group(settings, m) for m in settings.embed.models] + [
        query_group(settings),
        *settings.ops.groups,
    ]
    return list(dict.fromkeys(groups))


def sonicbus_groups(settings: Settings) -> list[str]:
    """Every group sonicbus runs: an embedder per known model, the query service, extras.

    Views without a named group look at these rather than at every group of the
    cluster: a shared cluster may hold thousands, each costing a few requests.
    """
    from models.registry import available_models

    groups = [embed_group(settings, m) for m in available_models()]
    return list(dict.fromkeys([*watched_groups(settings), *groups]))


async def our_groups(settings: Settings, reader: LagReader) -> list[GroupLag]:
    """sonicbus' groups that read (or committed on) this install's topics, with only the
    rows and members of those topics: installs that share a cluster (topic prefixes)
    share group names too. `sonicbus lag GROUP` shows every row, as Kafka's tool does."""
    found = []
    for group in sonicbus_groups(settings):
        try:
            report = await reader.describe(group, ages=False, prefix=settings.topics.prefix)
        except GroupNotFound:
            continue
        prefix = settings.topics.prefix
        members = [m for m in report.members if any(a.startswith(prefix) for a in m.assignment)]
        if report.partitions:
            found.append(report.model_copy(update={"members": members}))
    return found


async def lag_groups(
    settings: Settings,
    reader: LagReader,
    tracker: LagTracker | None = None,
    group: str | None = None,
) -> list[GroupLag]:
    """What `sonicbus lag [GROUP] --json` prints and GET /api/lag answers.

    Without `group`: sonicbus' groups, rows of this install's topics only, with the
    age of their oldest unread record; with one: every row of that group, as Kafka's
    tool shows it (GroupNotFound when it does not exist). Throughput and ETA come from
    the groups' output topics where they have one (throughput.py), else from `tracker`.
    """
    tracker = tracker or LagTracker(settings.ops.rate_window_s)
    if group:
        reports = [await reader.describe(group)]
    else:
        reports = await our_groups(settings, reader)
        for report in reports:
            await reader.fill_ages(report)
    reports = [tracker.observe(r) for r in reports]
    return apply_rates(reports, await output_rates(settings, reader))


async def last_embedded(settings: Settings, per_partition: int = 200) -> dict[str, datetime]:
    """When each model last embedded a track, from the tail of the `embeddings` topic."""
    topic = settings.topics.embeddings
    consumer = make_consumer(settings.kafka, group_id=None, role="status-embeddings")
    latest: dict[str, datetime] = {}
    try:
        await consumer.start()  # inside: a failed start is stopped too
        count = (await list_topics(settings.kafka)).get(topic, 0)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        if not partitions:
            return {}
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            consumer.seek(tp, max(starts[tp], ends[tp] - per_partition))
        async with asyncio.timeout(10):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        try:
                            event = EmbeddingEvent.from_bytes(record.value)
                        except SchemaError:
                            continue
                        if event.status == "embedded":
                            seen = latest.get(event.model)
                            latest[event.model] = max(seen or event.emitted_at, event.emitted_at)
    finally:
        await consumer.stop()
    return latest


def load_state(settings: Settings, members: int, last: datetime | None) -> str:
    if members == 0:
        return "not running"
    idle = settings.embed.idle_unload_s
    if idle <= 0 or last is None:
        return "loaded"
    age = (datetime.now(UTC) - last).total_seconds()
    return "loaded" if age < idle else "unloaded (idle)"


def describe_collections(settings: Settings, store: VectorStore, models: list[str]) -> tuple[
    list[CollectionInfo], dict[str, tuple[str, str, str]]
]:  # fmt: skip
    """(collections with rows and role, model -> (active, target, replay summary)); blocking."""
    roles: dict[str, str] = {store.state_collection: "state"}
    states = {}
    for model in models:
        state = store.model_state(model, fresh=True)
        replay = state.replay
        summary = f"{replay.id} {replay.status}" if replay else ""
        states[model] = (state.active, state.target, summary)
        roles[state.active] = f"active: {model}"
        if state.target != state.active:
            roles[state.target] = f"replay target: {model}"
    prefix = settings.milvus.collection_prefix
    infos = [
        CollectionInfo(name=name, rows=store.count(name), role=roles.get(name, ""))
        for name in store.list_collections()
        if name.startswith(prefix)
    ]
    return infos, states


async def collect_status(settings: Settings, store: VectorStore | None = None) -> StatusReport:
    """Everything `sonicbus status` shows; services that do not answer are reported, not raised."""
    kafka = await infra.kafka_status(settings)
    milvus = await asyncio.to_thread(infra.milvus_status, settings, store)
    report = StatusReport(
        services=[
            ServiceState(name=s.name, reachable=s.reachable, address=s.address, detail=s.detail)
            for s in (kafka, milvus)
        ]
    )
    from models.registry import available_models

    prefix = settings.milvus.collection_prefix
    stored = [m for m in available_models() if f"{prefix}{m}".replace("-", "_") in milvus.items]
    models = list(dict.fromkeys([*settings.embed.models, *stored]))
    members: dict[str, int] = {}
    if kafka.reachable:
        async with LagReader(settings.kafka) as reader:
            groups = {g.group: g for g in await lag_groups(settings, reader)}
        report.groups = list(groups.values())
        report.missing_groups = [g for g in watched_groups(settings) if g not in groups]
        members = {g: len(r.members) for g, r in groups.items()}
        letters = await read_dead_letters(settings.kafka, settings.topics)
        report.dead_letters = len(letters)
        report.dead_letters_by = summarise(letters)
        last = await last_embedded(settings)
    else:
        last = {}
    states: dict[str, tuple[str, str, str]] = {}
    if milvus.reachable:
        own = store is None
        store = store or vector_store(settings)
        try:
            report.collections, states = await asyncio.to_thread(
                describe_collections, settings, store, models
            )
        finally:
            if own:
                store.close()
    report.models = [model_info(settings, m, states.get(m), members, last) for m in models]
    return report


def model_info(
    settings: Settings,
    model: str,
    state: tuple[str, str, str] | None,
    members: dict[str, int],
    last: dict[str, datetime],
) -> ModelInfo:
    """One model's line: collections (from `describe_collections`), embedders, load state."""
    active, target, replay = state or ("?", "?", "")
    running = members.get(embed_group(settings, model), 0)
    return ModelInfo(
        model=model,
        active_collection=active,
        target_collection=target,
        replay=replay,
        embedders=running,
        load_state=load_state(settings, running, last.get(model)),
        last_embedded_at=last.get(model),
    )
