"""A Navidrome library published on a real broker, read from its SQLite database and from
its Subsonic API (a local server speaking the endpoints Navidrome serves)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.navidrome.database import NavidromeDatabase
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner, SubsonicSource
from pipeline.producers.samplefiles import write_tagged_audio
from pipeline.schemas import TrackEvent, TrackMetadata
from pipeline.topics import ensure_topics
from tests.conftest import base_settings
from tests.test_ingest_filesystem import dead_letters, end_offsets, sonicbus

# Navidrome's own table and column names (SQLite, since the 0.55 scanner: media_file.path is
# relative to its library's path).
SCHEMA = """
CREATE TABLE library (
    id integer primary key autoincrement, name text not null unique, path text not null unique,
    remote_path text null default '', last_scan_at datetime not null default '0000-00-00 00:00:00',
    updated_at datetime not null default current_timestamp,
    created_at datetime not null default current_timestamp);
CREATE TABLE user (
    id varchar(255) not null primary key, user_name varchar(255) default '' not null unique,
    name varchar(255) default '' not null, email varchar(255) default '' not null,
    password varchar(255) default '' not null, is_admin bool default FALSE not null,
    created_at datetime not null, updated_at datetime not null);
CREATE TABLE media_file (
    id varchar(255) not null primary key, path varchar(255) default '' not null,
    title varchar(255) default '' not null, album varchar(255) default '' not null,
    artist varchar(255) default '' not null, artist_id varchar(255) default '' not null,
    album_artist varchar(255) default '' not null, album_id varchar(255) default '' not null,
    has_cover_art bool default FALSE not null, track_number integer default 0 not null,
    disc_number integer default 0 not null, year integer default 0 not null,
    size integer default 0 not null, suffix varchar(255) default '' not null,
    duration real default 0 not null, bit_rate integer default 0 not null,
    genre varchar(255) default '' not null, compilation bool default FALSE not null,
    created_at datetime, updated_at datetime,
    mbz_recording_id varchar(255) default '' not null,
    mbz_album_id varchar(255) default '' not null,
    mbz_artist_id varchar(255) default '' not null,
    mbz_album_artist_id varchar(255) default '' not null,
    mbz_release_track_id varchar(255) default '' not null,
    library_id integer not null default 1 references library(id) on delete cascade,
    folder_id varchar default '' not null, pid varchar default '' not null,
    missing boolean default false not null, birth_time datetime default current_timestamp not null);
CREATE TABLE annotation (
    user_id varchar(255) not null references user(id) on delete cascade,
    item_id varchar(255) default '' not null, item_type varchar(255) default '' not null,
    play_count integer default 0, play_date datetime, rating integer default 0,
    starred bool default FALSE not null, starred_at datetime, rated_at datetime,
    unique (user_id, item_id, item_type));
"""

LIBRARIES = {1: ("Music", "/music"), 2: ("Live", "/live")}


@dataclass(frozen=True)
class Song:
    id: str
    library_id: int
    path: str  # relative to the library, as Navidrome stores it
    tags: TrackMetadata
    alice_plays: int = 0
    alice_rating: int = 0
    alice_starred: bool = False


SONGS = [
    Song(
        "2b7ad7e1d1b9c1f2a3e4d5c6b7a8f901",
        1,
        "Miles Davis/Kind of Blue/01 - So What.flac",
        TrackMetadata(
            title="So What",
            artist="Miles Davis",
            album_artist="Miles Davis",
            album="Kind of Blue",
            track_number=1,
            disc_number=1,
            year=1959,
            genre="Jazz",
            mbz_recording_id="0f2a4b5c-0000-4000-8000-000000000001",
            mbz_album_id="0f2a4b5c-0000-4000-8000-0000000000a1",
            mbz_artist_id="561d854a-6a28-4aa7-8c99-323e6ce46c2a",
        ),
        alice_plays=12,
        alice_rating=5,
        alice_starred=True,
    ),
    Song(
        "5c1e0f3a9b8d7c6e5f4a3b2c1d0e9f87",
        1,
        "Nina Simone/Pastel Blues/05 - Sinnerman.mp3",
        TrackMetadata(
            title="Sinnerman",
            artist="Nina Simone",
            album_artist="Nina Simone",
            album="Pastel Blues",
            track_number=5,
            year=1965,
            genre="Soul",
        ),
        alice_plays=3,
    ),
    Song(
        "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
        1,
        "Radiohead/OK Computer/02 - Paranoid Android.ogg",
        TrackMetadata(
            title="Paranoid Android",
            artist="Radiohead",
            album_artist="Radiohead",
            album="OK Computer",
            track_number=2,
            year=1997,
            genre="Rock",
        ),
    ),
    Song(
        "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        1,
        "Björk/Post/04 - Hyperballad.wav",
        TrackMetadata(title="Hyperballad", artist="Björk", album="Post", track_number=4),
        alice_rating=4,
    ),
    Song(
        "f0e1d2c3b4a5968778695a4b3c2d1e0f",
        2,
        "2024-05-01 Paris/03 - Improvisation.flac",
        TrackMetadata(title="Improvisation", artist="Trio", album="Live in Paris", track_number=3),
        alice_starred=True,
    ),
]


class NavidromeLibrary:
    """Audio files on 'this machine' plus a navidrome.db that knows them by container paths."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.db_path = folder / "navidrome.db"
        self.local = {1: folder / "music", 2: folder / "live"}
        self.path_map = {LIBRARIES[i][1]: str(self.local[i]) for i in LIBRARIES}

    def local_path(self, song: Song) -> Path:
        return self.local[song.library_id] / song.path

    def build(self) -> None:
        with sqlite3.connect(self.db_path) as db:
            db.executescript(SCHEMA)
            for library_id, (name, path) in LIBRARIES.items():
                db.execute(
                    "INSERT INTO library (id, name, path) VALUES (?, ?, ?)",
                    (library_id, name, path),
                )
            for user in ("alice", "bob"):
                db.execute(
                    "INSERT INTO user (id, user_name, created_at, updated_at) "
                    "VALUES (?, ?, '2024-01-01', '2024-01-01')",
                    (f"u-{user}", user),
                )
            for seed, song in enumerate(SONGS):
                self.add(db, song, seed)

    def add(self, db: sqlite3.Connection, song: Song, seed: int) -> None:
        audio = write_tagged_audio(self.local_path(song), song.tags, seconds=1.5, seed=seed)
        t = song.tags
        db.execute(
            "INSERT INTO media_file (id, path, title, album, artist, album_artist, duration, "
            "genre, year, track_number, disc_number, suffix, size, mbz_recording_id, "
            "mbz_album_id, mbz_artist_id, library_id, missing, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, "
            "'2024-05-01 10:00:00', '2024-05-01 10:00:00')",
            (
                song.id,
                song.path,
                t.title or "",
                t.album or "",
                t.artist or "",
                t.album_artist or "",
                soundfile.info(audio).duration,
                t.genre or "",
                t.year or 0,
                t.track_number or 0,
                t.disc_number or 0,
                audio.suffix[1:],
                audio.stat().st_size,
                t.mbz_recording_id or "",
                t.mbz_album_id or "",
                t.mbz_artist_id or "",
                song.library_id,
            ),
        )
        db.execute(
            "INSERT INTO annotation (user_id, item_id, item_type, play_count, play_date, rating, "
            "starred, starred_at) VALUES ('u-alice', ?, 'media_file', ?, ?, ?, ?, ?)",
            (
                song.id,
                song.alice_plays,
                "2024-06-01 20:00:00" if song.alice_plays else None,
                song.alice_rating,
                song.alice_starred,
                "2024-06-02 08:00:00" if song.alice_starred else None,
            ),
        )
        db.execute(  # another user's plays must not leak into alice's
            "INSERT INTO annotation (user_id, item_id, item_type, play_count, rating) "
            "VALUES ('u-bob', ?, 'media_file', 100, 1)",
            (song.id,),
        )

    def execute(self, sql: str, *params: object) -> None:
        with sqlite3.connect(self.db_path) as db:
            db.execute(sql, params)

    def settings(self, base: Settings, **navidrome: object) -> Settings:
        config = base.navidrome.model_copy(
            update={
                "db_path": self.db_path,
                "path_map": self.path_map,
                "user": "alice",
                **navidrome,
            }
        )
        return base.model_copy(update={"navidrome": config})


class FakeNavidrome(ThreadingHTTPServer):
    """Answers ping, getMusicFolders and search3 (empty query, paged, per music folder) from
    a navidrome.db, with token authentication, like Navidrome does for a player that has
    'Report Real Path' on. `mode` makes it fail: 'error' (HTTP 500) or 'slow'."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(("127.0.0.1", 0), _SubsonicHandler)
        self.users = {"alice": "sesame"}
        self.db_path = db_path
        self.mode = "ok"
        self.report_real_path = True
        self.calls: list[tuple[str, dict[str, str]]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SubsonicHandler(BaseHTTPRequestHandler):
    server: FakeNavidrome

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parsed = urllib.parse.urlparse(self.path)
        endpoint = parsed.path.rsplit("/", 1)[-1].removesuffix(".view")
        params = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
        self.server.calls.append((endpoint, params))
        if self.server.mode == "error":
            self.send_response(500)
            self.end_headers()
            return
        if self.server.mode == "slow":
            time.sleep(1.0)
        password = self.server.users.get(params.get("u", ""))
        salt, token = params.get("s", ""), params.get("t", "")
        if password is None or hashlib.md5((password + salt).encode()).hexdigest() != token:
            self._reply(
                {"status": "failed", "error": {"code": 40, "message": "Wrong username or password"}}
            )
        elif params.get("f") != "json" or not params.get("v") or not params.get("c"):
            self._reply({"status": "failed", "error": {"code": 10, "message": "Missing parameter"}})
        elif endpoint == "ping":
            self._reply({})
        elif endpoint == "getMusicFolders":
            folders = [{"id": i, "name": name} for i, (name, _path) in LIBRARIES.items()]
            self._reply({"musicFolders": {"musicFolder": folders}})
        elif endpoint == "search3":
            self._reply({"searchResult3": {"song": self._songs(params)}})
        else:
            self._reply({"status": "failed", "error": {"code": 0, "message": "not found"}})

    def _songs(self, params: dict[str, str]) -> list[dict[str, object]]:
        assert params["query"] == ""
        with sqlite3.connect(self.server.db_path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT m.*, l.path AS library_path, a.play_count, a.play_date, a.rating, "
                "a.starred, a.starred_at FROM media_file m JOIN library l ON l.id = m.library_id "
                "LEFT JOIN annotation a ON a.item_id = m.id AND a.user_id = 'u-' || ? "
                "WHERE m.missing = 0 AND (? = '' OR m.library_id = ?) "
                "ORDER BY m.id LIMIT ? OFFSET ?",
                (
                    params["u"],
                    params.get("musicFolderId", ""),
                    params.get("musicFolderId", ""),
                    int(params["songCount"]),
                    int(params["songOffset"]),
                ),
            ).fetchall()
        return [self._song(row) for row in rows]

    def _song(self, row: sqlite3.Row) -> dict[str, object]:
        real = f"{row['library_path']}/{row['path']}"
        name = f"{row['track_number']:02d} - {row['title']}.{row['suffix']}"
        fake = f"{row['artist']}/{row['album']}/{name}"  # Navidrome's default, private path
        song: dict[str, object] = {
            "id": row["id"],
            "isDir": False,
            "title": row["title"],
            "album": row["album"],
            "artist": row["artist"],
            "track": row["track_number"],
            "discNumber": row["disc_number"],
            "year": row["year"],
            "genre": row["genre"],
            "size": row["size"],
            "suffix": row["suffix"],
            "duration": int(row["duration"]),
            "path": real if self.server.report_real_path else fake,
            "type": "music",
            "playCount": row["play_count"] or 0,
            "userRating": row["rating"] or 0,
            "musicBrainzId": row["mbz_recording_id"],
            "displayAlbumArtist": row["album_artist"],
            "albumArtists": [{"id": "ar-1", "name": row["album_artist"]}]
            if row["album_artist"]
            else [],
        }
        if row["play_count"]:
            song["played"] = row["play_date"].replace(" ", "T") + "Z"
        if row["starred"]:
            song["starred"] = row["starred_at"].replace(" ", "T") + "Z"
        return song

    def _reply(self, body: dict[str, object]) -> None:
        payload = {"subsonic-response": {"status": "ok", "version": "1.16.1", **body}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


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
        navidrome.folder,
        "scan",
        "navidrome",
        "--db",
        db,
        "--dry-run",
        SONICBUS_NAVIDROME__PATH_MAP=path_map,
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    printed = {line.split()[1] for line in dry.stdout.splitlines() if line.startswith("publish ")}
    assert printed == ids
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0

    api = await sonicbus(
        settings,
        navidrome.folder,
        "scan",
        "navidrome",
        "--url",
        server.url,
        "--user",
        "alice",
        "--once",
        SONICBUS_NAVIDROME__PASSWORD="sesame",
        SONICBUS_NAVIDROME__PATH_MAP=path_map,
    )
    assert api.returncode == 0, api.stdout + api.stderr
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert set(events) == ids
    assert {e.path for e in events.values()} == {str(navidrome.local_path(s)) for s in SONGS}

    wrong = await sonicbus(
        settings,
        navidrome.folder,
        "scan",
        "navidrome",
        "--url",
        server.url,
        "--user",
        "alice",
        "--password",
        "guess",
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
