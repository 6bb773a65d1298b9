"""The Navidrome scan producer and the watcher against a real Navidrome server.

The library is the test's own folder of tagged audio inside the session server's music
folder; Navidrome scans it itself. Both ways of reading it (navidrome.db read-only while
the server runs, and the Subsonic API) must publish the same ids and metadata. The
library is shared with other tests, so every check looks at this test's files only.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from aiokafka import AIOKafkaProducer

from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner, SubsonicSource
from pipeline.schemas import TrackEvent, TrackMetadata
from pipeline.topics import ensure_topics
from tests.fixtures.bus import end_offsets
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs
from tests.fixtures.services import base_settings

SONGS = [
    Song(
        "Miles Davis/Kind of Blue/01 - So What.flac",
        TrackMetadata(
            title="So What",
            artist="Miles Davis",
            album_artist="Miles Davis",
            album="Kind of Blue",
            track_number=1,
            year=1959,
            genre="Jazz",
            mbz_recording_id="0f2a4b5c-0000-4000-8000-000000000001",
        ),
    ),
    Song(
        "Nina Simone/Pastel Blues/05 - Sinnerman.mp3",
        TrackMetadata(
            title="Sinnerman",
            artist="Nina Simone",
            album="Pastel Blues",
            track_number=5,
            disc_number=1,
            mbz_recording_id="0f2a4b5c-0000-4000-8000-000000000002",
        ),
    ),
    Song(
        "Radiohead/OK Computer/02 - Paranoid Android.ogg",
        TrackMetadata(
            title="Paranoid Android", artist="Radiohead", album="OK Computer", genre="Rock"
        ),
    ),
    Song(
        "Björk/Post/04 - Hyperballad.wav",
        TrackMetadata(title="Hyperballad", artist="Björk", album="Post"),
    ),
]


def db_scanner(settings: Settings, producer: AIOKafkaProducer) -> NavidromeScanner:
    return NavidromeScanner(settings, DatabaseSource(settings.navidrome), producer)


def api_scanner(settings: Settings, producer: AIOKafkaProducer) -> NavidromeScanner:
    return NavidromeScanner(settings, SubsonicSource(settings.navidrome), producer)


async def mine(settings: Settings, folder: Path) -> dict[str, TrackEvent]:
    """The published tracks whose file lies in `folder` (the library is shared)."""
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    inside = f"{folder}/"
    return {i: e for i, e in events.items() if e.path.startswith(inside)}


def library(server: NavidromeServer, folder: Path, songs: list[Song]) -> dict[str, str]:
    """Write the songs, let Navidrome scan them; relative path -> Navidrome's id."""
    write_songs(folder, songs)
    server.rescan()
    ids = server.ids_by_path(folder)
    assert len(ids) == len(songs), ids
    return {str(path.relative_to(folder)): i for path, i in ids.items()}


async def test_database_and_subsonic_api_publish_the_same_tracks(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    ids = library(navidrome_server, navidrome_folder, SONGS)
    from_db = navidrome_server.settings(settings)
    db_report = await db_scanner(from_db, producer).scan_once()
    other = base_settings()  # separate topics for the API's events
    await ensure_topics(other.kafka, other.topics)
    from_api = navidrome_server.settings(other, api=True, page_size=2)  # several pages
    api_report = await api_scanner(from_api, producer).scan_once()

    assert db_report.ok and api_report.ok and db_report.published == api_report.published
    by_db = await mine(settings, navidrome_folder)
    by_api = await mine(other, navidrome_folder)
    assert set(by_db) == set(by_api) == set(ids.values())
    for song in SONGS:
        db_event, api_event = by_db[ids[song.path]], by_api[ids[song.path]]
        assert db_event.source == "navidrome"
        assert db_event.path == str(navidrome_folder / song.path)
        assert db_event.library_root == str(navidrome_server.music.resolve())
        assert db_event.relative_path == f"{navidrome_folder.name}/{song.path}"
        assert db_event.fingerprint is not None  # the file is reachable here
        assert db_event.navidrome_library_id == 1
        # The API does not say where the library starts (no path map here), has whole
        # seconds, no MusicBrainz album/artist ids and no pid; everything else is the same.
        loose = {"observed_at", "metadata", "library_root", "relative_path", "navidrome_pid"}
        assert db_event.navidrome_pid and api_event.navidrome_pid is None
        assert db_event.model_dump(exclude=loose) == api_event.model_dump(exclude=loose)
        api_only = {"duration_s", "mbz_album_id", "mbz_artist_id"}
        assert db_event.metadata.model_dump(exclude=api_only) == api_event.metadata.model_dump(
            exclude=api_only
        )
        assert abs(db_event.metadata.duration_s - api_event.metadata.duration_s) <= 1
        tags = song.tags
        meta = db_event.metadata
        assert (meta.title, meta.artist, meta.album) == (tags.title, tags.artist, tags.album)
        assert meta.track_number == tags.track_number
        assert meta.mbz_recording_id == tags.mbz_recording_id
        # Navidrome fills in the album artist from the artist when the tag is absent.
        assert meta.album_artist == (tags.album_artist or tags.artist)


async def test_a_file_removed_and_rescanned_by_navidrome_becomes_a_tombstone(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    ids = library(navidrome_server, navidrome_folder, SONGS)
    other = base_settings()
    await ensure_topics(other.kafka, other.topics)
    configs = [
        (navidrome_server.settings(settings), db_scanner),
        (navidrome_server.settings(other, api=True), api_scanner),
    ]
    for config, scanner in configs:
        await scanner(config, producer).scan_once()
        again = await scanner(config, producer).scan_once()
        assert again.ok and again.published == 0 and again.removed == 0

    gone = SONGS[2].path
    (navidrome_folder / gone).unlink()
    navidrome_server.rescan()
    uri = f"file:{navidrome_server.db_path}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:  # Navidrome keeps the row, flagged missing
        [(missing,)] = db.execute("SELECT missing FROM media_file WHERE id = ?", (ids[gone],))
    assert missing == 1

    for config, scanner in configs:
        report = await scanner(config, producer).scan_once()
        assert report.ok and report.removed == 1 and report.published == 0
        left = await mine(config, navidrome_folder)
        assert set(left) == set(ids.values()) - {ids[gone]}


async def test_a_scan_that_would_remove_most_of_the_library_publishes_nothing(
    settings: Settings, producer: AIOKafkaProducer, navidrome_factory
) -> None:
    server: NavidromeServer = navidrome_factory()  # a library of its own: the ratio is ours
    files = write_songs(server.music, SONGS)
    server.rescan()
    config = server.settings(settings)
    assert (await db_scanner(config, producer).scan_once()).published == len(SONGS)
    before = await end_offsets(settings, settings.topics.tracks, settings.topics.partitions)
    for song in SONGS[1:]:  # a disk half unmounted: 3 of 4 files gone
        files[song.path].unlink()
    server.rescan()

    for scanner in (db_scanner, api_scanner):
        chosen = config if scanner is db_scanner else server.settings(settings, api=True)
        report = await scanner(chosen, producer).scan_once()
        assert report.refused_removals == 3 and report.published == report.removed == 0
        assert report.refusal is not None and "nothing was removed" in report.refusal
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == before

    # Raising the limit is how an intended clean-up goes through.
    allowed = server.settings(settings, max_deletion_ratio=1.0)
    report = await db_scanner(allowed, producer).scan_once()
    assert report.removed == 3
    assert len(await read_tracks(settings.kafka, settings.topics.tracks)) == 1


async def test_the_watcher_uses_navidromes_ids_so_both_producers_agree(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    ids = library(navidrome_server, navidrome_folder, SONGS)
    config = navidrome_server.settings(settings)

    # With navidrome.db configured, the watcher looks each file's id up by path.
    watcher = await FilesystemWatcher(config, [navidrome_folder], producer).scan_once()
    assert watcher.published == len(SONGS)
    events = await mine(settings, navidrome_folder)
    assert set(events) == set(ids.values())
    assert {e.source for e in events.values()} == {"filesystem"}

    await db_scanner(config, producer).scan_once()  # Navidrome's view takes over
    events = await mine(settings, navidrome_folder)
    assert set(events) == set(ids.values())
    assert {e.source for e in events.values()} == {"navidrome"}
    again = await FilesystemWatcher(config, [navidrome_folder], producer).scan_once()
    assert again.published == 0  # no back and forth between them

    # A file Navidrome has scanned since is published by the watcher under Navidrome's id.
    late = Song("Encore/01 - Late.mp3", TrackMetadata(title="Late", artist="Encore"))
    write_songs(navidrome_folder, [late], seed=99)
    navidrome_server.rescan()
    late_id = navidrome_server.ids_by_path(navidrome_folder)[navidrome_folder / late.path]
    assert (await FilesystemWatcher(config, [navidrome_folder], producer).scan_once()).published
    assert set(await mine(settings, navidrome_folder)) == {*ids.values(), late_id}


async def test_a_watcher_without_navidrome_ids_is_superseded_by_the_navidrome_scan(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    ids = library(navidrome_server, navidrome_folder, SONGS)
    await FilesystemWatcher(settings, [navidrome_folder], producer).scan_once()  # own ids
    derived = set(await mine(settings, navidrome_folder))
    assert len(derived) == len(SONGS) and not derived & set(ids.values())

    report = await db_scanner(navidrome_server.settings(settings), producer).scan_once()

    assert report.ok and report.removed == len(SONGS)  # one id per file: Navidrome's
    assert set(await mine(settings, navidrome_folder)) == set(ids.values())


async def test_scheduled_scans_pick_up_navidromes_changes_until_stopped(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    ids = library(navidrome_server, navidrome_folder, SONGS[:2])
    scanner = db_scanner(navidrome_server.settings(settings), producer)
    stop = asyncio.Event()
    running = asyncio.create_task(scanner.run(stop, schedule="* * * * * *"))  # every second
    try:
        async with asyncio.timeout(60):
            while set(await mine(settings, navidrome_folder)) != set(ids.values()):
                await asyncio.sleep(0.3)
            late = library(navidrome_server, navidrome_folder, SONGS[:3])
            while set(await mine(settings, navidrome_folder)) != set(late.values()):
                await asyncio.sleep(0.3)
    finally:
        stop.set()
    assert await asyncio.wait_for(running, timeout=30) >= 2


async def test_sonicbus_scan_navidrome_from_the_command_line(
    settings: Settings, navidrome_server: NavidromeServer, navidrome_folder: Path
) -> None:
    ids = set(library(navidrome_server, navidrome_folder, SONGS).values())
    dry = await sonicbus(settings, "scan", "navidrome", "--db", str(navidrome_server.db_path),
                         "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stdout + dry.stderr
    printed = {line.split()[1] for line in dry.stdout.splitlines() if line.startswith("publish ")}
    assert ids <= printed
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0

    api = await sonicbus(settings, "scan", "navidrome", "--url", navidrome_server.url,
                         "--user", navidrome_server.user, "--once",
                         SONICBUS_NAVIDROME__PASSWORD=navidrome_server.password)  # fmt: skip
    assert api.returncode == 0, api.stdout + api.stderr
    assert set(await mine(settings, navidrome_folder)) == ids
