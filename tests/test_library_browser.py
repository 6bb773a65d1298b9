"""The library and a track's page in the real browser, on the real stack.

Generated songs with real tags are embedded by MusiCNN into the real Milvus server; a
query service answers on the real broker; the HTTP service streams the files from the
music folder. A listener types part of a title, picks the suggestion with the keyboard
and plays it (the audio element loads the file and reports its length); opens a track's
page and sees its top tags as bars and exactly the tracks the bus answers as similar;
an unknown track and a path in the audio URL get clear answers. Screenshots of both pages
at desktop and phone width go to $SONICBUS_TEST_HOME/screenshots.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from models.musicnn_net import MSD_TAGS
from pipeline.bus import make_producer
from pipeline.client import QueryClient
from pipeline.config import (
    EmbedSettings,
    MilvusSettings,
    QuerySettings,
    Settings,
    WatcherSettings,
)
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import QueryService
from pipeline.schemas import TrackEvent
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.audio import write_song
from tests.fixtures.browser import WAIT_MS, expect, screenshots, serve
from tests.fixtures.bus import publish
from tests.fixtures.services import MILVUS_PORT, base_settings, wait_for

pytestmark = pytest.mark.timeout(300)

SECONDS = 4.0
SONGS = {  # track id: (title, artist, album)
    "tide-am": ("Morning Tide", "Harbour Lights", "Coastlines"),
    "tide-pm": ("Evening Tide", "Harbour Lights", "Coastlines"),
    "copper": ("Copper Wire", "Static Bloom", "Signals"),
    "orchard": ("Glass Orchard", "Static Bloom", "Signals"),
}


@dataclass
class Stack:
    settings: Settings
    store: VectorStore
    url: str
    client: QueryClient


def song_event(path: Path, track_id: str) -> TrackEvent:
    title, artist, album = SONGS[track_id]
    stat = path.stat()
    return TrackEvent(
        track_id=track_id,
        path=str(path),
        metadata={"title": title, "artist": artist, "album": album, "duration_s": SECONDS},
        fingerprint={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fast_hash": track_id},
    )


@pytest.fixture(scope="module")
async def stack(
    kafka_broker: str, milvus_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """The songs embedded by MusiCNN, a query service, and the HTTP service on loopback."""
    music = tmp_path_factory.mktemp("music")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = base_settings(
        milvus=MilvusSettings(local_port=MILVUS_PORT, collection_prefix=prefix),
        embed=EmbedSettings(batch_tracks=4, idle_unload_s=0, device="cpu"),
        query=QuerySettings(workers=2, default_timeout_s=20.0),
        watcher=WatcherSettings(roots=[music]),
    )  # fmt: skip
    await ensure_topics(settings.kafka, settings.topics)
    store = VectorStore(settings.milvus, milvus_server)
    events = []
    for seed, track_id in enumerate(SONGS):
        path = music / SONGS[track_id][1] / f"{SONGS[track_id][0]}.flac"
        path.parent.mkdir(exist_ok=True)
        write_song(path, seconds=SECONDS, seed=100 + seed)
        events.append(song_event(path, track_id))
    producer = make_producer(settings.kafka, role="test")
    await producer.start()
    await publish(producer, settings, events)
    stop = asyncio.Event()
    embedder = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    service = QueryService(settings, store)
    client = QueryClient(settings)
    collection = store.collection_name("musicnn")
    try:
        await service.start()
        await client.start()
        await wait_for(
            lambda: store.has_collection(collection) and store.count(collection) == len(SONGS)
        )
        async with serve(settings, store) as url:
            yield Stack(settings, store, url, client)
    finally:
        stop.set()
        await asyncio.wait_for(embedder, 60)
        await client.stop()
        await service.stop()
        await producer.stop()
        for name in store.list_collections():
            if name.startswith(settings.milvus.collection_prefix):
                store.drop_collection(name)
        store.close()


async def audio_duration(page: Any) -> float:
    """The length the page's audio element reports, once it has loaded the file."""
    await page.wait_for_function(
        "() => Number.isFinite(document.getElementById('audio').duration)", timeout=WAIT_MS
    )
    return float(await page.evaluate("() => document.getElementById('audio').duration"))


async def test_search_suggests_a_generated_track_and_plays_it(stack: Stack, page: Any) -> None:
    await page.goto(stack.url + "/library")
    nav = page.get_by_role("navigation", name="Pages")
    await expect(nav.get_by_role("link", name="Library")).to_have_attribute("aria-current", "page")
    await expect(page.get_by_test_id("results").get_by_test_id("track")).to_have_count(4)
    await expect(page.get_by_test_id("summary")).to_contain_text("4 tracks of the library")

    box = page.get_by_test_id("search")
    await box.press_sequentially("static cop", delay=30)
    suggestions = page.get_by_test_id("suggestion")
    await expect(suggestions).to_have_count(1)
    await expect(suggestions.first).to_contain_text("Copper Wire")
    await expect(suggestions.first).to_contain_text("Static Bloom · Signals")
    await box.press("ArrowDown")
    await expect(suggestions.first).to_have_attribute("aria-selected", "true")
    await box.press("Enter")

    rows = page.get_by_test_id("results").get_by_test_id("track")
    await expect(rows).to_have_count(1)
    await expect(rows.first.get_by_test_id("track-link")).to_have_text("Copper Wire")
    play = rows.first.get_by_role("button", name="Play Copper Wire by Static Bloom")
    await expect(play).to_be_focused()
    await page.keyboard.press("Enter")  # the picked track's play button has the focus

    audio = page.get_by_test_id("audio")
    await expect(audio).to_have_attribute("data-track", "copper")
    assert abs(await audio_duration(page) - SECONDS) < 0.25
    await expect(page.get_by_test_id("now-playing")).to_have_text(
        "Now playing: Copper Wire by Static Bloom"
    )
    await expect(page.get_by_test_id("player-error")).to_be_hidden()

    await box.fill("")
    await box.press_sequentially("harbour", delay=20)
    await box.press("Enter")  # no suggestion picked: every match
    await expect(rows).to_have_count(2)
    await expect(page.get_by_test_id("summary")).to_have_text("2 tracks for “harbour”")
    await screenshots(page, "library")


async def test_the_track_page_shows_tags_and_the_similar_tracks(stack: Stack, page: Any) -> None:
    reply = await stack.client.ask({"type": "similar", "request_id": uuid.uuid4().hex,
                                    "track_id": "tide-am", "limit": 12}, timeout=20)  # fmt: skip
    assert reply.ok and reply.tracks, reply  # (near-identical songs count once: not always 3)
    stored = stack.store.get(stack.store.collection_name("musicnn"), ["tide-am"])["tide-am"]
    top_tag = MSD_TAGS[max(range(len(MSD_TAGS)), key=lambda i: stored.extra["tags"][i])]

    await page.goto(stack.url + "/track/tide-am")
    await expect(page.get_by_test_id("track-title")).to_have_text("Morning Tide")
    await expect(page.get_by_test_id("facts")).to_contain_text("Harbour Lights")
    await expect(page.get_by_test_id("facts")).to_contain_text("Coastlines")
    tags = page.get_by_test_id("tag")
    await expect(tags).to_have_count(10)
    await expect(tags.first).to_have_attribute("data-tag", top_tag)  # MusiCNN's own tags
    similar = page.get_by_test_id("similar-track")
    await expect(similar).to_have_count(len(reply.tracks))
    shown = [await row.get_attribute("data-id") for row in await similar.all()]
    assert shown == [t.track_id for t in reply.tracks]
    await expect(similar.first.get_by_test_id("track-link")).to_have_text(
        reply.tracks[0].title or ""
    )

    await page.get_by_test_id("track").get_by_role("button", name="Play Morning Tide").click()
    assert abs(await audio_duration(page) - SECONDS) < 0.25
    await screenshots(page, "track")


async def test_unknown_tracks_and_paths_get_clear_answers(stack: Stack, page: Any) -> None:
    await page.goto(stack.url + "/track/no-such-track")
    await expect(page.get_by_test_id("problem")).to_have_text(
        "No track with the id “no-such-track” in the library."
    )
    for attempt in (
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "no-such-track",
    ):
        answer = await page.request.get(f"{stack.url}/api/audio/{attempt}")
        assert answer.status == 404, attempt
        assert b"root:" not in await answer.body()
