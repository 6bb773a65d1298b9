"""The sonicbus plugin (plugins/navidrome) inside a real Navidrome 0.63.2, end to end
(its own mechanics, against a stand-in for sonicbus: tests/test_navidrome_plugin_mechanics.py).

End to end, on one music folder of real audio that Navidrome scans: the Navidrome
scan producer publishes it, the MusiCNN embedder embeds it into Milvus, the query service
answers on Kafka and the HTTP service (uvicorn, loopback) bridges the plugin's calls:
Instant Mix equals `sonicbus ask similar`, getSonicSimilarTracks and findSonicPath,
artist radio under the artist cap, bad input (`count` 0 or 10,000, a path from a song to
itself, a song not embedded yet, a removed track, a wrong token), and the query service
stopped.

Navidrome is called from threads (asyncio.to_thread): its plugin calls back into the
HTTP service, which runs on this event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
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
    Library,
    PluginNavidrome,
    extensions,
    plugin_lines,
    serve_http,
    small_library,
    songs_of,
    sonic_matches,
)
from tests.fixtures.services import base_settings, wait_for

pytestmark = pytest.mark.timeout(300)

TOKEN = "client-token-for-the-plugin"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


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


# -- bad input, end to end (after the tests that compare with `ask similar`: it changes the library)

CRASHED = ("panic", "goroutine ", "fatal error", "Traceback")


async def bad_input(stack: Stack, endpoint: str, **params: Any) -> tuple[dict[str, Any], list[str]]:
    """Navidrome answers HTTP 200 with a Subsonic status (ok, or an error saying why) within
    the plugin's timeout and its log shows no crash; returns the answer and the plugin's lines."""
    server, salt = stack.server, secrets.token_hex(8)
    since = len(await asyncio.to_thread(server.log_lines))
    auth = {"u": server.user, "s": salt, "v": "1.16.1", "c": "sonicbus-test", "f": "json",
            "t": hashlib.md5((server.password + salt).encode()).hexdigest()}  # fmt: skip
    start = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{server.url}/rest/{endpoint}", params={**auth, **params})
    took = time.monotonic() - start
    assert answer.status_code == 200, answer.text
    body = answer.json()["subsonic-response"]
    assert body["status"] == "ok" or body["error"]["message"], body
    assert took < stack.config["timeout_ms"] / 1000, (endpoint, params, took)
    logged = (await asyncio.to_thread(server.log_lines))[since:]
    assert not [line for line in logged if any(c in line for c in CRASHED)], logged
    return body, plugin_lines(server, since)


def asks(seed: str, end: str) -> list[tuple[str, dict[str, str]]]:
    """A song's similar songs, its sonic matches and a path from it to `end`."""
    return [("getSimilarSongs2", {"id": seed}), ("getSonicSimilarTracks", {"id": seed}),
            ("findSonicPath", {"startSongId": seed, "endSongId": end})]  # fmt: skip


def ids(body: dict[str, Any]) -> list[str]:
    songs = songs_of(body) or songs_of(body, "similarSongs")
    return [s["id"] for s in songs] or [m["entry"]["id"] for m in sonic_matches(body)]


async def test_count_0_or_10000_and_a_path_to_itself(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    lib = stack.library
    seed, end = lib.songs["Song 0-1"], lib.songs["Song 3-3"]
    calls = [("getSimilarSongs", {"id": seed}),
             ("getSimilarSongs2", {"id": lib.artists["Artist 1"]}), *asks(seed, end)]  # fmt: skip
    for count in (0, 10_000):
        for endpoint, params in calls:
            body, lines = await bad_input(stack, endpoint, count=count, **params)
            got = ids(body)
            assert body["status"] == "ok" and len(set(got)) == len(got), body
            if count == 0:  # nothing asked for: sonicbus is not asked
                assert (got, lines) == ([], []), (endpoint, got, lines)
                continue
            assert 0 < len(got) <= len(lib.songs), (endpoint, got)
            assert len(lines) == 1 and "level=info" in lines[0], lines  # clamped, said once
            if endpoint == "findSonicPath":
                assert (got[0], got[-1]) == (seed, end), got
    for count in ({"count": 5}, {}):  # a path from a song to itself: that song alone
        body, lines = await bad_input(stack, "findSonicPath", startSongId=seed, endSongId=seed,
                                      **count)  # fmt: skip
        assert ids(body) == [seed] and len(lines) == 1 and "the same song" in lines[0], lines
    async with httpx.AsyncClient(base_url=f"{stack.url}/navidrome/v1", headers=BEARER) as bridge:
        answer = await bridge.post("/similar", json={"song": {"id": seed}, "count": 10_000})
        assert answer.status_code == 200 and "above the cap" in answer.text, answer.text
        answer = await bridge.post("/path", json={"start": {"id": seed}, "end": {"id": seed}})
        assert answer.status_code == 200 and len(answer.json()["matches"]) == 1, answer.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text  # no traceback in sonicbus


async def test_not_embedded_removed_and_a_wrong_token(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    server, lib = stack.server, stack.library
    # A file Navidrome scanned that sonicbus never embedded, and one deleted (marked missing).
    tags = TrackMetadata(title="Fresh", artist="Artist 9", album="Album 9", track_number=1)
    await asyncio.to_thread(write_songs, server.music, [Song("Artist 9/Fresh.flac", tags, 3.0)], 9)
    removed = lib.songs["Song 1-3"]
    (server.music / "Artist 1/Album 1/04 - Song 1-3.flac").unlink()
    await asyncio.to_thread(server.rescan)
    now = await asyncio.to_thread(Library.read, server)
    fresh, other = now.songs["Fresh"], lib.songs["Song 0-0"]
    assert removed not in now.artist_of
    for endpoint, params in asks(fresh, other):
        body, lines = await bad_input(stack, endpoint, count=5, **params)
        assert body["status"] == "ok" and ids(body) == [], body
        assert len(lines) == 1 and "not embedded yet" in lines[0], lines
    # The removed track: still answered as a seed, in no answer though sonicbus still has it.
    for endpoint in ("getSimilarSongs2", "getSonicSimilarTracks"):
        assert (await bad_input(stack, endpoint, id=removed, count=5))[0]["status"] == "ok"
    still = []
    for title in ("Song 1-0", "Song 1-2"):
        seed = lib.songs[title]
        still.append(removed in await ask_similar(stack, seed, 19))
        for endpoint, params in asks(seed, other):
            body, _ = await bad_input(stack, endpoint, count=50, **params)
            assert body["status"] == "ok" and ids(body) and removed not in ids(body), body
    assert any(still)  # sonicbus did offer it: Navidrome left it out
    # A wrong token against the real bridge: 401, one warning line with a hint, no answer.
    await asyncio.to_thread(server.enable, {**stack.config, "token": "not-the-client-token"})
    try:
        body, lines = await bad_input(stack, "getSimilarSongs2", id=other, count=5)
        assert body["status"] == "ok" and ids(body) == [], body
        body, more = await bad_input(stack, "getSonicSimilarTracks", id=other, count=5)
        assert body["status"] == "failed" and "HTTP 401" in body["error"]["message"], body
        for line in (*lines, *more):
            assert "level=warning" in line and "answered HTTP 401" in line and "token" in line
        assert (len(lines), len(more)) == (1, 1), (lines, more)
    finally:
        await asyncio.to_thread(server.enable, stack.config)
    async with httpx.AsyncClient(base_url=f"{stack.url}/navidrome/v1") as bridge:
        wrong = {"Authorization": "Bearer not-the-client-token"}
        answer = await bridge.post("/similar", json={"song": {"id": other}}, headers=wrong)
        assert answer.status_code == 401, answer.text
    assert ids(await nd(stack, "getSimilarSongs2", id=other, count=5))  # answering again
    assert not [r for r in caplog.records if r.exc_info], caplog.text


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
