"""An embedder that cannot see the music folder embeds Navidrome's tracks anyway: it fetches
each original through the real server's Subsonic `download`. A track Navidrome will not
serve (its file is gone, or the id is unknown) is dead-lettered with Navidrome's reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.catalog import read_tracks
from pipeline.config import EmbedSettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.navidrome.download import NavidromeRefused, download
from pipeline.producers.navidrome import NavidromeScanner, SubsonicSource
from pipeline.schemas import DeadLetter, TrackEvent, TrackMetadata
from pipeline.store import VectorStore
from tests.fixtures.bus import drain, publish
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs
from tests.fixtures.services import wait_for

pytestmark = pytest.mark.timeout(240)

SONGS = [
    Song(f"Artist {i}/Album/0{i} - Song {i}.{suffix}",
         TrackMetadata(title=f"Song {i}", artist=f"Artist {i}", album="Album"), seconds=6)
    for i, suffix in enumerate(["flac", "mp3", "ogg", "flac"])
]  # fmt: skip


async def test_an_embedder_without_the_folder_downloads_from_navidrome(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
    lite_store: VectorStore,
    tmp_path: Path,
) -> None:
    files = write_songs(navidrome_folder, SONGS)
    navidrome_server.rescan()
    ids = {str(p.relative_to(navidrome_folder)): i
           for p, i in navidrome_server.ids_by_path(navidrome_folder).items()}  # fmt: skip
    # Listed through the API by a scanner on a machine that has the music elsewhere (or
    # not at all): the events carry paths this embedder cannot open.
    hidden = {str(navidrome_server.music.resolve()): "/nonexistent/music"}
    config = navidrome_server.settings(settings, api=True, path_map=hidden)
    config = config.model_copy(
        update={"embed": EmbedSettings(batch_tracks=2, idle_unload_s=0, device="cpu")}
    )
    await NavidromeScanner(config, SubsonicSource(config.navidrome), producer).scan_once()
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    mine = {i: events[i] for i in ids.values()}
    assert all(e.path.startswith("/nonexistent/music/") for e in mine.values())

    gone = SONGS[3].path
    files[gone].unlink()  # Navidrome still lists it, and cannot open it
    unknown = TrackEvent(track_id="no-such-navidrome-id", path="/nonexistent/x.flac",
                         source="navidrome", suffix="flac")  # fmt: skip
    await publish(producer, config, [unknown])

    collection = lite_store.collection_name("musicnn")
    stop = asyncio.Event()
    task = asyncio.create_task(run_embedder(config, "musicnn", stop, store=lite_store))
    try:
        embedded = {ids[s.path] for s in SONGS[:3]}
        await wait_for(
            lambda: (
                lite_store.has_collection(collection)
                and set(lite_store.get(collection, list(embedded))) == embedded
            )
        )
        letters = [DeadLetter.from_bytes(r.value)
                   for r in await drain(config, config.topics.dlq, 2, timeout=60)]  # fmt: skip
        reasons = {d.key: (d.stage, d.message) for d in letters}
        assert reasons[ids[gone]][0] == "audio"
        assert "Navidrome refused to serve" in reasons[ids[gone]][1]
        assert "no such file" in reasons[ids[gone]][1].lower() or "open" in reasons[ids[gone]][1]
        assert reasons["no-such-navidrome-id"][0] == "audio"
        assert "error 70" in reasons["no-such-navidrome-id"][1]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)

    # The download itself: authenticated, the original bytes, cut off at the size limit.
    original = files[SONGS[0].path]
    copy = tmp_path / "copy.flac"
    assert await download(config.navidrome, ids[SONGS[0].path], str(copy)) == copy.stat().st_size
    assert copy.read_bytes() == original.read_bytes()
    tiny = config.navidrome.model_copy(update={"download_max_mb": 0})
    with pytest.raises(NavidromeRefused, match="larger than the download limit"):
        await download(tiny, ids[SONGS[0].path], str(copy))
