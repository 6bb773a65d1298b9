"""Bulk re-embed = replay of the `tracks` topic by one model's consumer group.

`tracks` is compacted: its latest record per key is the library, so moving the
`embed-<model>` group's offsets back to the start (or to a time) makes the
model's embedders read every track again. `start_replay` checks, in this
order, so that a refused command changes nothing:
1. the model is known, the broker and Milvus answer, no other replay of the
   model is running or cancelled;
2. the group has no active member (Kafka's rule; `wait_s` polls for it);
3. the replay is written to the model's row in the store's state collection:
   with `fresh`, embedders write a new collection `<collection>_<UTC time>`
   while queries keep reading the active one;
4. the group's offsets are committed at the replay start; if that fails the
   state row is put back as it was.

Progress, the switch to a fresh collection and the watcher: see `progress.py`.

Cancel and resume: cancelling marks the replay `cancelled`; embedders read the
mark before every batch (`VectorStore.write_target`) and hold: the batch is
rewound, nothing is embedded or committed, so the committed offsets stay where
the replay stopped. Resuming marks it `running` and the same members go on
from those offsets, so every track is embedded once across a cancel. (Moving
offsets at cancel time would skip tracks, forward, or repeat them, back.)
`discard` ends a cancelled replay for good (members stopped first): offsets
jump to where the replay range ended, never past records published since,
writes go back to the active collection and a fresh one is dropped.

`force`: while the replay runs, embedders skip their "unchanged track" check
(the replay's `force` in the state row), so every track is embedded again.

Upgrades: an embedder whose model writes other vectors than the active
collection holds starts a fresh replay itself (`pipeline.ops.upgrade`, with a
`reason`); `supersede_replay` ends a replay such an upgrade replaces.

The `Replay` record itself lives in `pipeline.store.state`, beside the state
row that holds it, because the embedders read it too; what a replay does is here.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime

from aiokafka import TopicPartition

from pipeline.config import Settings
from pipeline.errors import Conflict, NotFound, SonicbusError, Unavailable
from pipeline.ops.lag import BrokerUnavailable, LagReader
from pipeline.ops.offsets import (
    GroupBusy,
    commit_offsets,
    offsets_since,
    topic_partitions,
    wait_until_idle,
)
from pipeline.store import ModelState, Replay, StoreUnavailable, VectorStore
from pipeline.topics import embed_group

log = logging.getLogger(__name__)


class ReplayError(SonicbusError):
    """A replay command was refused; nothing changed (HTTP 400 unless its kind says more)."""

    http_status = 400


class UnknownModel(NotFound, ReplayError):
    """No model of that name."""


class NoReplay(NotFound, ReplayError):
    """The model has no replay to act on."""


class ReplayConflict(Conflict, ReplayError):
    """Another replay of the model is running or cancelled, or its group has members."""


class ReplayUnavailable(Unavailable, ReplayError):
    """Kafka or Milvus did not answer."""


class NothingToReplay(ReplayError):
    """The replay range holds no record (an empty library, or nothing since `since`)."""


def check_model(model: str) -> None:
    from models.registry import available_models

    if model not in available_models():
        raise UnknownModel(f"unknown model {model!r}; available: {', '.join(available_models())}")


def now_utc() -> datetime:
    return datetime.now(UTC)


async def store_call(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return await asyncio.to_thread(fn, *args)
    except StoreUnavailable as exc:
        raise ReplayUnavailable(str(exc)) from exc


def replay_of(state: ModelState) -> Replay | None:
    """The state's replay, copied: the commands change it before saving it."""
    return state.replay.model_copy(deep=True) if state.replay else None


async def current(store: VectorStore, model: str) -> tuple[ModelState, Replay | None]:
    state = await store_call(store.model_state, model, True)
    return state, replay_of(state)


async def save_state(
    store: VectorStore,
    state: ModelState,
    replay: Replay,
    target: str | None = None,
    active: str | None = None,
) -> None:
    """Write `replay` into the model's state row (collections from `state` unless given)."""
    row = ModelState(state.model, active or state.active, target or state.target, replay)
    await store_call(store.set_model_state, row)


def lag_reader(settings: Settings) -> LagReader:
    return LagReader(settings.kafka)


async def start_replay(
    settings: Settings,
    store: VectorStore,
    model: str,
    *,
    fresh: bool = False,
    force: bool = False,
    since: datetime | None = None,
    drop_old: bool = False,
    wait_s: float | None = None,
    reason: str = "",
) -> Replay:
    """Reset `embed-<model>` to replay `tracks` (see the module docstring for the checks).

    `reason`: why, kept in the replay (an upgrade's, `pipeline.ops.upgrade`)."""
    check_model(model)
    if fresh and since is not None:
        raise ReplayError(
            "--fresh fills a new collection, which needs every track: it replays from the "
            "beginning; drop --since (or drop --fresh to re-embed recent tracks in place)"
        )
    if drop_old and not fresh:
        raise ReplayError("--drop-old only applies to --fresh replays")
    state, old = await current(store, model)
    if old and old.status in ("running", "cancelled"):
        raise ReplayConflict(
            f"a replay of {model} is already {old.status} (id {old.id}, started "
            f"{old.started_at:%Y-%m-%d %H:%M:%S} UTC): see `sonicbus reembed --model {model} "
            f"--status`" + (", then --resume or --discard it" if old.status == "cancelled" else "")
        )
    deadline = time.monotonic() + (wait_s or 0.0)
    while True:
        left = max(0.0, deadline - time.monotonic()) if wait_s is not None else None
        replay, offsets = await _plan(settings, store, state, model, fresh, force, since,
                                      drop_old, left)  # fmt: skip
        replay.reason = reason
        await save_state(store, state, replay, target=replay.collection)
        try:
            await commit_offsets(settings.kafka, replay.group, offsets)
            break
        except Exception as exc:
            await store_call(store.set_model_state, state)  # as it was: nothing changed
            if fresh:
                await store_call(store.drop_collection, replay.collection)
            if not isinstance(exc, GroupBusy):
                raise
            if wait_s is None or time.monotonic() >= deadline:
                raise ReplayConflict(str(exc)) from exc
            await asyncio.sleep(1.0)  # a member joined between the check and the commit
    log.info(
        "replay %s of %s started: %d records into %s",
        replay.id, model, replay.total, replay.collection,
    )  # fmt: skip
    return replay


async def _plan(settings: Settings, store: VectorStore, state: ModelState, model: str,
                fresh: bool, force: bool, since: datetime | None, drop_old: bool,
                wait_s: float | None) -> tuple[Replay, dict[TopicPartition, int]]:  # fmt: skip
    """The replay to record and the offsets to commit, once the group is idle."""
    group, topic = embed_group(settings, model), settings.topics.tracks
    try:
        async with lag_reader(settings) as reader:
            await wait_until_idle(reader, group, wait_s, "a replay reset its offsets", topic=topic)
            partitions = await topic_partitions(reader, topic)
            start = await offsets_since(reader, partitions, since)
            _, end = await reader.log_bounds(partitions)
    except GroupBusy as exc:
        raise ReplayConflict(str(exc)) from exc
    except BrokerUnavailable as exc:
        raise ReplayUnavailable(str(exc)) from exc
    except LookupError as exc:
        raise ReplayError(str(exc)) from exc
    now = now_utc()
    replay = Replay(
        id=uuid.uuid4().hex[:12],
        model=model,
        group=group,
        topic=topic,
        fresh=fresh,
        force=force,
        drop_old=drop_old,
        since=since,
        previous_collection=state.active,
        collection=f"{store.collection_name(model)}_{now:%Y%m%d%H%M%S}" if fresh else state.active,
        start={tp.partition: start[tp] for tp in partitions},
        end={tp.partition: end[tp] for tp in partitions},
        started_at=now,
    )
    if replay.total == 0:
        after = f" after {since:%Y-%m-%d %H:%M:%S}" if since else ""
        raise NothingToReplay(f"nothing to replay: {topic} holds no records{after}")
    return replay, {tp: start[tp] for tp in partitions}


async def cancel_replay(store: VectorStore, model: str) -> Replay:
    """Hold the running replay where it is (embedders commit nothing until resumed)."""
    check_model(model)
    state, replay = await current(store, model)
    if replay is None or replay.status != "running":
        raise _not(model, replay, "running")
    replay.status, replay.cancelled_at = "cancelled", now_utc()
    await save_state(store, state, replay)
    return replay


async def resume_replay(store: VectorStore, model: str) -> Replay:
    """Let a cancelled replay go on from the offsets where it stopped."""
    check_model(model)
    state, replay = await current(store, model)
    if replay is None or replay.status != "cancelled":
        raise _not(model, replay, "cancelled")
    replay.status, replay.cancelled_at = "running", None
    await save_state(store, state, replay)
    return replay


async def discard_replay(
    settings: Settings, store: VectorStore, model: str, wait_s: float | None = None
) -> Replay:
    """End a cancelled replay for good (see the module docstring); members must be stopped."""
    check_model(model)
    state, replay = await current(store, model)
    if replay is None or replay.status != "cancelled":
        raise _not(model, replay, "cancelled")
    try:
        async with lag_reader(settings) as reader:
            report = await wait_until_idle(
                reader, replay.group, wait_s, "a replay be discarded", topic=replay.topic
            )
    except GroupBusy as exc:
        raise ReplayConflict(str(exc)) from exc
    except BrokerUnavailable as exc:
        raise ReplayUnavailable(str(exc)) from exc
    positions = positions_on(report, replay.topic)
    offsets = {
        TopicPartition(replay.topic, p): max(positions.get(p, replay.start.get(p, 0)), end)
        for p, end in replay.end.items()
    }
    await commit_offsets(settings.kafka, replay.group, offsets)
    replay.status, replay.finished_at = "discarded", now_utc()
    await save_state(store, state, replay, target=state.active)
    if replay.fresh and replay.collection != state.active:
        await store_call(store.drop_collection, replay.collection)
    return replay


async def supersede_replay(store: VectorStore, model: str, why: str) -> Replay | None:
    """End the model's running or cancelled replay for good because a new one replaces it.

    For an upgrade (`pipeline.ops.upgrade`) that needs a replay this one cannot
    be (it writes what the new version cannot read). Unlike `discard_replay` the
    offsets stay: the caller resets them next, with the group idle. Writes go back
    to the active collection and a fresh one is dropped. None when there was none.
    """
    state, replay = await current(store, model)
    if replay is None or replay.status not in ("running", "cancelled"):
        return None
    replay.status, replay.finished_at, replay.note = "discarded", now_utc(), why
    await save_state(store, state, replay, target=state.active)
    if replay.fresh and replay.collection != state.active:
        await store_call(store.drop_collection, replay.collection)
    log.warning("replay %s of %s discarded: %s", replay.id, model, why)
    return replay


def _not(model: str, replay: Replay | None, wanted: str) -> ReplayError:
    if replay is None:
        return NoReplay(f"no replay of {model} was ever started")
    return ReplayConflict(f"the replay {replay.id} of {model} is {replay.status}, not {wanted}")


def positions_on(report, topic: str) -> dict[int, int]:  # type: ignore[no-untyped-def]
    if report is None:
        return {}
    return {p.partition: p.position for p in report.partitions if p.topic == topic}
