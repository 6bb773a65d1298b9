"""The dashboard's one picture of the pipeline: GET /api/overview and its live stream.

Everything an operator watches, in one JSON document built from the same code as
the command line (`lag`, `status`, `reembed --status`, `dlq list`), so the page and
the terminal agree. Every part is built on its own: a broker that is down or a
Milvus that does not answer leaves its part present, `ok: false` with the reason,
and the figures it feeds null; the other parts still come. The next build tries
again, so a page that polls or streams recovers by itself.

One `OverviewBuilder` per HTTP service: it caches the last overview for a moment
(every open page shares one build) and keeps what is costly to re-read: the
count of live tracks in the compacted `tracks` topic (followed incrementally)
and the dead letters (re-read only when the dlq grew). It opens its own Kafka
reader per build: the runtime's reader is busy with its own sampling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Literal, Protocol

from aiokafka import TopicPartition
from pydantic import BaseModel, Field

from pipeline import infra
from pipeline.config import Settings
from pipeline.ops.dlq import DeadLetterRecord, dlq_partitions, read_dead_letters
from pipeline.ops.lag import GroupLag, LagReader, LagTracker
from pipeline.ops.pause import PauseState, pause_state
from pipeline.ops.progress import ReplayProgress, ReplayRate, replay_progress
from pipeline.ops.replay import ReplayUnavailable, current
from pipeline.ops.status import lag_groups, load_state, watched_groups
from pipeline.store import VectorStore
from pipeline.topics import embed_group, list_topics

log = logging.getLogger(__name__)

PART_TIMEOUT_S = 15.0
LATEST_LETTERS = 5


class Part(BaseModel):
    ok: bool
    detail: str = ""


class ServiceLine(BaseModel):
    name: str
    state: Literal["running", "restarting", "stopped", "unknown"]
    detail: str = ""


class Backlog(BaseModel):
    """A model's embedding backlog: rows in the collection it writes, of the tracks known."""

    model: str
    done: int
    total: int | None = Field(description="Tracks known; None until they could be counted.")
    percent: float | None
    rate_per_s: float | None = Field(None, description="Tracks/s (from the embeddings topic).")
    eta_s: float | None = None


class CollectionLine(BaseModel):
    model: str = Field(description="The model whose collection it is ('' for the state one).")
    collection: str
    rows: int | None = None
    dim: int | None = None
    role: str = Field("", description="active | replay target | state | '' (an old one).")


class ModelLine(BaseModel):
    name: str
    state: Literal["loaded", "loading", "not loaded", "failed"]
    detail: str = ""


class DeadLetterLine(BaseModel):
    stage: str
    track_id: str | None = Field(None, description="Key of the record: a track or request id.")
    error: str
    at: datetime
    topic: str | None = Field(None, description="Where the record failed.")
    partition: int | None = None
    offset: int | None = None
    dlq_offset: int = Field(description="Its offset in the dlq topic (what `dlq show` takes).")


class DeadLetters(BaseModel):
    total: int = 0
    by_stage: dict[str, int] = Field(default_factory=dict)
    latest: list[DeadLetterLine] = Field(default_factory=list, description="Newest first.")
    ok: bool = True
    detail: str = ""


class Overview(BaseModel):
    at: datetime
    bus: Part
    milvus: Part
    services: list[ServiceLine] = Field(default_factory=list)
    groups: list[GroupLag] = Field(default_factory=list)
    backlog: list[Backlog] = Field(default_factory=list)
    collections: list[CollectionLine] = Field(default_factory=list)
    models: list[ModelLine] = Field(default_factory=list)
    dead_letters: DeadLetters = Field(default_factory=DeadLetters)
    replays: list[ReplayProgress] = Field(default_factory=list)
    embedding: PauseState = Field(description="What GET /api/embedding answers.")


class ComponentView(Protocol):
    """What the dashboard reads of a supervised component (pipeline.supervisor)."""

    state: str
    restarts: int
    last_error: str


Components = Callable[[], Mapping[str, ComponentView]]


def dead_letter_lines(records: list[DeadLetterRecord], limit: int) -> DeadLetters:
    """Totals by stage and the newest `limit` letters, newest first."""
    latest = []
    for record in reversed(records[-limit:] if limit else []):
        letter = record.letter
        latest.append(
            DeadLetterLine(
                stage=letter.stage,
                track_id=letter.key,
                error=f"{letter.error_class}: {letter.message}"[:500],
                at=letter.failed_at,
                topic=letter.source_topic,
                partition=letter.source_partition,
                offset=letter.source_offset,
                dlq_offset=record.offset,
            )
        )
    by_stage = dict(sorted(Counter(r.letter.stage for r in records).items()))
    return DeadLetters(total=len(records), by_stage=by_stage, latest=latest)


class TrackCount:
    """Live tracks in the compacted `tracks` topic, read on from where the last look ended."""

    def __init__(self) -> None:
        self.live: set[bytes] = set()
        self.positions: dict[TopicPartition, int] = {}

    async def update(self, reader: LagReader, topic: str, partitions: int) -> int:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        starts, ends = await reader.log_bounds(tps)
        if any(ends[tp] < self.positions.get(tp, 0) for tp in tps):  # topic re-created
            self.live.clear()
            self.positions.clear()
        todo = {tp: max(self.positions.get(tp, 0), starts[tp]) for tp in tps}
        todo = {tp: at for tp, at in todo.items() if at < ends[tp]}
        consumer = reader.reader
        if todo and consumer is not None:
            consumer.assign(list(todo))
            for tp, at in todo.items():
                consumer.seek(tp, at)
            try:
                while [tp for tp in todo if await consumer.position(tp) < ends[tp]]:
                    for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                        for record in records:
                            if record.offset >= ends[tp] or record.key is None:
                                continue
                            if record.value is None:
                                self.live.discard(record.key)
                            else:
                                self.live.add(record.key)
            finally:
                for tp in todo:
                    self.positions[tp] = min(await consumer.position(tp), ends[tp])
                consumer.assign([])
        return len(self.live)


class OverviewBuilder:
    """Builds overviews (see the module docstring); `current()` shares one among callers."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        rates: dict[str, ReplayRate] | None = None,
        last_embedded: Callable[[], Mapping[str, datetime]] | None = None,
        components: Components | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rates = rates if rates is not None else {}
        self.last_embedded = last_embedded or dict
        self.components = components
        self.tracker = LagTracker(settings.ops.rate_window_s)
        self.tracks = TrackCount()
        self.known_tracks: int | None = None
        self._letters: tuple[int, list[DeadLetterRecord]] | None = None
        self._cached: tuple[float, Overview] | None = None
        self._lock = asyncio.Lock()

    async def current(self, max_age_s: float = 1.0) -> Overview:
        """The latest overview, built anew when older than `max_age_s`."""
        async with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > max_age_s:
                self._cached = (time.monotonic(), await self.build())
            return self._cached[1]

    async def build(self) -> Overview:
        settings, models = self.settings, self.settings.embed.models
        kafka = await infra.kafka_status(settings)
        overview = Overview(
            at=datetime.now(UTC),
            embedding=PauseState(paused=False, threads=settings.embed.threads),
            bus=Part(ok=kafka.reachable, detail=f"{kafka.address}: {kafka.detail}"),
            milvus=await self._milvus(),
        )
        known = self.known_tracks  # the last count, while the bus cannot give a new one
        if kafka.reachable:
            try:
                async with asyncio.timeout(PART_TIMEOUT_S), LagReader(settings.kafka) as reader:
                    overview.groups = await lag_groups(settings, reader, self.tracker)
                    counted = await self._known_tracks(reader, kafka.items)
                    known = counted if counted is not None else known
                    if overview.milvus.ok:
                        overview.replays = await self._replays(reader)
            except Exception as exc:  # the parts it feeds stay empty; the bus part says why
                overview.bus = Part(ok=False, detail=f"{type(exc).__name__}: {exc}")
            overview.dead_letters = await self._dead_letters()
        else:
            overview.dead_letters = DeadLetters(ok=False, detail="the bus is not reachable")
        states: dict[str, tuple[str, str]] = {}
        if overview.milvus.ok:
            try:
                overview.collections, states = await asyncio.to_thread(self._collections)
            except Exception as exc:
                overview.milvus = Part(ok=False, detail=f"{type(exc).__name__}: {exc}")
        if overview.milvus.ok:  # rows unknown: no backlog rather than a wrong 0 %
            rates = {g.group: g.throughput for g in overview.groups}
            overview.backlog = self._backlog(overview.collections, states, known, rates)
        members = {g.group: len(g.members) for g in overview.groups}
        overview.services = self._services(members, kafka.reachable)
        overview.models = [self._model(m, members, kafka.reachable) for m in models]
        overview.embedding = await self._embedding(overview.bus.ok)
        return overview

    async def _known_tracks(self, reader: LagReader, topics: Mapping[str, int]) -> int | None:
        """Live tracks; None while a first read of a big `tracks` topic is still under way
        (what was read is kept: the next build goes on from there)."""
        tracks = self.settings.topics.tracks
        try:
            async with asyncio.timeout(PART_TIMEOUT_S / 3):
                self.known_tracks = await self.tracks.update(reader, tracks, topics.get(tracks, 0))
                return self.known_tracks
        except TimeoutError:
            log.info("counting the tracks of %s: %d so far", tracks, len(self.tracks.live))
            return None

    async def _milvus(self) -> Part:
        try:
            names = await asyncio.wait_for(asyncio.to_thread(self.store.ping), PART_TIMEOUT_S)
        except Exception as exc:
            return Part(ok=False, detail=f"{self.store.uri}: {type(exc).__name__}: {exc}")
        kind = "Milvus Lite" if self.store.is_lite else "Milvus server"
        return Part(ok=True, detail=f"{kind} at {self.store.uri}, {len(names)} collections")

    def _collections(self) -> tuple[list[CollectionLine], dict[str, tuple[str, str]]]:
        """Blocking: the collections of this install, and model -> (active, target)."""
        store, prefix = self.store, self.settings.milvus.collection_prefix
        owner: dict[str, tuple[str, str]] = {store.state_collection: ("", "state")}
        states = {}
        for model in self.settings.embed.models:
            state = store.model_state(model, fresh=True)
            states[model] = (state.active, state.target)
            owner.setdefault(state.target, (model, "replay target"))
            owner[state.active] = (model, "active")
            owner.setdefault(store.collection_name(model), (model, ""))
        lines = []
        for name in store.list_collections():
            if not name.startswith(prefix):
                continue
            model, role = owner.get(name, (_model_of(name, prefix), ""))
            is_state = role == "state"
            lines.append(CollectionLine(
                model=model, collection=name, rows=store.count(name), role=role,
                dim=None if is_state else store.dimension(name),
            ))  # fmt: skip
        return lines, states

    def _backlog(
        self,
        collections: list[CollectionLine],
        states: dict[str, tuple[str, str]],
        known: int | None,
        rates: dict[str, float | None],
    ) -> list[Backlog]:
        rows = {c.collection: c.rows for c in collections}
        out = []
        for model in self.settings.embed.models:
            target = states.get(model, ("", ""))[1]
            done = rows.get(target) or 0
            rate = rates.get(embed_group(self.settings, model))
            if known is None:
                out.append(Backlog(model=model, done=done, total=None, percent=None,
                                   rate_per_s=rate))  # fmt: skip
                continue
            left = max(0, known - done)
            out.append(Backlog(
                model=model, done=done, total=known,
                percent=round(min(100.0, 100.0 * done / known), 1) if known else 100.0,
                rate_per_s=rate,
                eta_s=0.0 if not left else round(left / rate, 1) if rate else None,
            ))  # fmt: skip
        return out

    async def _replays(self, reader: LagReader) -> list[ReplayProgress]:
        """The latest replay of each model that had one (none when Milvus fails meanwhile)."""
        found = []
        try:
            for model in self.settings.embed.models:
                _, replay = await current(self.store, model)
                if replay is not None:
                    rate = self.rates.setdefault(model, ReplayRate())
                    found.append(
                        await replay_progress(self.settings, self.store, model, reader, rate)
                    )
        except ReplayUnavailable as exc:
            log.warning("replay progress for the dashboard: %s", exc)
        return found

    async def _dead_letters(self) -> DeadLetters:
        try:
            records = await self.read_letters()
        except Exception as exc:
            return DeadLetters(ok=False, detail=f"{type(exc).__name__}: {exc}")
        return dead_letter_lines(records, LATEST_LETTERS)

    async def read_letters(self) -> list[DeadLetterRecord]:
        """Every dead letter in the topic, oldest first; re-read only when the topic moved."""
        kafka, topics = self.settings.kafka, self.settings.topics
        if topics.dlq not in await list_topics(kafka):
            return []
        async with LagReader(kafka) as reader:
            starts, ends = await reader.log_bounds(await dlq_partitions(kafka, topics))
        mark = hash((tuple(sorted(starts.values())), tuple(sorted(ends.values()))))
        if self._letters is None or self._letters[0] != mark:
            self._letters = (mark, await read_dead_letters(kafka, topics))
        return self._letters[1]

    def _services(self, members: dict[str, int], bus_ok: bool) -> list[ServiceLine]:
        if self.components is not None:
            return [_service_line(name, c) for name, c in self.components().items()]
        prefix = self.settings.topics.group_prefix
        lines = [ServiceLine(name="http", state="running", detail="this service")]
        for group in watched_groups(self.settings):
            name = group.removeprefix(prefix)
            if not bus_ok:
                lines.append(ServiceLine(name=name, state="unknown", detail="the bus is down"))
                continue
            count = members.get(group, 0)
            lines.append(ServiceLine(
                name=name, state="running" if count else "stopped",
                detail=f"{count} member(s) in group {group}",
            ))  # fmt: skip
        return lines

    def _model(self, model: str, members: dict[str, int], bus_ok: bool) -> ModelLine:
        running = members.get(embed_group(self.settings, model), 0)
        component = (self.components() if self.components else {}).get(f"embed-{model}")
        if component is not None and component.state == "restarting":
            return ModelLine(name=model, state="failed", detail=component.last_error)
        if component is not None and component.state == "stopped":
            return ModelLine(name=model, state="not loaded", detail="its embedder stopped")
        if not bus_ok:
            return ModelLine(name=model, state="not loaded", detail="unknown: the bus is down")
        if running == 0:
            if component is not None:  # an embedder loads its model before joining its group
                return ModelLine(name=model, state="loading", detail="embedder starting")
            return ModelLine(name=model, state="not loaded", detail="no embedder running")
        last = self.last_embedded().get(model)
        if load_state(self.settings, running, last) == "loaded":
            return ModelLine(name=model, state="loaded", detail=f"{running} embedder(s)")
        idle = self.settings.embed.idle_unload_s
        return ModelLine(name=model, state="not loaded", detail=f"unloaded after {idle:g} s idle")

    async def _embedding(self, bus_ok: bool) -> PauseState:
        """The pause orders on the bus (none known while it is down)."""
        if bus_ok:
            try:
                async with asyncio.timeout(PART_TIMEOUT_S):
                    return await pause_state(self.settings)
            except Exception as exc:
                log.warning("reading the pause orders for the dashboard: %s", exc)
        return PauseState(paused=False, threads=self.settings.embed.threads)


def _service_line(name: str, component: ComponentView) -> ServiceLine:
    """A supervised component as the dashboard names its states (starting counts as running)."""
    states = {"starting": "running", "running": "running", "restarting": "restarting",
              "stopped": "stopped"}  # fmt: skip
    notes = []
    if component.state == "starting":
        notes.append("starting")
    if component.restarts:
        notes.append(f"{component.restarts} restart(s)")
    if component.state == "restarting" and component.last_error:
        notes.append(component.last_error)
    return ServiceLine(
        name=name,
        state=states.get(component.state, "unknown"),  # type: ignore[arg-type]
        detail=": ".join(notes),
    )


def _model_of(collection: str, prefix: str) -> str:
    """An old fresh-replay collection's model: `<prefix><model>_<UTC time>`."""
    rest = collection.removeprefix(prefix)
    head, _, stamp = rest.rpartition("_")
    return head if stamp.isdigit() and len(stamp) == 14 else rest
