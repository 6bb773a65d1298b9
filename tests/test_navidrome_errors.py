"""Bad input against a real Navidrome: a stopped server, a wrong password, a user whose
player does not report real paths, an empty library, a file that is not Navidrome's
database, a copy of the real database missing a column we read, a locked database.

Each gives a message naming the problem, a non-zero exit status on the command line, an
error reply for the query service; nothing wrong is published and nothing is deleted.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.navidrome.database import NavidromeDatabase
from pipeline.navidrome.download import download
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner, SubsonicSource
from pipeline.recommender.engine import QueryEngine
from pipeline.recommender.library import Library
from pipeline.recommender.seeds import SeedSource
from pipeline.schemas import TrackMetadata
from pipeline.schemas.queries import RecommendRequest
from pipeline.store import VectorRow, VectorStore
from pipeline.wiring import text_support
from tests.fixtures.bus import end_offsets
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs

SONGS = [
    Song(f"Artist {i}/Album/0{i} - Song {i}.mp3",
         TrackMetadata(title=f"Song {i}", artist=f"Artist {i}", album="Album"))
    for i in range(3)
]  # fmt: skip


async def scan_error(settings: Settings, producer: AIOKafkaProducer, api: bool = False) -> str:
    """The error of one scan, which must have published nothing."""
    n = settings.navidrome
    source = SubsonicSource(n) if api else DatabaseSource(n)
    report = await NavidromeScanner(settings, source, producer).scan_once()
    assert report.error is not None and report.published == report.removed == 0
    return report.error


def copy_database(server: NavidromeServer, to: Path) -> Path:
    """A consistent copy of the running server's database (SQLite's online backup)."""
    source = sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True)
    with source, sqlite3.connect(to) as copy:
        source.backup(copy)
    source.close()
    return to


def seed_reply_error(settings: Settings, tmp_path: Path, user: str) -> tuple[str, str]:
    """(code, message) of a seed_mode request the query engine cannot answer (blocking: the
    service answers in a thread)."""
    store = VectorStore(settings.milvus, str(tmp_path / "milvus.db"))
    collection = store.collection_name("musicnn")
    store.ensure_collection(collection, dim=4)
    store.upsert(collection, [VectorRow("some-track", np.ones(4, np.float32))])
    try:
        engine = QueryEngine(
            settings.query,
            Library(store, settings.query),
            text_support(settings),
            SeedSource(settings.navidrome, ttl_s=0),
        )
        reply = engine.answer(RecommendRequest(request_id="r", seed_mode="recent", user_id=user))
    finally:
        store.close()
    assert not reply.ok and reply.error is not None
    return reply.error.code, reply.error.message


async def test_a_stopped_server_and_a_wrong_password(
    settings: Settings, producer: AIOKafkaProducer, navidrome_factory, tmp_path: Path
) -> None:
    server: NavidromeServer = navidrome_factory()
    write_songs(server.music, SONGS)
    server.rescan()
    fast = {"timeout_s": 2.0, "retries": 1}

    wrong = server.settings(settings, api=True, password=SecretStr("guess"), **fast)
    assert "error 40: Wrong username or password" in await scan_error(wrong, producer, api=True)
    code, message = await asyncio.to_thread(seed_reply_error, wrong, tmp_path, server.user)
    assert code == "unavailable" and "Wrong username or password" in message
    done = await sonicbus(settings, "scan", "navidrome", "--url", server.url, "--user",
                          server.user, "--password", "guess", "--once")  # fmt: skip
    assert done.returncode == 1 and "Wrong username or password" in done.stdout + done.stderr

    server.stop()
    down = server.settings(settings, api=True, **fast)
    assert "cannot connect" in await scan_error(down, producer, api=True)
    code, message = await asyncio.to_thread(seed_reply_error, down, tmp_path, server.user)
    assert code == "unavailable" and server.url in message
    done = await sonicbus(settings, "playlist", "similar", "x", "--to-navidrome", "P",
                          SONICBUS_NAVIDROME__URL=server.url,
                          SONICBUS_NAVIDROME__USER=server.user,
                          SONICBUS_NAVIDROME__PASSWORD=server.password)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stdout + done.stderr
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0


async def test_a_user_whose_player_hides_real_paths_is_told_how_to_fix_it(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    write_songs(navidrome_folder, SONGS)
    navidrome_server.rescan()
    user = navidrome_server.create_user()  # not an admin: sonicbus needs none
    config = navidrome_server.settings(settings, api=True, user=user, download_fallback=False)
    error = await scan_error(config, producer, api=True)
    assert "Report Real Path" in error and user in error and "'sonicbus'" in error

    navidrome_server.report_real_path(user)  # what the user does in Settings > Players
    report = await NavidromeScanner(config, SubsonicSource(config.navidrome), producer).scan_once()
    assert report.ok, report.error
    published = await read_tracks(settings.kafka, settings.topics.tracks)
    assert set(navidrome_server.ids_by_path(navidrome_folder).values()) <= set(published)


async def test_an_empty_library_publishes_nothing_and_removes_nothing(
    settings: Settings, producer: AIOKafkaProducer, navidrome_factory
) -> None:
    server: NavidromeServer = navidrome_factory()  # an empty music folder
    for api in (False, True):
        error = await scan_error(server.settings(settings, api=api), producer, api=api)
        assert "lists no tracks" in error
    done = await sonicbus(settings, "scan", "navidrome", "--db", str(server.db_path), "--once")
    assert done.returncode == 1 and "lists no tracks" in done.stdout + done.stderr

    # The same once a library was published: its tracks stay.
    files = write_songs(server.music, SONGS)
    server.rescan()
    config = server.settings(settings, max_deletion_ratio=1.0)  # even with the guard open
    await NavidromeScanner(config, DatabaseSource(config.navidrome), producer).scan_once()
    for path in files.values():
        path.unlink()
    server.rescan()
    assert "lists no tracks" in await scan_error(config, producer)
    assert len(await read_tracks(settings.kafka, settings.topics.tracks)) == len(SONGS)


async def test_databases_that_are_not_navidromes_are_refused_by_name(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
    tmp_path: Path,
) -> None:
    write_songs(navidrome_folder, SONGS)
    navidrome_server.rescan()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE songs (id text, path text)")
    assert "not a Navidrome database" in await scan_error(
        navidrome_server.settings(settings, db_path=other), producer
    )
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite at all\n" * 200)
    assert "not a readable SQLite database" in await scan_error(
        navidrome_server.settings(settings, db_path=junk), producer
    )
    done = await sonicbus(settings, "scan", "navidrome", "--db", str(junk), "--once")
    assert done.returncode == 1 and "not a readable SQLite database" in done.stdout + done.stderr

    # A copy of the real database from a schema that lacks a column we read.
    for column in ("title", "missing"):
        copy = copy_database(navidrome_server, tmp_path / f"no-{column}.db")
        with sqlite3.connect(copy) as db:
            # The triggers and indexes that name the column go with it.
            for kind, name in db.execute(
                "SELECT type, name FROM sqlite_master WHERE tbl_name = 'media_file' "
                "AND type IN ('trigger', 'index') AND sql LIKE ?",
                (f"%{column}%",),
            ).fetchall():
                db.execute(f"DROP {kind.upper()} {name}")
            db.execute(f"ALTER TABLE media_file DROP COLUMN {column}")
        error = await scan_error(navidrome_server.settings(settings, db_path=copy), producer)
        assert f"no column {column}" in error and "schema" in error

    # A database locked by a writer is waited for (busy timeout), then reported.
    locked = copy_database(navidrome_server, tmp_path / "locked.db")
    writer = sqlite3.connect(locked, isolation_level=None)
    writer.execute("PRAGMA journal_mode = DELETE")
    writer.execute("BEGIN EXCLUSIVE")
    try:
        config = navidrome_server.settings(settings, db_path=locked, busy_timeout_s=0.3)
        assert "is locked" in await scan_error(config, producer)
        with pytest.raises(Exception, match="is locked"):
            NavidromeDatabase(locked, 0.3).read()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0


async def test_made_up_paths_are_published_for_the_embedders_to_download(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
    tmp_path: Path,
) -> None:
    """A Navidrome on another machine, a player without 'Report Real Path': the scan
    publishes every track under a `subsonic:<id>/...` path, and `download` serves it."""
    write_songs(navidrome_folder, SONGS)
    navidrome_server.rescan()
    user = navidrome_server.create_user()
    config = navidrome_server.settings(settings, api=True, user=user)
    report = await NavidromeScanner(config, SubsonicSource(config.navidrome), producer).scan_once()
    assert report.ok, report.error
    published = await read_tracks(settings.kafka, settings.topics.tracks)
    ids = navidrome_server.ids_by_path(navidrome_folder)
    assert set(ids.values()) <= set(published)
    first = (navidrome_folder / SONGS[0].path).resolve()
    event = published[ids[first]]
    assert event.path.startswith(f"subsonic:{event.track_id}/") and event.fingerprint is None
    copy = tmp_path / "copy"
    size = await download(config.navidrome, event.track_id, str(copy))
    assert size == first.stat().st_size
