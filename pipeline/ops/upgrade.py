"""Upgrades without a manual step: when a model writes other vectors, the library is re-embedded.

A release may change what a model stores: its dimension (MusiCNN's second head
takes it from 600 to 1200), its `model_version` (weights, preprocessing, a
layer mix) or the fields kept beside every vector (`COLLECTION_FIELDS`, which
later releases grow). Milvus fixes a collection's dimension and fields, and
vectors of two versions in one collection would be compared as if alike, so
the new version cannot write into the collection the old one filled.

So before an embedder joins its consumer group, `bring_up_to_date` compares
what its model writes (`ModelLayout`) with what the model's active collection
holds (`StoredLayout`: its dimension and fields, and the versions of its
rows). When they differ it starts the replay `sonicbus reembed --fresh`
starts (`pipeline.ops.replay.start_replay`): a new collection fills while
queries keep using the old one, and the watcher that runs beside every
embedder (and in `sonicbus serve`, `pipeline.ops.progress.watch_replays`)
makes it the active one once the group has caught up. A release that changes
what is stored needs nothing more than its new `dim`, `model_version` or field.

Several embedders of one model may start at once (a scaled deployment): only
one starts the replay, the others see it under way and join it. The one that
starts it holds `UpgradeLock` (a Kafka consumer group with one partition to
hand out); the others wait for it and then find the replay running.

Kafka moves a group's offsets only while the group has no member, and the
replay must be started before this process joins: during a rolling upgrade
the members of the previous version are still consuming, so the embedder
waits, saying so, until they have left (they keep filling the old collection,
which keeps serving meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from aiokafka import ConsumerRebalanceListener, TopicPartition
from pydantic import BaseModel, Field

from models.base import EmbeddingModel
from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.ops.lag import LagReader
from pipeline.ops.offsets import describe_or_none
from pipeline.ops.replay import (
    NothingToReplay,
    ReplayConflict,
    now_utc,
    start_replay,
    store_call,
    supersede_replay,
)
from pipeline.store import ModelState, Replay, VectorStore
from pipeline.store.vectors import COLLECTION_FIELDS
from pipeline.topics import embed_group

log = logging.getLogger(__name__)

# What `bring_up_to_date` did: nothing to do, started the re-embed, joined one under way,
# or was stopped while waiting.
Outcome = Literal["current", "started", "joined", "stopped"]

# How often a waiting embedder looks at the group again, and reminds the log it still waits.
POLL_S = 2.0
REMIND_S = 300.0
# Under the lock the group was just seen empty: a short wait covers a member leaving late.
LOCKED_WAIT_S = 15.0


class ModelLayout(BaseModel):
    """What a model writes into its collection."""

    model: str
    dim: int
    model_version: str
    fields: frozenset[str] = Field(default=COLLECTION_FIELDS)

    @classmethod
    def of(cls, model: EmbeddingModel) -> ModelLayout:
        """Read from the model object itself, so a release changes nothing here."""
        return cls(model=model.name, dim=model.dim, model_version=model.model_version)


class StoredLayout(BaseModel):
    """What one collection holds, as far as it differs from a `ModelLayout`."""

    collection: str
    exists: bool
    dim: int | None = None
    other_versions: list[str] = Field(
        default_factory=list, description="Versions of stored rows the model did not write."
    )
    missing_fields: list[str] = Field(default_factory=list)

    @classmethod
    def read(cls, store: VectorStore, collection: str, wanted: ModelLayout) -> StoredLayout:
        """Blocking: the collection's dimension, fields and foreign row versions."""
        if not store.has_collection(collection):
            return cls(collection=collection, exists=False)
        fields = store.field_names(collection)
        return cls(
            collection=collection,
            exists=True,
            dim=store.dimension(collection),
            other_versions=sorted(store.versions_other_than(collection, wanted.model_version)),
            missing_fields=sorted(wanted.fields - fields),
        )

    def fits(self, wanted: ModelLayout) -> bool:
        """The model can write here and its vectors compare with what is stored."""
        if not self.exists:
            return True
        return self.dim == wanted.dim and not self.other_versions and not self.missing_fields

    def change(self, wanted: ModelLayout) -> str:
        """`stored vectors are 600-d from A, this version writes 1200-d B` (for the log)."""
        stored = f"stored vectors are {self.dim}-d"
        if self.other_versions:
            stored += f" from {', '.join(self.other_versions)}"
        if self.missing_fields:
            stored += f" without the field(s) {', '.join(self.missing_fields)}"
        return f"{stored}, this version writes {wanted.dim}-d {wanted.model_version}"


@dataclass(frozen=True)
class Inspection:
    """The model's state against its layout; `outcome` is None when a replay must start."""

    state: ModelState
    active: StoredLayout
    replay: Replay | None  # running or cancelled
    outcome: Outcome | None


async def inspect(store: VectorStore, wanted: ModelLayout) -> Inspection:
    """Whether the model's collections fit what it writes (state read fresh, not cached)."""
    state = await store_call(store.model_state, wanted.model, True)
    active = await store_call(StoredLayout.read, store, state.active, wanted)
    replay = state.replay
    if replay is not None and replay.status not in ("running", "cancelled"):
        replay = None
    if replay is None:
        return Inspection(state, active, None, "current" if active.fits(wanted) else None)
    target = active
    if replay.collection != state.active:
        target = await store_call(StoredLayout.read, store, replay.collection, wanted)
    if not target.fits(wanted) or not (replay.fresh or active.fits(wanted)):
        return Inspection(state, active, replay, None)  # it writes what this version cannot
    return Inspection(state, active, replay, "current" if active.fits(wanted) else "joined")


async def bring_up_to_date(
    settings: Settings, store: VectorStore, model: EmbeddingModel, stop: asyncio.Event
) -> Outcome:
    """Start (or join) the re-embed a change of what `model` writes needs; call it before
    joining the model's group (see the module docstring)."""
    wanted = ModelLayout.of(model)
    group, topic = embed_group(settings, wanted.model), settings.topics.tracks
    reminded_at: float | None = None
    async with LagReader(settings.kafka) as reader:
        while not stop.is_set():
            seen = await inspect(store, wanted)
            if seen.outcome is not None:
                return _joined(seen, wanted) if seen.outcome == "joined" else seen.outcome
            report = await describe_or_none(reader, group, topic)
            if report is not None and report.active:
                now = time.monotonic()
                if reminded_at is None or now - reminded_at >= REMIND_S:
                    _log_waiting(seen, wanted, report, again=reminded_at is not None)
                    reminded_at = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_S)
                continue
            async with UpgradeLock(settings, wanted.model).held(stop) as held:
                if not held:
                    break
                seen = await inspect(store, wanted)  # another process may have started it
                if seen.outcome is not None:
                    return _joined(seen, wanted) if seen.outcome == "joined" else seen.outcome
                try:
                    await _start(settings, store, seen, wanted)
                except ReplayConflict as exc:  # a member joined meanwhile: look again
                    log.info("%s: the re-embed did not start yet (%s)", wanted.model, exc)
                    continue
                return "started"
    return "stopped"


async def _start(
    settings: Settings, store: VectorStore, seen: Inspection, wanted: ModelLayout
) -> None:
    name, old = wanted.model, seen.state.active
    change = "" if seen.active.fits(wanted) else seen.active.change(wanted)
    if seen.replay is not None:
        await supersede_replay(
            store, name, f"superseded: its collection cannot take {wanted.model_version}"
        )
        if not change:  # only the replay's own collection was of another layout
            change = f"a replay writes what {wanted.model_version} cannot"
    try:
        replay = await start_replay(
            settings, store, name, fresh=True, wait_s=LOCKED_WAIT_S, reason=change
        )
    except NothingToReplay:
        if seen.active.fits(wanted):  # only a replay was wrong: it is gone, nothing else to do
            return
        # No track to re-embed: the new vectors start a collection of their own.
        new = f"{store.collection_name(name)}_{now_utc():%Y%m%d%H%M%S}"
        await store_call(store.set_collections, name, new, new)
        log.warning(
            "%s: %s; the library (%s) is empty, so new vectors go to %s (%s is kept)",
            name, change, settings.topics.tracks, new, old,
        )  # fmt: skip
        return
    log.warning(
        "%s: %s; re-embedding the library into %s (%d tracks); queries keep using %s until "
        "it is caught up",
        name, change, replay.collection, replay.total, old,
    )  # fmt: skip


def _joined(seen: Inspection, wanted: ModelLayout) -> Outcome:
    replay = seen.replay
    assert replay is not None
    log.info(
        "%s: %s; re-embedding into %s is under way (replay %s, started %s UTC): joining it; "
        "queries keep using %s until it is caught up",
        wanted.model, seen.active.change(wanted), replay.collection, replay.id,
        f"{replay.started_at:%Y-%m-%d %H:%M:%S}", seen.state.active,
    )  # fmt: skip
    return "joined"


def _log_waiting(seen: Inspection, wanted: ModelLayout, report, again: bool) -> None:  # type: ignore[no-untyped-def]
    clients = ", ".join(sorted({f"{m.client_id}@{m.host}" for m in report.members}))
    fits = seen.active.fits(wanted)
    change = "a replay writes another layout" if fits else seen.active.change(wanted)
    log.warning(
        "%s: %s; %swaiting for the %d member(s) of %s (%s) to leave before re-embedding: "
        "Kafka moves a group's offsets only while it is empty. Embedders of the previous "
        "version? Stop them; %s keeps serving meanwhile",
        wanted.model, change, "still " if again else "", len(report.members), report.group,
        clients, seen.state.active,
    )  # fmt: skip


class UpgradeLock:
    """One process at a time, across machines, may start a model's upgrade.

    Holding it is holding partition 0 of `tracks` in the group
    `<embed group>.upgrade` (paused: nothing is read, nothing committed).
    Kafka's coordinator gives a partition to one member of a group; a holder
    lets it go only after its critical section (the rebalance listener waits
    for it), and a holder that dies loses it after the session timeout.
    """

    def __init__(self, settings: Settings, model: str) -> None:
        self.partition = TopicPartition(settings.topics.tracks, 0)
        self.group = f"{embed_group(settings, model)}.upgrade"
        self.busy = asyncio.Lock()
        self.consumer = make_consumer(
            settings.kafka,
            group_id=self.group,
            role=f"upgrade-{model}",
            # A rebalance waits for the holder's critical section (start_replay): seconds.
            rebalance_timeout_ms=120_000,
        )

    @contextlib.asynccontextmanager
    async def held(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """Yields True while held, False if `stop` was set first."""
        self.consumer.subscribe([self.partition.topic], listener=_HoldUntilDone(self))
        await self.consumer.start()
        try:
            held = False
            while not stop.is_set():
                await self.consumer.getmany(timeout_ms=200)  # keeps the membership alive
                await self.busy.acquire()
                if self.partition in self.consumer.assignment():
                    held = True
                    break
                self.busy.release()
            try:
                yield held
            finally:
                if held:
                    self.busy.release()
        finally:
            await self.consumer.stop()


class _HoldUntilDone(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, lock: UpgradeLock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock.busy:  # the holder finishes first; then it may move
            pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.lock.consumer.pause(*assigned)  # a lock, not a reader
