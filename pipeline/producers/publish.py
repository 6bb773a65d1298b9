"""Writing to the `tracks` topic: batched events, tombstones, dead letters, dry runs.

Both producers (filesystem, Navidrome) publish through `TrackPublisher`, so
keys, batching, the dry-run output and the mass-deletion guard behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from pipeline.config import Settings
from pipeline.deadletters import DeadLetterSink, dead_letter_for
from pipeline.producers.audiofiles import display
from pipeline.schemas import TrackEvent

log = logging.getLogger(__name__)

Echo = Callable[[str], None]


class IngestProblem(Exception):
    """The error class dead letters of the ingest stage carry."""


@dataclass
class ScanReport:
    """What one scan (or one burst of live changes) did."""

    found: int = 0
    published: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    dead_lettered: int = 0
    refused_removals: int = 0
    rematched: int = 0  # old ids re-found under new ones by a secondary key (Navidrome)
    refusal: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    duration_s: float = 0.0

    def finish(self) -> ScanReport:
        self.duration_s = time.monotonic() - self.started
        return self

    @property
    def ok(self) -> bool:
        return self.error is None and self.refusal is None

    def summary(self) -> str:
        text = (
            f"{self.found} found, {self.published} published, {self.unchanged} unchanged, "
            f"{self.moved} moved, {self.removed} removed, {self.dead_lettered} dead letters "
            f"({self.duration_s:.1f} s)"
        )
        if self.refusal:
            text += f"; REFUSED: {self.refusal}"
        if self.error:
            text += f"; ERROR: {self.error}"
        return text


@dataclass(frozen=True)
class DeletionGuard:
    """Refuses to remove many tracks at once: an unmounted disk or a wrong database
    looks exactly like a library that was deleted."""

    max_deletions: int
    max_ratio: float

    def allowed(self, known: int) -> int:
        return max(1, min(self.max_deletions, int(self.max_ratio * known)))

    def refusal(self, removing: int, known: int) -> str | None:
        """None when `removing` of `known` tracks may go; otherwise the reason it may not."""
        limit = self.allowed(known)
        if removing <= limit:
            return None
        return (
            f"{removing} of {known} known tracks would be removed, more than the limit of "
            f"{limit} (max_deletions={self.max_deletions}, max_deletion_ratio={self.max_ratio}); "
            "nothing was removed. Check that the library is mounted and complete, or raise "
            "the limits for this run."
        )


class TrackPublisher:
    """Publishes TrackEvents keyed by track id, tombstones, and ingest dead letters.

    Sends of one batch are issued together and awaited together, which is what
    makes an initial scan of thousands of files fast. With `dry_run` nothing is
    sent: each action is written to `echo` instead.
    """

    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer | None,
        *,
        dry_run: bool = False,
        echo: Echo | None = None,
    ) -> None:
        if producer is None and not dry_run:
            raise ValueError("a producer is needed unless dry_run is set")
        self.producer = producer
        self.topic = settings.topics.tracks
        self.dry_run = dry_run
        self.echo: Echo = echo or print
        self.sink = DeadLetterSink(producer, settings.topics.dlq) if producer else None

    async def publish(self, events: Sequence[TrackEvent]) -> None:
        if not events:
            return
        if self.dry_run or self.producer is None:
            for event in events:
                meta = event.metadata
                self.echo(
                    f"publish {event.track_id} {display(event.path)}"
                    f" | {meta.artist or '?'} - {meta.title or '?'}"
                    + (f" [{event.segment.start_s:.2f}s-]" if event.segment else "")
                )
            return
        futures = [
            await self.producer.send(self.topic, event.to_bytes(), key=event.track_id.encode())
            for event in events
        ]
        await asyncio.gather(*futures)

    async def tombstone(self, removed: Sequence[TrackEvent]) -> None:
        if not removed:
            return
        if self.dry_run or self.producer is None:
            for event in removed:
                self.echo(f"tombstone {event.track_id} {display(event.path)}")
            return
        futures = [
            await self.producer.send(self.topic, None, key=event.track_id.encode())
            for event in removed
        ]
        await asyncio.gather(*futures)

    async def dead_letter(self, key: str, message: str) -> None:
        """One ingest failure: a log line always, a `dlq` record unless dry-running."""
        key = display(key)
        if self.dry_run or self.sink is None:
            self.echo(f"dead letter {key}: {message}")
            return
        letter = dead_letter_for(stage="ingest", error=IngestProblem(message), key=key)
        try:
            await self.sink.send(letter)
        except Exception:
            log.exception("could not write the dead letter for %s (%s)", key, message)


@contextlib.contextmanager
def progress_bar(total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A terminal progress bar for a scan; yields `advance(n)` (a no-op when disabled)."""
    if not enabled:
        yield lambda _n: None
        return
    columns = (
        TextColumn("scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("scan", total=total)
        yield lambda n: bar.advance(task, n)
