"""The filesystem watcher: an initial scan of the music folders, then live changes.

Each file becomes one TrackEvent (or one per CUE track) on the compacted
`tracks` topic, keyed by track id. What is already published comes from the
topic itself (`pipeline.catalog`), so a restart republishes nothing that did
not change, a moved file keeps its id, and a deleted one gets a tombstone.

Track ids, in order of preference: Navidrome's id for the path (when a
Navidrome database is configured); the id already published for this path;
the id of the same content at a path that no longer exists (a move); else one
derived from the library-relative path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from watchfiles import DefaultFilter, awatch

from pipeline.catalog import Catalog, load_catalog
from pipeline.config import Settings
from pipeline.navidrome.database import NavidromeDatabase, NavidromeIdLookup, PathMap
from pipeline.producers.audiofiles import (
    FileVanished,
    IngestError,
    base_track_id,
    derive_track_id,
    display,
    is_inside,
    relative_path,
    suffix_of,
)
from pipeline.producers.music_folder import (
    Candidate,
    Inspection,
    Problem,
    events_for,
    find_cue,
    inspect_safely,
    walk,
)
from pipeline.producers.publish import (
    DeletionGuard,
    Echo,
    ScanReport,
    TrackPublisher,
    progress_bar,
)
from pipeline.schemas import Fingerprint, TrackEvent

log = logging.getLogger(__name__)

TICK_MS = 100


@dataclass
class _Pending:
    """A path that changed; it is handled once its stat stayed the same for settle_s."""

    stat: tuple[int, int, bool] | str | None = "unknown"
    stable_since: float = field(default_factory=time.monotonic)


def _stat_key(path: str) -> tuple[int, int, bool] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, os.path.isdir(path))


class FilesystemWatcher:
    """Publishes the audio files of some music folders and keeps the topic in step with them.

    Use `scan_once()` for one pass, or `run(stop_event)` for a scan followed by
    live watching until the event is set (`sonicbus watch`, and in-process by
    `sonicbus up`). `ready` is set once the initial scan is done.
    """

    def __init__(
        self,
        settings: Settings,
        roots: Sequence[str | Path] | None,
        producer: AIOKafkaProducer | None,
        *,
        dry_run: bool = False,
        progress: bool = False,
        echo: Echo | None = None,
    ) -> None:
        chosen = list(roots or settings.watcher.roots)
        if not chosen:
            raise ValueError("no music folder given: pass DIR arguments or set watcher.roots")
        self.settings = settings
        self.config = settings.watcher
        self.roots = [os.path.abspath(os.fspath(root)) for root in chosen]
        self.extensions = frozenset(e.lower().lstrip(".") for e in self.config.extensions)
        self.publisher = TrackPublisher(settings, producer, dry_run=dry_run, echo=echo)
        self.guard = DeletionGuard(self.config.max_deletions, self.config.max_deletion_ratio)
        self.progress = progress
        self.catalog = Catalog()
        self.navidrome: NavidromeIdLookup | None = None
        if settings.navidrome.db_path is not None:
            database = NavidromeDatabase.from_settings(settings.navidrome)
            self.navidrome = NavidromeIdLookup(database, PathMap(settings.navidrome.path_map))
        self.ready = asyncio.Event()
        self.last_report: ScanReport | None = None
        self._reported: set[tuple[str, str]] = set()
        self._pending: dict[str, _Pending] = {}

    # ------------------------------------------------------------ one full pass

    async def scan_once(self) -> ScanReport:
        """List every root, publish what is new or changed, tombstone what is gone."""
        report = ScanReport()
        missing = [root for root in self.roots if not os.path.isdir(root)]
        if missing:
            report.error = (
                f"music folder missing or not a folder: {', '.join(map(display, missing))} "
                "(not mounted?); nothing was scanned"
            )
            log.error("%s", report.error)
            return report.finish()
        self.catalog = await load_catalog(self.settings.kafka, self.settings.topics.tracks)
        if self.navidrome is not None:
            await asyncio.to_thread(self.navidrome.refresh)
        candidates, problems = await asyncio.to_thread(self._list_roots)
        await self._report_problems(problems, report)
        report.found = len(candidates)
        seen = {candidate.path for candidate in candidates}
        with progress_bar(len(candidates), enabled=self.progress) as advance:
            size = self.config.batch_size
            for start in range(0, len(candidates), size):
                batch = candidates[start : start + size]
                await self._process(batch, seen, report)
                advance(len(batch))
        gone = [event for event in self._known_under_roots() if event.path not in seen]
        await self._remove(gone, report)
        self.last_report = report.finish()
        log.info("scan of %s: %s", ", ".join(map(display, self.roots)), report.summary())
        return report

    def _list_roots(self) -> tuple[list[Candidate], list[Problem]]:
        candidates: list[Candidate] = []
        problems: list[Problem] = []
        for root in self.roots:
            for item in walk(root, self.extensions):
                if isinstance(item, Candidate):
                    candidates.append(item)
                else:
                    problems.append(item)
        return candidates, problems

    def _known_under_roots(self) -> list[TrackEvent]:
        known = {e.track_id: e for root in self.roots for e in self.catalog.under(root)}
        return list(known.values())

    # ------------------------------------------------------------ files -> events

    async def _process(
        self, batch: Sequence[Candidate], seen: set[str], report: ScanReport
    ) -> None:
        """Inspect a batch in worker threads, then resolve ids and publish in one go."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(self.config.workers, thread_name_prefix="sonicbus-ingest") as pool:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, inspect_safely, c, self._known(c)) for c in batch)
            )
        events: list[TrackEvent] = []
        stale: list[TrackEvent] = []
        for candidate, result in zip(batch, results, strict=True):
            if isinstance(result, FileVanished):
                seen.discard(candidate.path)
                continue
            if isinstance(result, IngestError):
                await self._dead_letter(candidate.path, str(result), report)
                continue
            if result.unchanged:
                report.unchanged += 1
                self._remember_mtime(candidate.path, result.fingerprint)
                continue
            try:
                new, old = self._resolve(result, seen, report)
            except IngestError as exc:
                await self._dead_letter(candidate.path, str(exc), report)
                continue
            for problem in result.problems:
                await self._dead_letter(candidate.path, problem, report)
            for event in new:
                self.catalog.put(event)
            for event in old:
                self.catalog.remove(event.track_id)
            events.extend(new)
            stale.extend(old)
        await self.publisher.publish(events)
        await self.publisher.tombstone(stale)
        report.published += len(events)
        report.removed += len(stale)

    def _remember_mtime(self, path: str, current: Fingerprint) -> None:
        """A touched but unchanged file is not republished; remembering its new mtime here
        lets the next scan of this process skip it on size and mtime alone."""
        for event in self.catalog.events_at(path):
            if event.fingerprint is not None and event.fingerprint.mtime_ns != current.mtime_ns:
                self.catalog.put(event.model_copy(update={"fingerprint": current}))

    def _known(self, candidate: Candidate) -> Fingerprint | None:
        """The catalog's fingerprint for this path, or None when the file must be re-read
        (new path, a CUE sheet appeared or went away, or Navidrome now has its own id)."""
        events = self.catalog.events_at(candidate.path)
        if not events:
            return None
        if any(e.segment for e in events) != bool(candidate.cue_path):
            return None
        if self.navidrome is not None:
            navidrome_id = self.navidrome.lookup(candidate.path)
            if navidrome_id and base_track_id(events[0].track_id) != navidrome_id:
                return None
        return events[0].fingerprint

    def _resolve(
        self, inspection: Inspection, seen: set[str], report: ScanReport
    ) -> tuple[list[TrackEvent], list[TrackEvent]]:
        """Events to publish for a file, and its previous events that they replace."""
        path = inspection.candidate.path
        events = events_for(inspection, self._base_id(inspection, seen, report))
        new_ids = {event.track_id for event in events}
        stale = [e for e in self.catalog.events_at(path) if e.track_id not in new_ids]
        return events, stale

    def _base_id(self, inspection: Inspection, seen: set[str], report: ScanReport) -> str:
        candidate = inspection.candidate
        path = candidate.path
        if self.navidrome is not None and (navidrome_id := self.navidrome.lookup(path)):
            return navidrome_id
        here = self.catalog.ids_at(path)
        if here:
            return base_track_id(min(here))
        fingerprint = inspection.fingerprint
        for track_id in sorted(
            self.catalog.ids_with_content(fingerprint.size, fingerprint.fast_hash)
        ):
            old = self.catalog.get(track_id)
            if old and old.path not in seen and not os.path.lexists(old.path):
                report.moved += 1
                log.info("moved: %s -> %s keeps id %s", display(old.path), display(path), track_id)
                return base_track_id(track_id)
        derived = derive_track_id(relative_path(path, candidate.root))
        holder = self.catalog.get(derived)
        if holder is not None and holder.path != path and os.path.lexists(holder.path):
            raise IngestError(
                f"its path-derived id {derived} is already used by {display(holder.path)} "
                "(the same relative path in two library roots?)"
            )
        return derived

    async def _remove(self, gone: Sequence[TrackEvent], report: ScanReport) -> None:
        if not gone:
            return
        refusal = self.guard.refusal(len(gone), len(self._known_under_roots()))
        if refusal is not None:
            report.refusal = refusal
            report.refused_removals = len(gone)
            log.error("mass deletion refused: %s", refusal)
            return
        await self.publisher.tombstone(gone)
        for event in gone:
            self.catalog.remove(event.track_id)
            log.info("removed: %s (%s)", display(event.path), event.track_id)
        report.removed += len(gone)

    async def _report_problems(self, problems: Sequence[Problem], report: ScanReport) -> None:
        for problem in problems:
            if problem.is_track:
                await self._dead_letter(problem.path, problem.message, report)
            elif (problem.path, problem.message) not in self._reported:
                self._reported.add((problem.path, problem.message))
                log.warning("%s: %s", display(problem.path), problem.message)

    async def _dead_letter(self, path: str, message: str, report: ScanReport) -> None:
        """Once per path and reason in this process: rescans do not repeat old news."""
        if (path, message) in self._reported:
            return
        self._reported.add((path, message))
        report.dead_lettered += 1
        await self.publisher.dead_letter(path, message)

    # ------------------------------------------------------------ live watching

    async def run(self, stop_event: asyncio.Event) -> None:
        """Scan, then publish changes as they settle, until `stop_event` is set.

        The watch starts before the scan, so a file written during the scan is not
        missed: its notification waits in the watcher and is handled afterwards.
        """
        missing = [root for root in self.roots if not os.path.isdir(root)]
        if missing:
            raise FileNotFoundError(f"music folder not found: {', '.join(map(display, missing))}")
        pending = self._pending
        changes_stream = awatch(
            *self.roots,
            watch_filter=DefaultFilter(),
            debounce=self.config.debounce_ms,
            step=50,
            stop_event=stop_event,
            rust_timeout=TICK_MS,
            yield_on_timeout=True,
            force_polling=self.config.force_polling,
            poll_delay_ms=self.config.poll_delay_ms,
            recursive=True,
        )
        async for changes in changes_stream:
            if not self.ready.is_set():
                await self.scan_once()
                self.ready.set()
            for _change, path in changes:
                pending[path] = _Pending()
            settled = self._settled(pending)
            if settled:
                report = await self.apply_changes(settled)
                if report.found or report.removed or report.dead_lettered or report.refusal:
                    log.info("changes: %s", report.summary())

    def _settled(self, pending: dict[str, _Pending]) -> list[str]:
        """Paths whose size and mtime have not moved for settle_s (copies are done)."""
        now = time.monotonic()
        done = []
        for path, state in list(pending.items()):
            current = _stat_key(path)
            if current != state.stat:
                state.stat, state.stable_since = current, now
            elif now - state.stable_since >= self.config.settle_s:
                done.append(path)
                del pending[path]
        return done

    async def apply_changes(self, paths: Sequence[str]) -> ScanReport:
        """Publish settled changes: new/changed files (and folders), then removals.

        Files found by listing a changed folder are read only if they are settled
        too; one still being written goes back to wait (a folder copy in progress).
        """
        report = ScanReport()
        if self.navidrome is not None:
            await asyncio.to_thread(self.navidrome.refresh)
        found, problems, missing = await asyncio.to_thread(self._collect, paths)
        await self._report_problems(problems, report)
        candidates = []
        for candidate, unsettled in found:
            if unsettled or candidate.path in self._pending:
                self._pending.setdefault(candidate.path, _Pending())
            else:
                candidates.append(candidate)
        report.found = len(candidates)
        seen = {candidate.path for candidate in candidates}
        await self._process(candidates, seen, report)
        gone = {
            event.track_id: event
            for path in missing
            for event in self.catalog.under(path)
            if not os.path.lexists(event.path)
        }
        await self._remove(list(gone.values()), report)
        return report.finish()

    def _collect(
        self, paths: Sequence[str]
    ) -> tuple[list[tuple[Candidate, bool]], list[Problem], list[str]]:
        """Changed paths -> audio files to (re)read, each with an `unsettled` flag (found in
        a folder and modified less than settle_s ago), problems, and paths that are gone."""
        found: dict[str, tuple[Candidate, bool]] = {}
        problems: list[Problem] = []
        missing: list[str] = []
        for path in sorted(paths):
            root = next((r for r in self.roots if is_inside(path, r)), None)
            if root is None:
                continue
            extension = suffix_of(path)
            if os.path.isdir(path):
                for item in walk(root, self.extensions, start=path):
                    if isinstance(item, Candidate):
                        found[item.path] = (item, self._recently_modified(item.path))
                    else:
                        problems.append(item)
                continue
            if not os.path.lexists(path):
                missing.append(path)
            elif extension in self.extensions:
                if os.path.exists(path):
                    found[path] = (Candidate(path, root, find_cue(path)), False)
                else:
                    problems.append(Problem(path, "broken symlink (its target is missing)", True))
            if extension == "cue":  # a sheet changed: every audio file beside it may split anew
                folder = os.path.dirname(path)
                with contextlib.suppress(OSError):
                    for name in sorted(os.listdir(folder)):
                        audio = os.path.join(folder, name)
                        if suffix_of(name) in self.extensions and os.path.isfile(audio):
                            candidate = Candidate(audio, root, find_cue(audio))
                            found[audio] = (candidate, self._recently_modified(audio))
        return list(found.values()), problems, missing

    def _recently_modified(self, path: str) -> bool:
        try:
            age = time.time() - os.stat(path).st_mtime
        except OSError:
            return False
        return 0 <= age < self.config.settle_s
