"""A Navidrome library published on a real broker, read from its SQLite database and from
its Subsonic API (a local server speaking the endpoints Navidrome serves)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.navidrome.database import NavidromeDatabase
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner, SubsonicSource
from pipeline.schemas import TrackEvent, TrackMetadata
from pipeline.topics import ensure_topics
from tests.fixtures.bus import dead_letters, end_offsets
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome_fake import SONGS, FakeNavidrome, NavidromeLibrary, Song
from tests.fixtures.services import base_settings


@pytest.fixture
def navidrome(tmp_path: Path) -> NavidromeLibrary:
    library = NavidromeLibrary(tmp_path)
    library.build()
    return library


@pytest.fixture
def server(navidrome: NavidromeLibrary) -> Iterator[FakeNavidrome]:
    fake = FakeNavidrome(navidrome.db_path)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def api_settings(
    navidrome: NavidromeLibrary, base: Settings, server: FakeNavidrome, **more: object
) -> Settings:
    options: dict[str, object] = {
        "db_path": None,
        "url": server.url,
        "password": SecretStr("sesame"),
        "page_size": 2,
        "timeout_s": 5.0,
    }
    return navidrome.settings(base, **{**options, **more})


def db_scanner(settings: Settings, producer: AIOKafkaProducer) -> NavidromeScanner:
    return NavidromeScanner(settings, DatabaseSource(settings.navidrome), producer)


async def test_database_and_subsonic_api_publish_the_same_tracks(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome: NavidromeLibrary,
    server: FakeNavidrome,
) -> None:
    from_db = navidrome.settings(settings)
    db_report = await db_scanner(from_db, producer).scan_once()
    other = base_settings()  # a second, separate set of topics for the API's events
    await ensure_topics(other.kafka, other.topics)
    from_api = api_settings(navidrome, other, server)
    api = NavidromeScanner(from_api, SubsonicSource(from_api.navidrome), producer)
    api_report = await api.scan_once()

    assert db_report.published == api_report.published == len(SONGS)
    by_db = await read_tracks(settings.kafka, settings.topics.tracks)
    by_api = await read_tracks(other.kafka, other.topics.tracks)
    assert set(by_db) == set(by_api) == {song.id for song in SONGS}
    for song in SONGS:
        db_event, api_event = by_db[song.id], by_api[song.id]
        assert db_event.source == "navidrome"
        assert db_event.path == str(navidrome.local_path(song))  # container path mapped here
        assert db_event.relative_path == song.path
        assert db_event.library_root == str(navidrome.local[song.library_id])
        assert db_event.navidrome_library_id == song.library_id
        assert db_event.fingerprint is not None  # the file is reachable: fingerprinted
        same = {"observed_at", "metadata"}
        assert db_event.model_dump(exclude=same) == api_event.model_dump(exclude=same)
        # The API has whole seconds and no MusicBrainz album/artist ids; the rest agrees.
        api_only = {"duration_s", "mbz_album_id", "mbz_artist_id"}
        assert db_event.metadata.model_dump(exclude=api_only) == api_event.metadata.model_dump(
            exclude=api_only
        )
        assert db_event.metadata.model_dump(exclude={"duration_s"}) == song.tags.model_dump(
            exclude={"duration_s"}
        )
        assert api_event.metadata.duration_s == pytest.approx(db_event.metadata.duration_s, abs=1)

    # Plays, stars and ratings are alice's, the same both ways (bob's are not counted).
    assert api.last_listing is not None
    by_api_notes = {t.id: t.annotation for t in api.last_listing.tracks}
    by_db_notes = {
        t.id: t.annotation for t in NavidromeDatabase(navidrome.db_path).read("alice").tracks
    }
    for song in SONGS:
        db_notes, api_notes = by_db_notes[song.id], by_api_notes[song.id]
        assert db_notes is not None and api_notes is not None
        expected = (song.alice_plays, song.alice_rating, song.alice_starred)
        assert (db_notes.play_count, db_notes.rating, db_notes.starred) == expected
        assert (api_notes.play_count, api_notes.rating, api_notes.starred) == expected
        if song.alice_starred:
            assert db_notes.starred_at is not None and api_notes.starred_at is not None
            assert db_notes.starred_at == api_notes.starred_at.replace(tzinfo=None)
    # Token auth on every call, and paging: 2 songs a page over 2 music folders.
    search_calls = [p for endpoint, p in server.calls if endpoint == "search3"]
    assert [(p["musicFolderId"], p["songOffset"]) for p in search_calls] == [
        ("1", "0"),
        ("1", "2"),
        ("1", "4"),
        ("2", "0"),
    ]
    assert all(
        p["t"] == hashlib.md5(("sesame" + p["s"]).encode()).hexdigest() for _, p in server.calls
    )


async def test_a_rescan_publishes_changes_and_tombstones_removed_tracks(
    settings: Settings, producer: AIOKafkaProducer, navidrome: NavidromeLibrary
) -> None:
    config = navidrome.settings(settings)
    await db_scanner(config, producer).scan_once()
    unchanged = await db_scanner(config, producer).scan_once()
    assert (unchanged.published, unchanged.unchanged, unchanged.removed) == (0, 5, 0)

    navidrome.execute("UPDATE media_file SET title = 'So What (take 2)' WHERE id = ?", SONGS[0].id)
    navidrome.execute("UPDATE media_file SET missing = 1 WHERE id = ?", SONGS[2].id)
    navidrome.execute("INSERT INTO media_file (id, path, library_id) VALUES ('bad-row', '', 1)")
    report = await db_scanner(config, producer).scan_once()

    assert (report.published, report.unchanged, report.removed) == (1, 3, 1)
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert SONGS[2].id not in events and len(events) == 4
    assert events[SONGS[0].id].metadata.title == "So What (take 2)"
    [letter] = await dead_letters(settings)
    assert letter.key == "bad-row" and "path" in letter.message and letter.stage == "ingest"


async def test_a_scan_that_would_remove_most_of_the_library_publishes_nothing(
    settings: Settings, producer: AIOKafkaProducer, navidrome: NavidromeLibrary
) -> None:
    config = navidrome.settings(settings)
    await db_scanner(config, producer).scan_once()
    before = await end_offsets(settings, settings.topics.tracks, settings.topics.partitions)
    navidrome.execute("UPDATE media_file SET missing = 1 WHERE library_id = 1")  # 4 of 5
    navidrome.execute("UPDATE media_file SET title = 'changed' WHERE library_id = 2")

    report = await db_scanner(config, producer).scan_once()

    assert report.refused_removals == 4 and report.published == report.removed == 0
    assert report.refusal is not None and "nothing was removed" in report.refusal
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == before

    # Raising the limit is how an intended clean-up goes through.
    allowed = navidrome.settings(settings, max_deletion_ratio=1.0)
    report = await db_scanner(allowed, producer).scan_once()
    assert (report.removed, report.published) == (4, 1)


async def test_the_watcher_uses_navidromes_ids_so_both_producers_agree(
    settings: Settings, producer: AIOKafkaProducer, navidrome: NavidromeLibrary
) -> None:
    config = navidrome.settings(settings)
    roots = list(navidrome.local.values())
    navidrome_ids = {song.id for song in SONGS}

    # With navidrome.db configured, the watcher looks each file's id up by path.
    assert (await FilesystemWatcher(config, roots, producer).scan_once()).published == 5
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert set(events) == navidrome_ids
    assert {e.source for e in events.values()} == {"filesystem"}

    first = await db_scanner(config, producer).scan_once()  # Navidrome's view takes over
    assert (first.published, first.removed) == (5, 0)
    again = await db_scanner(config, producer).scan_once()
    rescan = await FilesystemWatcher(config, roots, producer).scan_once()
    assert again.published == rescan.published == 0  # no back and forth between them

    # A file Navidrome has catalogued since is published by the watcher under its id.
    late = Song("0c0ffee0000000000000000000000001", 2, "Encore/01 - Late.mp3", TrackMetadata())
    with sqlite3.connect(navidrome.db_path) as db:
        navidrome.add(db, late, seed=99)
    assert (await FilesystemWatcher(config, roots, producer).scan_once()).published == 1
    assert set(await read_tracks(settings.kafka, settings.topics.tracks)) == {
        *navidrome_ids,
        late.id,
    }


async def test_a_watcher_without_navidrome_ids_is_superseded_by_the_navidrome_scan(
    settings: Settings, producer: AIOKafkaProducer, navidrome: NavidromeLibrary
) -> None:
    roots = list(navidrome.local.values())
    await FilesystemWatcher(settings, roots, producer).scan_once()  # path-derived ids
    derived = set(await read_tracks(settings.kafka, settings.topics.tracks))
    assert len(derived) == 5 and not derived & {song.id for song in SONGS}

    report = await db_scanner(navidrome.settings(settings), producer).scan_once()

    assert (report.published, report.removed) == (5, 5)  # one id per file: Navidrome's
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert set(events) == {song.id for song in SONGS}


async def test_an_unreadable_library_is_reported_and_nothing_is_published(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome: NavidromeLibrary,
    server: FakeNavidrome,
) -> None:
    async def scan(config: Settings, source_kind: str) -> str:
        source = (
            DatabaseSource(config.navidrome)
            if source_kind == "db"
            else SubsonicSource(config.navidrome)
        )
        report = await NavidromeScanner(config, source, producer).scan_once()
        assert report.error is not None and report.published == 0
        return report.error

    # A database locked by a writer (Navidrome in the middle of its own scan).
    navidrome.execute("PRAGMA journal_mode = DELETE")
    writer = sqlite3.connect(navidrome.db_path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        assert "is locked" in await scan(navidrome.settings(settings, busy_timeout_s=0.2), "db")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    corrupt = navidrome.folder / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 2\x00" + b"\x13" * 4096)
    assert "corrupt" in await scan(navidrome.settings(settings, db_path=corrupt), "db")

    fast = {"timeout_s": 0.3, "retries": 1}
    server.mode = "error"
    assert "HTTP 500" in await scan(api_settings(navidrome, settings, server, **fast), "api")
    server.mode = "slow"
    assert "timed out" in await scan(api_settings(navidrome, settings, server, **fast), "api")
    server.mode = "ok"
    wrong = api_settings(navidrome, settings, server, password=SecretStr("guess"))
    assert "Wrong username or password" in await scan(wrong, "api")
    server.report_real_path = False
    assert "Report Real Path" in await scan(api_settings(navidrome, settings, server), "api")

    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0


async def test_scheduled_scans_pick_up_changes_until_stopped(
    settings: Settings, producer: AIOKafkaProducer, navidrome: NavidromeLibrary
) -> None:
    config = navidrome.settings(settings)
    scanner = db_scanner(config, producer)
    stop = asyncio.Event()
    running = asyncio.create_task(scanner.run(stop, schedule="* * * * * *"))  # every second
    try:
        async with asyncio.timeout(20):
            while len(await read_tracks(settings.kafka, settings.topics.tracks)) < 5:
                await asyncio.sleep(0.2)
            navidrome.execute(
                "UPDATE media_file SET genre = 'Modal jazz' WHERE id = ?", SONGS[0].id
            )
            while True:
                event: TrackEvent | None = (
                    await read_tracks(settings.kafka, settings.topics.tracks)
                ).get(SONGS[0].id)
                if event is not None and event.metadata.genre == "Modal jazz":
                    break
                await asyncio.sleep(0.2)
    finally:
        stop.set()
    runs = await asyncio.wait_for(running, timeout=10)
    assert runs >= 2


async def test_sonicbus_scan_navidrome_from_the_command_line(
    settings: Settings, navidrome: NavidromeLibrary, server: FakeNavidrome
) -> None:
    ids = {song.id for song in SONGS}
    path_map = json.dumps(navidrome.path_map)
    db = str(navidrome.db_path)
    dry = await sonicbus(
        settings,
        "scan",
        "navidrome",
        "--db",
        db,
        "--dry-run",
        SONICBUS_NAVIDROME__PATH_MAP=path_map,
        cwd=navidrome.folder,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    printed = {line.split()[1] for line in dry.stdout.splitlines() if line.startswith("publish ")}
    assert printed == ids
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0

    api = await sonicbus(
        settings,
        "scan",
        "navidrome",
        "--url",
        server.url,
        "--user",
        "alice",
        "--once",
        SONICBUS_NAVIDROME__PASSWORD="sesame",
        SONICBUS_NAVIDROME__PATH_MAP=path_map,
        cwd=navidrome.folder,
    )
    assert api.returncode == 0, api.stdout + api.stderr
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert set(events) == ids
    assert {e.path for e in events.values()} == {str(navidrome.local_path(s)) for s in SONGS}

    wrong = await sonicbus(
        settings,
        "scan",
        "navidrome",
        "--url",
        server.url,
        "--user",
        "alice",
        "--password",
        "guess",
        cwd=navidrome.folder,
    )
    assert wrong.returncode == 1 and "Wrong username or password" in wrong.stdout


def test_old_navidrome_databases_with_absolute_paths_are_read(tmp_path: Path) -> None:
    db_path = tmp_path / "navidrome.db"
    with sqlite3.connect(db_path) as db:  # before 0.55: no library table, absolute paths
        db.execute(
            "CREATE TABLE media_file (id varchar not null primary key, path varchar, "
            "title varchar, album varchar, artist varchar, album_artist varchar, duration real, "
            "genre varchar, year integer, track_number integer, disc_number integer, "
            "suffix varchar, size integer, mbz_track_id varchar, created_at datetime, "
            "updated_at datetime)"
        )
        db.execute(
            "INSERT INTO media_file VALUES ('t1', '/music/a/b.flac', 'B', 'A', 'X', '', 61.5, "
            "'', 2001, 2, 0, 'flac', 1234, 'mbid-1', NULL, NULL)"
        )
    [track] = NavidromeDatabase(db_path).read().tracks
    assert (track.id, track.path, track.library_id, track.relative_path) == (
        "t1",
        "/music/a/b.flac",
        None,
        None,
    )
    assert track.metadata.mbz_recording_id == "mbid-1" and track.metadata.disc_number is None
