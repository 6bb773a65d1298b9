"""The Navidrome scan producer: Navidrome's library, published to `tracks` with Navidrome's ids.

The library is read from navidrome.db (read-only) or from the Subsonic API;
both give the same `NavidromeTrack`s and so the same events. A scan compares
them with the catalog (the topic): changed tracks are published, tracks that
Navidrome no longer has get tombstones, and ids that another producer gave to
the same file are retired in favour of Navidrome's. A scan that would remove
too much publishes nothing at all: the listing itself is then suspect.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from typing import Protocol

from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from pipeline.catalog import Catalog, load_catalog
from pipeline.config import NavidromeSettings, Settings
from pipeline.navidrome.database import (
    NavidromeDatabase,
    NavidromeListing,
    NavidromeTrack,
    NavidromeUnavailable,
    PathMap,
)
from pipeline.navidrome.subsonic import SubsonicClient
from pipeline.producers.audiofiles import base_track_id, fingerprint
from pipeline.producers.publish import DeletionGuard, Echo, ScanReport, TrackPublisher
from pipeline.producers.schedule import run_on_schedule
from pipeline.schemas import Fingerprint, TrackEvent
from pipeline.schemas.base import describe_validation_error

log = logging.getLogger(__name__)


class NavidromeSource(Protocol):
    """Somewhere a Navidrome library can be listed from."""

    description: str

    async def listing(self) -> NavidromeListing: ...


class DatabaseSource:
    def __init__(self, config: NavidromeSettings) -> None:
        self.database = NavidromeDatabase.from_settings(config)
        self.user = config.user
        self.description = f"Navidrome database {config.db_path}"

    async def listing(self) -> NavidromeListing:
        return await asyncio.to_thread(self.database.read, self.user)


SUBSONIC_PATH_PREFIX = "subsonic:"  # a track only Navidrome can serve (see SubsonicSource)


class SubsonicSource:
    def __init__(self, config: NavidromeSettings) -> None:
        if not (config.url and config.user and config.password):
            raise ValueError("the Subsonic API needs navidrome.url, navidrome.user and a password")
        self.config = config
        self.description = f"Subsonic API at {config.url}"

    async def listing(self) -> NavidromeListing:
        config = self.config
        async with SubsonicClient.from_settings(config) as client:
            listing = await client.library(config.page_size)
        virtual = [t for t in listing.tracks if not t.path.startswith("/")]
        if not virtual:
            return listing
        if not config.download_fallback:
            raise NavidromeUnavailable(
                f"Navidrome reports virtual paths (e.g. {virtual[0].path!r}), not the real ones: "
                f"enable 'Report Real Path' for the player '{config.client_name}' of user "
                f"'{config.user}' in Navidrome (Settings > Players), then scan again, or let "
                "the embedders download the files (navidrome.download_fallback)"
            )
        # Made-up paths ("Artist/Album/01 - Title.mp3") open nowhere and two songs can share
        # one, so they must not pass for files: each becomes `subsonic:<id>/<made-up path>`,
        # unique, and the embedders fetch the file through `download` by its id.
        log.warning(
            "Navidrome at %s reports made-up paths for %d track(s) (player '%s' of user '%s' "
            "without 'Report Real Path'): the embedders will download them through Subsonic",
            config.url, len(virtual), config.client_name, config.user,
        )  # fmt: skip
        for track in virtual:
            track.path = f"{SUBSONIC_PATH_PREFIX}{track.id}/{track.path}"
            track.relative_path = None
        return listing


def source_from_settings(config: NavidromeSettings) -> NavidromeSource:
    """The database when one is configured, else the Subsonic API."""
    if config.db_path is not None:
        return DatabaseSource(config)
    if config.url:
        return SubsonicSource(config)
    raise ValueError(
        "no Navidrome library configured: give --db PATH, or --url URL --user U with a "
        "password (--password or SONICBUS_NAVIDROME__PASSWORD)"
    )


class NavidromeScanner:
    """Publishes a Navidrome library to `tracks`, once (`scan_once`) or on a schedule (`run`)."""

    def __init__(
        self,
        settings: Settings,
        source: NavidromeSource,
        producer: AIOKafkaProducer | None,
        *,
        dry_run: bool = False,
        echo: Echo | None = None,
    ) -> None:
        self.settings = settings
        self.config = settings.navidrome
        self.source = source
        self.path_map = PathMap(self.config.path_map)
        self.publisher = TrackPublisher(settings, producer, dry_run=dry_run, echo=echo)
        self.guard = DeletionGuard(self.config.max_deletions, self.config.max_deletion_ratio)
        self.last_listing: NavidromeListing | None = None

    async def run(self, stop_event: asyncio.Event, schedule: str | None = None) -> int:
        """One scan, or a scan now and at every time of the cron `schedule` until stopped."""
        if schedule is None:
            await self.scan_once()
            return 1
        return await run_on_schedule(self.scan_once, schedule, stop_event)

    async def scan_once(self) -> ScanReport:
        report = ScanReport()
        try:
            listing = await self.source.listing()
        except NavidromeUnavailable as exc:
            report.error = str(exc)
            log.error("Navidrome scan skipped, nothing published: %s", exc)
            return report.finish()
        self.last_listing = listing
        if not listing.tracks and not listing.problems:
            # An empty answer is far more often a wrong folder, user or unfinished first
            # scan than a library that was emptied: report it, remove nothing.
            report.error = (
                f"{self.source.description} lists no tracks: has Navidrome scanned its music "
                "folder, and may this user see its libraries? Nothing was published or removed"
            )
            log.error("Navidrome scan skipped: %s", report.error)
            return report.finish()
        catalog = await load_catalog(self.settings.kafka, self.settings.topics.tracks)
        report.found = len(listing.tracks)
        for key, message in listing.problems:
            report.dead_lettered += 1
            await self.publisher.dead_letter(key, message)
        events, problems = await asyncio.to_thread(self._events, listing.tracks, catalog)
        for key, message in problems:
            report.dead_lettered += 1
            await self.publisher.dead_letter(key, message)
        changed = [e for e in events if not _same(catalog.get(e.track_id), e)]
        listed = {t.id for t in listing.tracks}
        superseded = {
            old.track_id: old
            for event in events
            for old in catalog.events_at(event.path)
            if base_track_id(old.track_id) != event.track_id and old.track_id not in listed
        }
        rematched = _rematch(events, catalog, listed, superseded)
        superseded.update(rematched)
        report.rematched = len(rematched)
        ours = [e for e in catalog if e.source == "navidrome"]
        removed = [e for e in ours if e.track_id not in listed and e.track_id not in superseded]
        refusal = self.guard.refusal(len(removed), len(ours)) if removed else None
        if refusal is not None:
            report.refusal, report.refused_removals = refusal, len(removed)
            log.error("Navidrome scan refused, nothing published: %s", refusal)
            return report.finish()
        await self.publisher.publish(changed)
        await self.publisher.tombstone([*superseded.values(), *removed])
        report.published = len(changed)
        report.unchanged = len(events) - len(changed)
        report.removed = len(superseded) + len(removed)
        if report.rematched:
            log.info(
                "%d tracks re-matched to new Navidrome ids (a rebuilt database?)", report.rematched
            )
        log.info("Navidrome scan (%s): %s", self.source.description, report.finish().summary())
        return report

    def _events(
        self, tracks: list[NavidromeTrack], catalog: Catalog
    ) -> tuple[list[TrackEvent], list[tuple[str, str]]]:
        """TrackEvents for Navidrome's tracks (blocking: fingerprints read local files)."""
        events, problems = [], []
        for track in tracks:
            try:
                events.append(self._event(track, catalog.get(track.id)))
            except ValidationError as exc:
                problems.append(
                    (track.id, f"cannot describe track: {describe_validation_error(exc)}")
                )
        return events, problems

    def _event(self, track: NavidromeTrack, existing: TrackEvent | None) -> TrackEvent:
        local = self.path_map.to_local(track.path)
        if track.library_path is not None:
            root: str | None = self.path_map.to_local(track.library_path)
            relative = track.relative_path
        else:  # the Subsonic API does not say where a library starts: the path map does
            match = self.path_map.match(track.path)
            root = match[1] if match else None
            relative = track.path[len(match[0]) :].lstrip("/") if match else None
        return TrackEvent(
            track_id=track.id,
            path=local,
            library_root=root,
            relative_path=relative or None,
            source="navidrome",
            suffix=track.suffix,
            metadata=track.metadata,
            fingerprint=_local_fingerprint(local, existing),
            navidrome_library_id=track.library_id,
            navidrome_pid=track.pid,
        )


def _local_fingerprint(path: str, existing: TrackEvent | None) -> Fingerprint | None:
    """The file's fingerprint when it is reachable from here; the catalog's when the
    file did not change (same size and mtime, or same size and fast hash)."""
    old = existing.fingerprint if existing is not None and existing.path == path else None
    try:
        info = os.stat(path)
    except OSError:
        return old  # not reachable from this machine: keep what is known
    if not stat.S_ISREG(info.st_mode):
        return None
    if old is not None and (old.size, old.mtime_ns) == (info.st_size, info.st_mtime_ns):
        return old
    try:
        with open(path, "rb") as fh:
            new = fingerprint(fh, info.st_size, info.st_mtime_ns)
    except OSError:
        return old
    if old is not None and (old.size, old.fast_hash) == (new.size, new.fast_hash):
        return old
    return new


def _rematch(
    events: list[TrackEvent],
    catalog: Catalog,
    listed: set[str],
    superseded: dict[str, TrackEvent],
) -> dict[str, TrackEvent]:
    """Old Navidrome tracks that a new id stands for, by secondary key: {old id: old event}.

    A Navidrome database rebuilt from scratch gives every file a new id, and when it also
    sees the files under other paths (another mount, a container) the path no longer
    matches. Then the same `pid` (a hash of tags), else the same MusicBrainz recording id,
    else the same file content (size and fast hash) re-matches them; a key shared by
    several tracks on either side matches nothing. Re-matched old ids are tombstoned as
    replaced, not counted as removals by the deletion guard.
    """
    new = [e for e in events if catalog.get(e.track_id) is None]
    orphans = [
        e
        for e in catalog
        if e.source == "navidrome" and e.track_id not in listed and e.track_id not in superseded
    ]
    keys = (
        lambda e: e.navidrome_pid,
        lambda e: e.metadata.mbz_recording_id,
        lambda e: e.fingerprint and (e.fingerprint.size, e.fingerprint.fast_hash),
    )
    found: dict[str, TrackEvent] = {}
    for key in keys:
        old_by_key = _unique(orphans, key)
        matched = {value for value in _unique(new, key) if value in old_by_key}
        found.update((old_by_key[v].track_id, old_by_key[v]) for v in matched)
        new = [e for e in new if key(e) not in matched]
        orphans = [e for e in orphans if e.track_id not in found]
    return found


def _unique(events: list[TrackEvent], key) -> dict[object, TrackEvent]:  # type: ignore[no-untyped-def]
    """key value -> the one event that has it (values shared by several are left out)."""
    seen: dict[object, list[TrackEvent]] = {}
    for event in events:
        if value := key(event):
            seen.setdefault(value, []).append(event)
    return {value: found[0] for value, found in seen.items() if len(found) == 1}


def _same(old: TrackEvent | None, new: TrackEvent) -> bool:
    """Equal but for when it was observed: nothing to publish."""
    if old is None:
        return False
    skip = {"observed_at", "schema_version"}
    return old.model_dump(exclude=skip) == new.model_dump(exclude=skip)
