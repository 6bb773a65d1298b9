"""The `embed-musicnn` group on the real broker and real Milvus, with real MusiCNN weights.

The user's story: tracks are published, vectors appear in Milvus with their
tags; a corrupt file is dead-lettered without blocking the tracks behind it;
an unchanged track is skipped; a removed track disappears; and a consumer
killed with SIGKILL mid-batch loses nothing when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import EmbedSettings, MilvusSettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.schemas import DeadLetter, EmbeddingEvent
from pipeline.store import VectorStore
from pipeline.topics import embed_group
from tests.fixtures.audio import drum_clip, track_event, write_song
from tests.fixtures.bus import committed_offsets, drain, drain_available, publish
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.services import base_settings, wait_for


@pytest.fixture
def embed_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"embed": EmbedSettings(batch_tracks=2, idle_unload_s=0, device="cpu")}
    )


@contextlib.asynccontextmanager
async def embedder_running(settings: Settings, store: VectorStore) -> AsyncIterator[str]:
    """The `embed-musicnn` consumer running on `store`; yields the model's collection."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    try:
        yield store.collection_name("musicnn")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def rows_stored(store: VectorStore, collection: str, count: int) -> None:
    await wait_for(lambda: store.has_collection(collection) and store.count(collection) == count)


async def test_tracks_are_embedded_corrupt_ones_dead_lettered(
    embed_settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = embed_settings
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"song{i}.{'wav' if i % 2 else 'flac'}")
        write_song(paths[-1], seconds=6 + i, seed=i)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + os.urandom(3000))
    events = [track_event(p, f"t{i}") for i, p in enumerate(paths)]
    events.insert(1, track_event(corrupt, "bad"))
    await publish(producer, settings, events)

    async with embedder_running(settings, lite_store) as collection:
        await rows_stored(lite_store, collection, 4)
        letters = [
            DeadLetter.from_bytes(r.value) for r in await drain(settings, settings.topics.dlq, 1)
        ]
        assert [(d.key, d.stage) for d in letters] == [("bad", "audio")]
        assert "corrupt.flac" in letters[0].message

        rows = lite_store.get(collection, [f"t{i}" for i in range(4)], with_vectors=True)
        assert sorted(rows) == ["t0", "t1", "t2", "t3"]
        for row in rows.values():
            assert row.vector is not None and row.vector.shape == (1200,)
            assert np.isfinite(row.vector).all()
            assert len(row.extra["tags"]) == len(row.extra["mtt_tags"]) == 50
            assert all(0.0 <= p <= 1.0 for p in row.extra["tags"] + row.extra["mtt_tags"])
            assert row.model_version.startswith("musicnn-msd+mtt-")
        assert rows["t2"].artist == "artist of t2"

        # Republishing unchanged tracks skips them; a tombstone removes one; the same
        # recording under another name is reported as a near-duplicate.
        copy = tmp_path / "copy of song0.flac"
        copy.write_bytes(paths[0].read_bytes())
        await publish(producer, settings, [*events[:2], track_event(copy, "t0-copy")])
        await producer.send_and_wait(settings.topics.tracks, None, key=b"t3")

        def settled() -> bool:
            ids = set(lite_store.get(collection, ["t0", "t1", "t2", "t3", "t0-copy"]))
            return ids == {"t0", "t1", "t2", "t0-copy"}

        await wait_for(settled)
        emitted = [
            EmbeddingEvent.from_bytes(r.value)
            for r in await drain(settings, settings.topics.embeddings, 7)
        ]
        statuses = sorted((e.track_id, e.status) for e in emitted)
        assert ("t0", "skipped_unchanged") in statuses
        assert ("t3", "deleted") in statuses
        assert [e.dim for e in emitted if e.status == "embedded"] == [1200] * 5
        (copy_event,) = [e for e in emitted if e.track_id == "t0-copy"]
        assert [d.track_id for d in copy_event.near_duplicates] == ["t0"]
        assert copy_event.near_duplicates[0].similarity > 0.999


async def test_tempo_key_loudness_and_energy_are_stored_as_fields_filters_can_use(
    embed_settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = embed_settings
    tracks = {"slow": (96.0, 12.0), "fast": (150.0, 12.0), "short": (120.0, 4.0)}
    events = []
    for name, (bpm, seconds) in tracks.items():
        path = tmp_path / f"{name}.flac"
        sf.write(path, drum_clip(seconds, bpm, sample_rate=44100, seed=len(events)), 44100)
        events.append(track_event(path, name))
    await publish(producer, settings, events)

    async with embedder_running(settings, lite_store) as collection:
        await rows_stored(lite_store, collection, 3)
        rows = lite_store.get(collection, list(tracks), with_vectors=True)
        for name in ("slow", "fast"):
            assert abs(rows[name].bpm - tracks[name][0]) <= 0.02 * tracks[name][0], rows[name]
            assert -40 < rows[name].loudness_db < 0 and 0 <= rows[name].energy <= 1
            assert rows[name].extra["analysis"]["bpm"] == pytest.approx(rows[name].bpm, abs=0.01)
        short = rows["short"]  # too short for a tempo: unmeasured, and the row says why
        assert short.bpm == 0.0
        assert any("tempo" in w for w in short.extra["analysis"]["warnings"])

        hits = lite_store.search(collection, [rows["slow"].vector], 3, "bpm >= 140", ("bpm",))
        assert [h.track_id for h in hits[0]] == ["fast"]
        assert hits[0][0].fields["bpm"] >= 140


async def test_sigkill_mid_batch_loses_nothing(
    embed_settings: Settings, producer, milvus_server: str, tmp_path: Path
) -> None:
    settings = embed_settings
    prefix = f"crash_{settings.topics.prefix.strip('.')}_"
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"song{i:02d}.wav")
        write_song(paths[-1], seconds=8, seed=100 + i)
    expected = {f"c{i:02d}" for i in range(12)}
    await publish(producer, settings, [track_event(p, f"c{i:02d}") for i, p in enumerate(paths)])

    env = cli_env(
        settings,
        SONICBUS_MILVUS__URI=milvus_server,
        SONICBUS_MILVUS__COLLECTION_PREFIX=prefix,
        SONICBUS_EMBED__BATCH_TRACKS="2",
        SONICBUS_EMBED__DEVICE="cpu",
        SONICBUS_HOME=str(tmp_path / "home"),
    )
    command = sonicbus_command("embed", "--model", "musicnn")
    store = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
    collection = store.collection_name("musicnn")

    def stored() -> int:
        return store.count(collection) if store.has_collection(collection) else 0

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_for(lambda: stored() >= 2, timeout=120, interval=0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = stored()
        assert killed_at < 12, "the consumer finished before it could be killed"

        second = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await wait_for(lambda: stored() == 12, timeout=120)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=60)
            assert second.returncode == 0, err.decode()[-2000:]

        ids = set(store.get(collection, sorted(expected)))
        assert ids == expected
        assert store.count(collection) == 12  # every track exactly once
    finally:
        if first.poll() is None:
            first.kill()
        store.drop_collection(collection)
        store.close()


async def test_wrong_model_weights_stop_the_consumer_before_it_reads_anything(
    embed_settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    from models.base import ModelUnavailable
    from models.musicnn_checkpoint import MUSICNN_WHEEL_NAME

    cache = tmp_path / "cache"
    wheel = cache / "models" / "musicnn" / MUSICNN_WHEEL_NAME
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the musicnn wheel")
    settings = embed_settings.model_copy(update={"cache_dir": cache})
    path = tmp_path / "song.wav"
    write_song(path, seconds=4, seed=1)
    await publish(producer, settings, [track_event(path, "w1")])

    with pytest.raises(ModelUnavailable, match="sha256"):
        await run_embedder(settings, "musicnn", asyncio.Event(), store=lite_store)
    offsets = await committed_offsets(settings, embed_group(settings, "musicnn"))
    mine = {tp: o for tp, o in offsets.items() if tp.topic == settings.topics.tracks}
    assert mine == {}  # nothing consumed, nothing committed
    assert not lite_store.has_collection(lite_store.collection_name("musicnn"))


async def test_milvus_going_down_pauses_the_consumer_and_loses_nothing(
    embed_settings: Settings, producer, milvus_server: str, tmp_path: Path
) -> None:
    from pipeline import infra

    settings = embed_settings
    prefix = f"down_{settings.topics.prefix.strip('.')}_"
    store = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
    collection = store.collection_name("musicnn")
    observer = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)

    def stored() -> int:
        nonlocal observer
        try:
            return observer.count(collection) if observer.has_collection(collection) else 0
        except Exception:  # a channel opened before the restart may stay broken: reopen
            observer.close()
            observer = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
            return -1

    paths = []
    for i in range(8):
        paths.append(tmp_path / f"song{i}.wav")
        write_song(paths[-1], seconds=4, seed=300 + i)
    events = [track_event(p, f"d{i}") for i, p in enumerate(paths)]
    await publish(producer, settings, events[:4])
    stop = asyncio.Event()
    task = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    try:
        await wait_for(lambda: stored() == 4, timeout=120)
        await asyncio.to_thread(infra.stop_milvus_server, base_settings())
        await publish(producer, settings, events[4:])
        await asyncio.sleep(5)
        assert not task.done(), "the consumer died with Milvus"
        await asyncio.to_thread(infra.start_milvus_server, base_settings())
        await wait_for(lambda: stored() == 8, timeout=180)
        assert set(observer.get(collection, [e.track_id for e in events])) == {
            e.track_id for e in events
        }
        dead = await drain_available(settings, settings.topics.dlq)
        assert dead == []
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
        observer.drop_collection(collection)
        store.close()
        observer.close()
