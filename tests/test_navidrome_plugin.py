"""The sonicbus plugin (plugins/navidrome) inside a real Navidrome 0.63.2.

First the plugin's own mechanics, against a recording stand-in for sonicbus' /navidrome/v1
endpoints: the package loads, is enabled through Navidrome's API, both capabilities are
detected (the sonicSimilarity extension is advertised, Instant Mix asks the plugin), what
it sends (body, bearer token, config), that nothing is cached, and that a slow or failing
sonicbus ends at the configured timeout with one log line.

Then end to end, on one music folder of real audio that Navidrome scans: the Navidrome
scan producer publishes it, the MusiCNN embedder embeds it into Milvus, the query service
answers on Kafka and the HTTP service (uvicorn, loopback) bridges the plugin's calls:
Instant Mix equals `sonicbus ask similar`, getSonicSimilarTracks and findSonicPath,
artist radio under the artist cap, and the query service stopped.

Navidrome is called from threads (asyncio.to_thread): its plugin calls back into the
HTTP service, which runs on this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from pipeline.bus import make_producer
from pipeline.config import EmbedSettings, HttpSettings, QuerySettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import QueryService
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome import NavidromeError, Song, free_port, write_songs
from tests.fixtures.navidrome_plugin import (
    Exchange,
    PluginNavidrome,
    SonicbusStandIn,
    read_package,
)
from tests.fixtures.services import base_settings, wait_for

pytestmark = pytest.mark.timeout(300)

TOKEN = "client-token-for-the-plugin"


def songs_of(body: dict[str, Any], key: str = "similarSongs2") -> list[dict[str, Any]]:
    return (body.get(key) or {}).get("song") or []


def sonic_matches(body: dict[str, Any]) -> list[dict[str, Any]]:
    return body.get("sonicMatch") or []


def extensions(server: PluginNavidrome) -> set[str]:
    body = server.subsonic("getOpenSubsonicExtensions")
    return {e["name"] for e in body.get("openSubsonicExtensions") or []}


def plugin_lines(server: PluginNavidrome, since: int) -> list[str]:
    """The plugin's own log lines after line `since` of Navidrome's log."""
    return [line for line in server.log_lines()[since:] if "sonicbus plugin:" in line
            and "plugin=sonicbus" in line]  # fmt: skip


def small_library(artists: int, per_artist: int, seconds: float) -> list[Song]:
    return [
        Song(
            f"Artist {a}/Album {a}/{t + 1:02d} - Song {a}-{t}.flac",
            TrackMetadata(
                title=f"Song {a}-{t}",
                artist=f"Artist {a}",
                album_artist=f"Artist {a}",
                album=f"Album {a}",
                track_number=t + 1,
            ),
            seconds=seconds,
        )
        for a in range(artists)
        for t in range(per_artist)
    ]


@dataclass
class Library:
    """Navidrome's ids of the songs, albums and artists of a music folder."""

    songs: dict[str, str]  # title -> id
    albums: dict[str, str]  # name -> id
    artists: dict[str, str]  # name -> id
    artist_of: dict[str, str]  # song id -> artist name

    @classmethod
    def read(cls, server: PluginNavidrome) -> Library:
        listed = server.songs()
        return cls(
            {s["title"]: s["id"] for s in listed},
            {s["album"]: s["albumId"] for s in listed},
            {s["artist"]: s["artistId"] for s in listed},
            {s["id"]: s["artist"] for s in listed},
        )


# -- the plugin's mechanics, against a stand-in --------------------------------------------


@dataclass
class Mechanics:
    server: PluginNavidrome
    stand_in: SonicbusStandIn
    library: Library
    state: dict[str, Any]  # what the stand-in answers now: "matches", "status"


@pytest.fixture(scope="module")
def mechanics(
    plugin_navidrome_factory: Callable[..., PluginNavidrome],
    sonicbus_stand_in: Callable[..., SonicbusStandIn],
    tmp_path_factory: pytest.TempPathFactory,
) -> Mechanics:
    music = tmp_path_factory.mktemp("mechanics-music")
    write_songs(music, small_library(artists=3, per_artist=2, seconds=2.0))
    state: dict[str, Any] = {"matches": []}

    def reply(_: Exchange) -> tuple[int, Any]:
        return state.get("status", 200), {"matches": state["matches"], "warnings": []}

    stand_in = sonicbus_stand_in(reply)
    server = plugin_navidrome_factory(music)
    return Mechanics(server, stand_in, Library.read(server), state)


def answer_with(mech: Mechanics, titles: list[str], status: int = 200) -> None:
    """The stand-in answers these songs (by id, with descending similarity) from now on."""
    ids = mech.library.songs
    mech.state["matches"] = [
        {"song": {"id": ids[t], "name": t}, "similarity": round(1 - 0.1 * (i + 1), 3)}
        for i, t in enumerate(titles)
    ]
    mech.state["status"] = status


def test_the_package_is_reproducible_and_lists_the_capabilities_exports(
    plugin_package: Path, tmp_path: Path
) -> None:
    from tests.fixtures.navidrome_plugin import build_plugin

    again = build_plugin(tmp_path / "again")
    assert again.read_bytes() == plugin_package.read_bytes()  # byte-identical .ndp
    manifest, wasm = read_package(plugin_package)
    assert manifest["permissions"]["http"]["requiredHosts"] == []  # filled at install
    assert set(manifest["config"]["schema"]["properties"]) == {
        "sonicbus_url", "token", "models", "timeout_ms", "diversity", "max_per_artist"
    }  # fmt: skip
    for export in ("nd_get_sonic_similar_tracks", "nd_find_sonic_path",
                   "nd_get_similar_songs_by_track", "nd_get_similar_songs_by_album",
                   "nd_get_similar_songs_by_artist"):  # fmt: skip
        assert export.encode() in wasm


def test_enabled_through_the_api_both_capabilities_answer(mechanics: Mechanics) -> None:
    server, lib = mechanics.server, mechanics.library
    record = server.plugin()
    if not record.get("enabled"):  # a new plugin is stored disabled
        assert "sonicSimilarity" not in extensions(server)
    server.enable({"sonicbus_url": mechanics.stand_in.url, "token": TOKEN, "timeout_ms": 3000})
    assert server.plugin()["enabled"] is True
    # SonicSimilarity detected: the extension is advertised and its endpoint answers.
    assert "sonicSimilarity" in extensions(server)
    answer_with(mechanics, ["Song 1-0", "Song 2-1"])
    sonic = sonic_matches(server.subsonic("getSonicSimilarTracks", id=lib.songs["Song 0-0"]))
    assert [m["entry"]["id"] for m in sonic] == [lib.songs["Song 1-0"], lib.songs["Song 2-1"]]
    assert [m["similarity"] for m in sonic] == [0.9, 0.8]
    # MetadataAgent detected (and listed in Agents): Instant Mix asks the plugin.
    mix = songs_of(server.subsonic("getSimilarSongs2", id=lib.songs["Song 0-0"], count=5))
    assert [s["id"] for s in mix] == [lib.songs["Song 1-0"], lib.songs["Song 2-1"]]


def test_what_the_plugin_sends_to_sonicbus(mechanics: Mechanics) -> None:
    server, lib, seen = mechanics.server, mechanics.library, mechanics.stand_in.seen
    server.enable({
        "sonicbus_url": mechanics.stand_in.url + "/", "token": TOKEN, "timeout_ms": 3000,
        "models": "musicnn, muq", "diversity": 0.3, "max_per_artist": 2,
    })  # fmt: skip
    answer_with(mechanics, ["Song 1-1"])
    seed = lib.songs["Song 0-1"]
    calls = [
        ("getSimilarSongs2", {"id": seed, "count": 7}),
        ("getSimilarSongs2", {"id": lib.albums["Album 1"], "count": 8}),
        ("getSimilarSongs2", {"id": lib.artists["Artist 2"], "count": 9}),
        ("getSonicSimilarTracks", {"id": seed, "count": 4}),
        ("findSonicPath", {"startSongId": seed, "endSongId": lib.songs["Song 2-0"], "count": 5}),
    ]
    before = len(seen)
    for endpoint, params in calls:
        server.subsonic(endpoint, **params)
    sent = seen[before:]
    assert [e.path for e in sent] == ["/navidrome/v1/similar"] * 4 + ["/navidrome/v1/path"]
    assert {e.headers.get("authorization") for e in sent} == {f"Bearer {TOKEN}"}
    assert {e.headers.get("content-type") for e in sent} == {"application/json"}
    track, album, artist, sonic, path = (e.body for e in sent)
    options = {"models": ["musicnn", "muq"], "diversity": 0.3, "max_per_artist": 2}
    assert track["song"] == {"id": seed, "name": "Song 0-1", "artist": "Artist 0"}
    assert {k: track[k] for k in options} == options and track["count"] == 7
    assert album["album"] == {"id": lib.albums["Album 1"], "name": "Album 1", "artist": "Artist 1"}
    assert album["count"] == 8 and "song" not in album
    assert artist["artist"] == {"id": lib.artists["Artist 2"], "name": "Artist 2"}
    assert artist["count"] == 9
    # The sonic endpoints get Navidrome's full SongRef (album, artists, duration).
    assert sonic["song"]["id"] == seed and sonic["song"]["album"] == "Album 0"
    assert sonic["song"]["durationMs"] == 2000 and sonic["song"]["artists"][0]["name"] == "Artist 0"
    assert (path["start"]["id"], path["end"]["id"], path["count"]) == (
        seed, lib.songs["Song 2-0"], 5
    )  # fmt: skip
    assert path["models"] == ["musicnn", "muq"] and "diversity" not in path
    # The plugin tells the bridge its deadline, a little shorter than its own.
    assert 0 < track["timeout_s"] < 3.0

    server.enable({"sonicbus_url": mechanics.stand_in.url, "timeout_ms": 3000})  # no token
    server.subsonic("getSonicSimilarTracks", id=seed, count=3)
    assert "authorization" not in seen[-1].headers
    assert set(seen[-1].body) == {"song", "count", "timeout_s"}


def test_no_answer_is_cached(mechanics: Mechanics) -> None:
    server, lib = mechanics.server, mechanics.library
    server.enable({"sonicbus_url": mechanics.stand_in.url, "token": TOKEN, "timeout_ms": 3000})
    seed = lib.songs["Song 0-0"]
    for titles in (["Song 1-0"], ["Song 2-0", "Song 2-1"], ["Song 1-1"]):
        answer_with(mechanics, titles)
        mix = songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5))
        assert [s["id"] for s in mix] == [lib.songs[t] for t in titles]
        sonic = sonic_matches(server.subsonic("getSonicSimilarTracks", id=seed, count=5))
        assert [m["entry"]["id"] for m in sonic] == [lib.songs[t] for t in titles]


def test_a_slow_or_refusing_sonicbus_ends_at_the_timeout_with_one_log_line(
    mechanics: Mechanics,
) -> None:
    server, lib, stand_in = mechanics.server, mechanics.library, mechanics.stand_in
    server.enable({"sonicbus_url": stand_in.url, "token": TOKEN, "timeout_ms": 1500})
    seed = lib.songs["Song 0-0"]
    answer_with(mechanics, ["Song 1-0"])
    stand_in.delay_s = 6.0
    try:
        since = len(server.log_lines())
        start = time.monotonic()
        mix = songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5))
        took = time.monotonic() - start
        assert mix == []  # only the plugin is an agent here: nothing to fall back to
        assert 1.4 <= took <= 2.5, took  # the configured 1.5 s, not the stand-in's 6 s
        [line] = plugin_lines(server, since)
        assert "level=warning" in line and "within timeout_ms=1500" in line, line

        since = len(server.log_lines())
        start = time.monotonic()
        with pytest.raises(NavidromeError):  # no provider answer: Navidrome says so
            server.subsonic("getSonicSimilarTracks", id=seed, count=5)
        assert time.monotonic() - start <= 2.5
        assert len(plugin_lines(server, since)) == 1
    finally:
        stand_in.delay_s = 0.0

    # A refusal (a wrong token): at once, with what sonicbus said and a hint.
    answer_with(mechanics, ["Song 1-0"], status=401)
    since = len(server.log_lines())
    assert songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5)) == []
    [line] = plugin_lines(server, since)
    assert "answered HTTP 401" in line and "token" in line, line
    answer_with(mechanics, ["Song 1-0"])


def test_sonicbus_host_missing_from_the_manifest_is_one_clear_line(
    plugin_navidrome_factory: Callable[..., PluginNavidrome],
    mechanics: Mechanics,
    tmp_path: Path,
) -> None:
    # A package installed for another host (a prebuilt one, say): Navidrome refuses the call.
    server = plugin_navidrome_factory(tmp_path / "music", hosts=["sonicbus.example.org"])
    server.enable({"sonicbus_url": mechanics.stand_in.url, "timeout_ms": 2000})
    write_songs(server.music, small_library(1, 2, 2.0))
    server.rescan()
    seed = Library.read(server).songs["Song 0-0"]
    since = len(server.log_lines())
    assert songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5)) == []
    [line] = plugin_lines(server, since)
    assert "not allowed" in line and "requiredHosts" in line, line


# -- end to end: Navidrome -> plugin -> HTTP service -> Kafka -> query service -> back -------


@dataclass
class Stack:
    settings: Settings
    server: PluginNavidrome
    library: Library
    service: QueryService
    url: str
    config: dict[str, Any]


ARTISTS, PER_ARTIST = 5, 4


async def serve_http(settings: Settings, store: VectorStore, port: int) -> AsyncIterator[str]:
    """The HTTP service (create_app) on loopback, in this event loop, until closed."""
    import uvicorn

    from pipeline.http.app import create_app
    from pipeline.http.runtime import OpsRuntime

    runtime = OpsRuntime(settings, store=store)
    await runtime.start()
    config = uvicorn.Config(create_app(settings, runtime), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started, timeout=30, interval=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await runtime.stop()


@pytest.fixture(scope="module")
async def stack(
    kafka_broker: str,
    plugin_navidrome_factory: Callable[..., PluginNavidrome],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """20 songs of real audio (5 artists x 4) in a Navidrome with the plugin, published by
    the Navidrome scan producer, embedded by MusiCNN, answered by the query service."""
    settings = base_settings(
        query=QuerySettings(workers=2, default_timeout_s=20.0),
        embed=EmbedSettings(batch_tracks=4, idle_unload_s=0, device="cpu"),
        http=HttpSettings(client_token=SecretStr(TOKEN), reply_timeout_s=10.0),
    )
    await ensure_topics(settings.kafka, settings.topics)
    music = tmp_path_factory.mktemp("e2e-music")
    await asyncio.to_thread(write_songs, music, small_library(ARTISTS, PER_ARTIST, seconds=8.0), 40)
    server = await asyncio.to_thread(plugin_navidrome_factory, music)
    library = await asyncio.to_thread(Library.read, server)
    assert len(library.songs) == ARTISTS * PER_ARTIST

    producer = make_producer(settings.kafka, role="test")
    await producer.start()
    try:
        source = server.settings(settings)
        scanner = NavidromeScanner(source, DatabaseSource(source.navidrome), producer)
        report = await scanner.scan_once()
        assert report.ok and report.published == ARTISTS * PER_ARTIST, report
    finally:
        await producer.stop()

    store = VectorStore(settings.milvus, str(tmp_path_factory.mktemp("e2e-milvus") / "m.db"))
    collection = store.collection_name("musicnn")
    stop = asyncio.Event()
    embedder = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    try:
        await wait_for(
            lambda: (
                store.has_collection(collection) and store.count(collection) == ARTISTS * PER_ARTIST
            ),
            timeout=240,
        )
    finally:
        stop.set()
        await asyncio.wait_for(embedder, 60)

    service = QueryService(settings, store)
    await service.start()
    await asyncio.wait_for(service.ready.wait(), 60)
    await asyncio.wait_for(service.following.wait(), 30)
    http = serve_http(settings, store, free_port(39700))
    try:
        url = await anext(http)
        config = {"sonicbus_url": url, "token": TOKEN, "timeout_ms": 5000}
        await asyncio.to_thread(server.enable, config)
        yield Stack(settings, server, library, service, url, config)
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await anext(http)
        with contextlib.suppress(Exception):
            await service.stop()
        store.close()


async def nd(stack: Stack, endpoint: str, **params: Any) -> dict[str, Any]:
    return await asyncio.to_thread(stack.server.subsonic, endpoint, **params)


async def ask_similar(stack: Stack, track_id: str, n: int) -> list[str]:
    asked = await sonicbus(stack.settings, "ask", "similar", track_id, "-n", str(n), "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    return [t["track_id"] for t in json.loads(asked.stdout)["tracks"]]


def in_order_of(got: list[str], expected: list[str]) -> bool:
    """`got` is `expected` with some left out (what Navidrome filters), in the same order."""
    return got == [i for i in expected if i in set(got)]


async def test_instant_mix_is_what_sonicbus_ask_similar_says(stack: Stack) -> None:
    for title in ("Song 0-0", "Song 3-2"):
        seed = stack.library.songs[title]
        expected = await ask_similar(stack, seed, 8)
        assert len(expected) == 8 and seed not in expected
        start = time.monotonic()
        mix = [s["id"] for s in songs_of(await nd(stack, "getSimilarSongs2", id=seed, count=8))]
        took = time.monotonic() - start
        assert in_order_of(mix, expected), (mix, expected)
        assert len(mix) >= len(expected) - 1, (mix, expected)
        assert took < 5.0
        # getSimilarSongs (ID3-less) is answered by the same agent.
        legacy = songs_of(await nd(stack, "getSimilarSongs", id=seed, count=8), "similarSongs")
        assert [s["id"] for s in legacy] == mix


async def test_sonic_similar_tracks_and_the_extension(stack: Stack) -> None:
    assert "sonicSimilarity" in await asyncio.to_thread(extensions, stack.server)
    seed = stack.library.songs["Song 1-1"]
    expected = await ask_similar(stack, seed, 6)
    matches = sonic_matches(await nd(stack, "getSonicSimilarTracks", id=seed, count=6))
    got = [m["entry"]["id"] for m in matches]
    assert in_order_of(got, expected) and len(got) >= len(expected) - 1, (got, expected)
    similarity = [m["similarity"] for m in matches]
    assert all(0.0 <= s <= 1.0 for s in similarity), similarity
    assert similarity == sorted(similarity, reverse=True)


async def test_find_sonic_path_from_start_to_end(stack: Stack) -> None:
    songs = stack.library.songs
    start, end = songs["Song 0-0"], songs["Song 4-3"]
    for count in (5, 8):
        body = await nd(stack, "findSonicPath", startSongId=start, endSongId=end, count=count)
        path = [m["entry"]["id"] for m in sonic_matches(body)]
        assert len(path) == count, path
        assert path[0] == start and path[-1] == end
        assert len(set(path)) == len(path)  # no repeats
        assert all(0.0 <= m["similarity"] <= 1.0 for m in sonic_matches(body))


async def test_album_and_artist_radio_hold_the_artist_cap(stack: Stack) -> None:
    lib = stack.library
    await asyncio.to_thread(stack.server.enable, {**stack.config, "max_per_artist": 2})
    try:
        for seed in (lib.artists["Artist 2"], lib.albums["Album 3"]):
            radio = songs_of(await nd(stack, "getSimilarSongs2", id=seed, count=10))
            assert len(radio) >= 6, radio
            per_artist = Counter(s["artist"] for s in radio)
            assert max(per_artist.values()) <= 2, per_artist
            assert len({s["id"] for s in radio}) == len(radio)
    finally:
        await asyncio.to_thread(stack.server.enable, stack.config)


async def test_query_service_stopped_the_plugin_gives_up_at_its_timeout(stack: Stack) -> None:
    """Last in this module: it stops the query service."""
    server, lib = stack.server, stack.library
    seed = lib.songs["Song 2-2"]
    before = [s["id"] for s in songs_of(await nd(stack, "getSimilarSongs2", id=seed, count=5))]
    assert before  # answered while the query service runs
    timeout_ms = 2000
    await asyncio.to_thread(server.enable, {**stack.config, "timeout_ms": timeout_ms})
    await stack.service.stop()

    since = len(await asyncio.to_thread(server.log_lines))
    start = time.monotonic()
    body = await nd(stack, "getSimilarSongs2", id=seed, count=5)
    took = time.monotonic() - start
    print(f"plugin gave up after {took:.2f} s (timeout_ms={timeout_ms})")
    # Navidrome's other agents are off: empty, and no sonicbus track from a stale cache.
    assert songs_of(body) == []
    assert 0.8 * timeout_ms / 1000 <= took <= timeout_ms / 1000 + 1.0, took
    lines = plugin_lines(server, since)
    assert len(lines) == 1, lines
    assert "level=warning" in lines[0] and "similar songs by track" in lines[0], lines

    start = time.monotonic()
    with pytest.raises(NavidromeError):
        await nd(stack, "getSonicSimilarTracks", id=seed, count=5)
    assert time.monotonic() - start <= timeout_ms / 1000 + 1.0
