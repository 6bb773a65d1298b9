"""Progress of a replay, its completion (the switch to a fresh collection), and the watcher.

Progress comes from the group's offsets: processed = how far each partition's
read position moved from the replay start toward the log end at the start
(later records are live traffic, not part of `total`). The replay is done when
the group has nothing pending; `finish_replay` then makes a fresh collection
the active one (the old one is kept unless `drop_old`). Whoever looks at
progress (the reembed command, `--status`, `sonicbus serve`) finishes it, so
no process has to stay up for the switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pydantic import BaseModel, Field, computed_field

from pipeline.config import Settings
from pipeline.ops.dlq import DlqFilter, dlq_partitions, read_dead_letters
from pipeline.ops.lag import LagReader, eta
from pipeline.ops.offsets import describe_or_none
from pipeline.ops.replay import (
    NoReplay,
    check_model,
    current,
    lag_reader,
    now_utc,
    positions_on,
    save_state,
    store_call,
)
from pipeline.store import Replay, VectorStore

log = logging.getLogger(__name__)


class ReplayProgress(BaseModel):
    replay: Replay
    processed: int
    total: int
    pending: int = Field(description="Records the group still has to read (replay + live).")
    failures: int = Field(description="Dead letters of the group since the replay started.")
    rate: float | None = Field(None, description="Tracks/s.")
    eta_s: float | None = None
    active_collection: str
    members: int
    rows: int | None = Field(None, description="Rows in the collection the replay writes.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float:
        return round(100.0 * self.processed / self.total, 1) if self.total else 100.0

    @property
    def caught_up(self) -> bool:
        return self.pending == 0 and self.processed >= self.total


def _members_on(report, topic: str) -> int:  # type: ignore[no-untyped-def]
    """Members holding partitions of `topic` (the group name may be shared by installs)."""
    if report is None:
        return 0
    return sum(1 for m in report.members if any(a.startswith(f"{topic}:") for a in m.assignment))


class ReplayRate:
    """Rate and ETA of one replay from successive looks at its progress.

    Progress moves in steps (a batch commits at once), so the rate is the
    least-squares slope through the steps seen so far (time of each step,
    tracks done), from the first step on: start-up time (model load) is left
    out, and no single late look skews it as a "first and last" ratio would.
    The time since the latest step is taken off the ETA. It also remembers
    the dead-letter count, re-read only when the dlq grew.
    """

    def __init__(self) -> None:
        self._steps: list[tuple[float, int]] = []
        self._last: tuple[float, int] | None = None
        self.dlq_end: int | None = None
        self.failures = 0

    def observe(self, processed: int, now: float | None = None) -> tuple[float | None, float]:
        """(tracks/s or None, seconds since progress last moved)."""
        now = time.monotonic() if now is None else now
        if self._last is None or processed < self._last[1]:  # first look, or a new replay
            self._steps, self._last = [], (now, processed)
            return None, 0.0
        if processed > self._last[1]:
            self._last = (now, processed)
            self._steps.append(self._last)
        if len(self._steps) < 2:
            return None, 0.0
        return _slope(self._steps), now - self._last[0]


def _slope(points: list[tuple[float, int]]) -> float | None:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_p = sum(p for _, p in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread <= 0:
        return None
    slope = sum((t - mean_t) * (p - mean_p) for t, p in points) / spread
    return slope if slope > 0 else None


async def _failures(settings: Settings, replay: Replay, reader: LagReader,
                    rate: ReplayRate | None) -> int:  # fmt: skip
    """Dead letters of the replay's group since it started (re-read only when the dlq grew)."""
    partitions = await dlq_partitions(settings.kafka, settings.topics)
    _, ends = await reader.log_bounds(partitions)
    end = sum(ends.values())
    if rate is not None and rate.dlq_end == end:
        return rate.failures
    letters = await read_dead_letters(
        settings.kafka, settings.topics, DlqFilter(group=replay.group, since=replay.started_at)
    )
    failures = sum(1 for r in letters if r.letter.source_topic == replay.topic)
    if rate is not None:
        rate.dlq_end, rate.failures = end, failures
    return failures


async def replay_progress(
    settings: Settings,
    store: VectorStore,
    model: str,
    reader: LagReader,
    rate: ReplayRate | None = None,
) -> ReplayProgress:
    """Where the model's latest replay stands (raises NoReplay when there never was one)."""
    check_model(model)
    state, replay = await current(store, model)
    if replay is None:
        raise NoReplay(f"no replay of {model} was ever started")
    report = await describe_or_none(reader, replay.group, replay.topic)
    positions = positions_on(report, replay.topic)
    processed = 0
    for p, end in replay.end.items():
        start = replay.start.get(p, 0)
        processed += min(max(positions.get(p, start) - start, 0), max(end - start, 0))
    pending = report.pending_on(replay.topic) if report else replay.total
    if replay.status in ("completed", "discarded"):
        processed = replay.total if replay.status == "completed" else processed
    failures = await _failures(settings, replay, reader, rate)
    speed, idle = rate.observe(processed) if rate is not None else (None, 0.0)
    if rate is None and replay.status == "running" and processed:
        elapsed = (now_utc() - replay.started_at).total_seconds()  # one look: average since start
        speed = processed / elapsed if elapsed > 0 else None
    remaining = eta(pending, speed) if replay.status == "running" else None
    rows = None
    if await store_call(store.has_collection, replay.collection):
        rows = await store_call(store.count, replay.collection)
    return ReplayProgress(
        replay=replay,
        processed=processed,
        total=replay.total,
        pending=pending,
        failures=failures,
        rate=round(speed, 3) if speed else None,
        eta_s=round(max(0.0, remaining - idle), 1) if remaining is not None else None,
        active_collection=state.active,
        members=_members_on(report, replay.topic),
        rows=rows,
    )


async def finish_replay(store: VectorStore, progress: ReplayProgress) -> Replay | None:
    """Complete a caught-up running replay: a fresh collection becomes the active one."""
    replay = progress.replay
    if replay.status != "running" or not progress.caught_up:
        return None
    state, latest = await current(store, replay.model)
    if latest is None or latest.id != replay.id or latest.status != "running":
        return None  # finished, cancelled or replaced meanwhile
    replay.status, replay.finished_at = "completed", now_utc()
    if not replay.fresh:
        await save_state(store, state, replay)
    elif not await store_call(store.has_collection, replay.collection):
        replay.note = "nothing was embedded; the active collection stays"
        await save_state(store, state, replay, target=state.active)
    else:
        previous = replay.previous_collection
        existed = previous != replay.collection and await store_call(store.has_collection, previous)
        drop = replay.drop_old and existed
        replay.note = f"{'dropped' if drop else 'kept'} {previous}" if existed else ""
        await save_state(store, state, replay, target=replay.collection, active=replay.collection)
        if drop:
            await store_call(store.drop_collection, previous)
    log.info("replay %s of %s completed (%s)", replay.id, replay.model, replay.note or "in place")
    if replay.reason and replay.fresh:  # an upgrade (pipeline.ops.upgrade): say it is over
        log.warning(
            "%s: the re-embed caught up; queries now use %s (%s)",
            replay.model, replay.collection, replay.note or "nothing else changed",
        )  # fmt: skip
    return replay


async def watch_replays(
    settings: Settings, store: VectorStore, models: list[str], stop: asyncio.Event
) -> None:
    """Finish caught-up replays of `models` until `stop` (run by `sonicbus serve` and beside
    every embedder, `pipeline.mainjob.embedder_component`)."""
    while not stop.is_set():
        try:
            async with lag_reader(settings) as reader:
                while not stop.is_set():
                    for model in models:
                        await _check(settings, store, model, reader)
                    await _pause(stop, settings.ops.replay_check_s)
        except Exception:  # a watcher must outlive a broker that was not up yet
            log.exception("the replay watcher cannot reach Kafka; trying again")
            await _pause(stop, settings.ops.replay_check_s)


async def _check(settings: Settings, store: VectorStore, model: str, reader: LagReader) -> None:
    try:
        _, replay = await current(store, model)
        if replay and replay.status == "running":
            progress = await replay_progress(settings, store, model, reader)
            await finish_replay(store, progress)
    except Exception:  # a watcher must outlive a busy Milvus or broker
        log.exception("checking the replay of %s failed", model)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
