"""The library's API on the real services: search, a track's details, and its audio.

One stack for the module: the real Milvus server holding the synthetic MusiCNN library
(known tags, known neighbours) with some of its tracks' files generated under a music
root, a query service on the real broker answering `similar`, the real Navidrome for
files that are not on this machine, and the HTTP service on loopback. A user searches by
title, artist and album; opens a track (its top tags, and exactly the bus's `similar`
answer); plays it with byte ranges; and every way of reaching a file outside the music
folders (in the stored path or in the URL) gets 404 and a log line, never the file.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from models.musicnn_net import MSD_TAGS
from pipeline.client import QueryClient
from pipeline.config import MilvusSettings, QuerySettings, Settings, WatcherSettings
from pipeline.consumers.query import QueryService
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.audio import write_song
from tests.fixtures.browser import serve
from tests.fixtures.library import DIM, Library, musicnn_library, unit
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs
from tests.fixtures.services import MILVUS_PORT, base_settings

pytestmark = pytest.mark.timeout(180)

SECRET = Path("/etc/passwd")  # what no traversal may ever return


@dataclass
class Stack:
    settings: Settings
    store: VectorStore
    http: httpx.AsyncClient
    client: QueryClient
    library: Library
    music: Path
    navidrome: NavidromeServer

    @property
    def collection(self) -> str:
        return self.store.collection_name("musicnn")

    def add_rows(self, paths: dict[str, str], title: str = "", artist: str = "") -> None:
        """Rows whose stored `extra.path` is the given one (random vectors), in one upsert."""
        rows = []
        for track_id, path in paths.items():
            vector = unit(np.random.default_rng(len(track_id)).standard_normal(DIM))
            rows.append(VectorRow(track_id=track_id, vector=vector, title=title or track_id,
                                  artist=artist, extra={"path": path}))  # fmt: skip
        self.store.upsert(self.collection, rows)


def library_rows(lib: Library, music: Path) -> list[VectorRow]:
    """The synthetic library; rock0..rock2 have real files under the music root."""
    rows = lib.rows()
    for row in rows:
        if row.track_id in ("rock0", "rock1", "rock2"):
            path = music / "Stone Lane" / f"{row.track_id}.flac"
            path.parent.mkdir(exist_ok=True)
            write_song(path, seconds=2, seed=len(row.track_id))
            row.extra = {**row.extra, "path": str(path)}
    accented = unit(np.ones(DIM, np.float32))
    rows.append(VectorRow(track_id="cafe", vector=accented, title="Café Noir",
                          artist="Zoë Quartet", album="Éclairs", extra={}))  # fmt: skip
    return rows


@pytest.fixture(scope="module")
async def stack(
    kafka_broker: str,
    milvus_server: str,
    navidrome_server: NavidromeServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    music = tmp_path_factory.mktemp("music")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    base = base_settings(
        milvus=MilvusSettings(local_port=MILVUS_PORT, collection_prefix=prefix),
        query=QuerySettings(workers=2, default_timeout_s=20.0),
        watcher=WatcherSettings(roots=[music]),
    )
    settings = navidrome_server.settings(base, api=True)
    await ensure_topics(settings.kafka, settings.topics)
    store = VectorStore(settings.milvus, milvus_server)
    lib = musicnn_library()
    store.ensure_collection(store.collection_name("musicnn"), dim=DIM)
    store.upsert(store.collection_name("musicnn"), library_rows(lib, music))
    service = QueryService(settings, store)
    await service.start()
    await asyncio.wait_for(service.ready.wait(), 60)
    await asyncio.wait_for(service.following.wait(), 30)
    client = QueryClient(settings)
    await client.start()
    try:
        async with (
            serve(settings, store) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):
            yield Stack(settings, store, http, client, lib, music, navidrome_server)
    finally:
        await client.stop()
        await service.stop()
        for name in store.list_collections():
            if name.startswith(settings.milvus.collection_prefix):
                store.drop_collection(name)
        store.close()


async def raw_get(base: httpx.URL, target: str) -> tuple[int, bytes]:
    """GET `target` exactly as typed (HTTP clients, httpx too, resolve `../` before sending)."""
    reader, writer = await asyncio.open_connection(base.host, base.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def search(stack: Stack, query: str, limit: int = 20) -> list[dict]:
    answer = await stack.http.get("/api/tracks", params={"q": query, "limit": limit})
    assert answer.status_code == 200, answer.text
    return answer.json()["tracks"]


async def test_search_finds_tracks_by_title_artist_and_album(stack: Stack) -> None:
    by_artist = await search(stack, "riff")
    assert {t["artist"] for t in by_artist} == {"Riff Union"} and len(by_artist) == 4

    tune = await search(stack, "jazz tune 3")
    assert tune[0] == {"track_id": "jazz3", "title": "Jazz Tune 3", "artist": "Quartet 3",
                       "album": "jazz album", "duration": 230.0}  # fmt: skip

    albums = await search(stack, "metal album")
    assert sorted(t["track_id"] for t in albums) == [f"metal{i}" for i in range(6)]
    # Every word must match somewhere; the shorter title first among equals.
    assert [t["title"] for t in await search(stack, "riff song 1")] == ["Rock Song 1",
                                                                        "Rock Song 10"]  # fmt: skip
    # Case and accents do not matter, in either direction.
    assert [t["track_id"] for t in await search(stack, "CAFE zoe")] == ["cafe"]
    assert [t["track_id"] for t in await search(stack, "éclairs")] == ["cafe"]

    assert await search(stack, "no such words") == []
    listing = await search(stack, "", limit=5)
    assert [t["artist"] for t in listing] == sorted(t["artist"] for t in listing)
    assert len(listing) == 5


async def test_a_bad_search_is_refused_with_the_reason(stack: Stack) -> None:
    too_many = await stack.http.get("/api/tracks", params={"q": "rock", "limit": 1000})
    assert too_many.status_code == 422 and "limit" in too_many.text
    too_long = await stack.http.get("/api/tracks", params={"q": "x" * 500})
    assert too_long.status_code == 422


async def test_a_track_has_its_top_tags_and_the_bus_answer_for_similar(stack: Stack) -> None:
    answer = await stack.http.get("/api/tracks/jazz3", params={"similar": 8})
    assert answer.status_code == 200, answer.text
    details = answer.json()
    assert details["track"]["title"] == "Jazz Tune 3"
    assert details["track"]["artist"] == "Quartet 3"

    stored = stack.library.tracks["jazz3"].tags
    ranked = sorted(zip(MSD_TAGS, stored, strict=True), key=lambda pair: -pair[1])[:10]
    assert [(t["tag"], t["score"]) for t in details["top_tags"]] == ranked
    assert details["top_tags"][0]["tag"] == "jazz"

    reply = await stack.client.ask({"type": "similar", "request_id": uuid.uuid4().hex,
                                    "track_id": "jazz3", "limit": 8}, timeout=20)  # fmt: skip
    assert reply.ok, reply.error
    assert [(t["track_id"], t["score"]) for t in details["similar"]] == [
        (t.track_id, t.score) for t in reply.tracks
    ]
    assert {t["track_id"] for t in details["similar"][:7]} == {f"jazz{i}" for i in range(8)} - {
        "jazz3"
    }
    assert details["similar_error"] is None


async def test_an_unknown_track_is_404(stack: Stack) -> None:
    answer = await stack.http.get("/api/tracks/no-such-track")
    assert answer.status_code == 404
    assert "no-such-track" in answer.json()["detail"]
    assert (await stack.http.get("/api/audio/no-such-track")).status_code == 404


async def test_audio_plays_with_byte_ranges(stack: Stack) -> None:
    data = (stack.music / "Stone Lane" / "rock0.flac").read_bytes()
    size = len(data)

    whole = await stack.http.get("/api/audio/rock0")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/flac"
    assert whole.headers["accept-ranges"] == "bytes"

    first = await stack.http.get("/api/audio/rock0", headers={"Range": "bytes=0-99"})
    assert first.status_code == 206
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.content == data[:100]
    tail = await stack.http.get("/api/audio/rock0", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    middle = await stack.http.get("/api/audio/rock0", headers={"Range": f"bytes=1000-{size}"})
    assert middle.status_code == 206 and middle.content == data[1000:]

    beyond = await stack.http.get("/api/audio/rock0", headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"

    head = await stack.http.head("/api/audio/rock0")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == size


async def test_every_traversal_gets_404_and_a_log_line(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    root = stack.music
    (root / "link.flac").symlink_to(SECRET)
    (root / "escape").symlink_to(SECRET.parent, target_is_directory=True)
    stored = {  # rows whose stored path leads out of the music root, or nowhere
        "absolute": str(SECRET),
        "dotdot": f"{root}/../../../../../..{SECRET}",
        "relative": f"../../../../..{SECRET}",
        "symlink-file": str(root / "link.flac"),
        "symlink-folder": str(root / "escape" / SECRET.name),
        "missing": str(root / "Stone Lane" / "gone.flac"),
    }
    stack.add_rows(stored)
    in_url = [  # the id itself as a path, in every spelling
        "../../../../etc/passwd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "%2E%2E/%2E%2E/etc/passwd",
        "..%252F..%252Fetc%252Fpasswd",
        "%2Fetc%2Fpasswd",
        "..%5C..%5Cetc%5Cpasswd",
        "rock0%00",
    ]
    secret = SECRET.read_bytes()
    caplog.set_level(logging.WARNING, logger="pipeline.http.audio_stream")

    for track_id in stored:
        answer = await stack.http.get(f"/api/audio/{track_id}")
        assert answer.status_code == 404, (track_id, answer.text)
        assert secret not in answer.content and b"root:" not in answer.content
        assert any(track_id in r.getMessage() and "refused" in r.getMessage()
                   for r in caplog.records), track_id  # fmt: skip
    reasons = " ".join(r.getMessage() for r in caplog.records)
    assert "outside the music roots" in reasons and "file missing" in reasons
    assert "not absolute" in reasons

    for raw in in_url:
        status, body = await raw_get(stack.http.base_url, f"/api/audio/{raw}")
        assert status == 404, (raw, body)
        assert b"root:" not in body
    refused = [r.getMessage() for r in caplog.records if "not a track id" in r.getMessage()]
    assert len(refused) == len(in_url)  # each one reached the check, none a file


async def test_a_file_elsewhere_streams_through_navidrome(stack: Stack, tmp_path: Path) -> None:
    navidrome = stack.navidrome
    folder = navidrome.music / f"t{uuid.uuid4().hex[:10]}"
    song = Song("Far Away/away.flac", TrackMetadata(title="Far Away", artist="Remote Band"), 3)
    files = write_songs(folder, [song])
    navidrome.rescan()
    [navidrome_id] = navidrome.ids_by_path(folder).values()
    data = files[song.path].read_bytes()
    # Listed by a Navidrome on another machine: the stored path is that machine's.
    stack.add_rows({navidrome_id: "/srv/elsewhere/Far Away/away.flac",
                    "gone-from-navidrome": "/srv/elsewhere/none.flac"})  # fmt: skip

    part = await stack.http.get(f"/api/audio/{navidrome_id}", headers={"Range": "bytes=10-209"})
    assert part.status_code == 206, part.text
    assert part.content == data[10:210]
    assert part.headers["content-range"] == f"bytes 10-209/{len(data)}"
    whole = await stack.http.get(f"/api/audio/{navidrome_id}")
    assert whole.status_code == 200 and whole.content == data

    refused = await stack.http.get("/api/audio/gone-from-navidrome")
    assert refused.status_code == 502
    assert "Navidrome refused to stream track 'gone-from-navidrome'" in refused.json()["detail"]
