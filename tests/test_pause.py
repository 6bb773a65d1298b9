"""Pause, resume and the CPU cap, as the owner of a home server uses them.

The story: the library is being embedded and the machine is needed for something
else. `sonicbus pause` (or the dashboard's button, POST /api/embedding/pause)
stops the embedders taking new work: the batch in hand is finished and
committed, then nothing new is embedded or committed while tracks wait on the
bus. `sonicbus resume` works the backlog off and nothing is lost. `embed.threads`
caps how many cores the embedders use at all. Real broker, real MusiCNN, real
Milvus Lite.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from pipeline.bus import make_consumer
from pipeline.config import EmbedSettings, HttpSettings, Settings, load_settings
from pipeline.consumers.embedder import Embedder, cap_threads, run_embedder
from pipeline.consumers.worker import BatchWorker, Delivery, Failure
from pipeline.http.app import create_app
from pipeline.ops.pause import pause, pause_state, resume
from pipeline.schemas import TrackEvent
from pipeline.store import VectorStore
from pipeline.topics import embed_group
from pipeline.wiring import embedding_model
from tests.fixtures.audio import write_song
from tests.fixtures.bus import committed_offsets, dead_letters, end_offsets, publish
from tests.fixtures.cli import sonicbus

pytestmark = pytest.mark.timeout(180)
TOKEN = "pause-token"
HOLD_S = 4.0  # how long a pause is watched for work that should not happen


def untitled_event(path: Path, track_id: str) -> TrackEvent:
    """A track as a producer publishes a file without a title tag."""
    stat = path.stat()
    return TrackEvent(
        track_id=track_id,
        path=str(path),
        fingerprint={"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "fast_hash": track_id},
    )


async def committed(settings: Settings, group: str) -> int:
    offsets = await committed_offsets(settings, group)
    return sum(o.offset for tp, o in offsets.items() if tp.topic == settings.topics.tracks)


async def until(condition, timeout: float = 90.0) -> None:  # type: ignore[no-untyped-def]
    """Until `condition()` (a coroutine function) is true."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.3)


async def test_a_paused_embedder_holds_and_resume_finishes_the_backlog(
    settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"embed": EmbedSettings(batch_tracks=2, idle_unload_s=0, device="cpu")}
    )
    songs = []
    for i in range(6):
        songs.append(tmp_path / f"{i:02d} Song Without Tags.wav")
        write_song(songs[-1], seconds=4, seed=300 + i)
    events = [untitled_event(path, f"p{i}") for i, path in enumerate(songs)]
    collection = lite_store.collection_name("musicnn")
    group = embed_group(settings, "musicnn")

    async def rows() -> int:
        has = await asyncio.to_thread(lite_store.has_collection, collection)
        return await asyncio.to_thread(lite_store.count, collection) if has else 0

    stop = asyncio.Event()
    task = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=lite_store))
    try:
        await publish(producer, settings, events[:2])
        await until(lambda: _equals(rows, 2))
        await until(lambda: _equals(lambda: committed(settings, group), 2))

        state = await pause(settings, by="test")
        assert state.paused and state.models == {"musicnn": True}
        assert (await pause_state(settings)).paused  # what every other process reads
        await asyncio.sleep(2.0)  # the embedders follow the order within about a second
        await publish(producer, settings, events[2:])
        await asyncio.sleep(HOLD_S)
        assert await rows() == 2, "a paused embedder embedded new tracks"
        assert await committed(settings, group) == 2, "a paused embedder committed"
        assert await end_offsets(settings, settings.topics.tracks, 3) == 6  # four wait

        state = await resume(settings, by="test")
        assert not state.paused and state.models == {"musicnn": False}
        await until(lambda: _equals(rows, 6))
        await until(lambda: _equals(lambda: committed(settings, group), 6))
        stored = lite_store.get(collection, [e.track_id for e in events])
        assert sorted(stored) == [e.track_id for e in events]  # nothing lost
        # No title tag: the file name is the title (replies, CLI and UI show it).
        assert stored["p3"].title == "03 Song Without Tags"
        assert await dead_letters(settings) == []
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def _equals(read, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await read() == expected


async def test_the_batch_in_hand_is_finished_and_committed_before_the_hold(
    settings: Settings, producer
) -> None:
    """The pause lands while a batch is being worked on: that batch completes and is
    committed, and the next one is not fetched until the gate opens again."""

    class Gate:
        paused = False

        def is_paused(self) -> bool:
            return self.paused

    gate = Gate()
    handled: list[str] = []

    async def handler(batch: list[Delivery[TrackEvent]]) -> list[Failure]:
        gate.paused = True  # the operator pauses while this batch is in hand
        await asyncio.sleep(0.5)
        handled.extend(d.value.track_id for d in batch if d.value is not None)
        return []

    for i in range(6):  # one key: one partition, in order
        event = TrackEvent(track_id=f"w{i}", path=f"/music/w{i}.flac")
        await producer.send_and_wait(settings.topics.tracks, event.to_bytes(), key=b"k")
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings.kafka, settings.topics.tracks, group_id=group, role="t")
    worker = BatchWorker(consumer=consumer, producer=producer, dlq_topic=settings.topics.dlq,
                         group_id=group, schema=TrackEvent, handler=handler, batch_size=2,
                         gate=gate)  # fmt: skip
    stop = asyncio.Event()
    await consumer.start()
    running = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: _equals(lambda: committed(settings, group), 2), timeout=30)
        await asyncio.sleep(HOLD_S)
        assert handled == ["w0", "w1"]
        assert await committed(settings, group) == 2
        gate.paused = False  # resume: each batch pauses again, so step through
        await until(lambda: _equals(lambda: committed(settings, group), 4), timeout=30)
        gate.paused = False
        await until(lambda: _equals(lambda: committed(settings, group), 6), timeout=30)
        assert handled == [f"w{i}" for i in range(6)]
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=30)
        await consumer.stop()


async def test_the_http_api_pauses_and_resumes(settings: Settings) -> None:
    embed = EmbedSettings(models=["musicnn", "mert"], threads=2)
    settings = settings.model_copy(update={"http": HttpSettings(admin_token=TOKEN), "embed": embed})
    app = create_app(settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        answer = await web.get("/api/embedding")
        assert answer.status_code == 200, answer.text
        assert answer.json() | {"since": None} == {
            "paused": False, "threads": 2, "models": {"mert": False, "musicnn": False},
            "since": None,
        }  # fmt: skip

        assert (await web.post("/api/embedding/pause")).status_code == 401  # no token
        paused = await web.post("/api/embedding/pause", headers=auth)
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] and paused.json()["since"] is not None
        assert paused.json()["models"] == {"mert": True, "musicnn": True}

        # One model back; bad input changes nothing.
        one = await web.post("/api/embedding/resume", headers=auth, json={"models": ["mert"]})
        assert one.json()["models"] == {"mert": False, "musicnn": True} and one.json()["paused"]
        unknown = await web.post("/api/embedding/pause", headers=auth, json={"models": ["nope"]})
        assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
        badly_named = await web.post(
            "/api/embedding/pause", headers=auth, json={"models": ["../etc"]}
        )
        assert badly_named.status_code == 422
        garbage = await web.post(
            "/api/embedding/pause",
            headers={**auth, "Content-Type": "application/json"},
            content=b"{not json",
        )
        assert garbage.status_code == 422
        extra = await web.post("/api/embedding/pause", headers=auth, json={"model": "mert"})
        assert extra.status_code == 422  # a misspelt field is refused, not ignored
        after = (await web.get("/api/embedding")).json()
        assert after["models"] == {"mert": False, "musicnn": True}

        done = await web.post("/api/embedding/resume", headers=auth)
        assert done.json()["paused"] is False
        assert done.json()["models"] == {"mert": False, "musicnn": False}
    assert (await pause_state(settings)).paused is False


async def test_the_cli_pauses_and_resumes(settings: Settings) -> None:
    paused = await sonicbus(settings, "pause", "--model", "musicnn")
    assert paused.returncode == 0, paused.stderr
    assert "embedding paused (musicnn)" in paused.stdout
    assert (await pause_state(settings)).models["musicnn"] is True

    unknown = await sonicbus(settings, "pause", "--model", "nope")
    assert unknown.returncode == 1
    assert "unknown model 'nope'" in unknown.stdout + unknown.stderr

    resumed = await sonicbus(settings, "resume", "--json", SONICBUS_EMBED__THREADS="3")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {
        "paused": False, "threads": 3, "models": {"musicnn": False}, "since": None,
    }  # fmt: skip


async def test_embed_threads_caps_torch_blas_and_the_decode_pool(
    monkeypatch: pytest.MonkeyPatch, lite_store: VectorStore, tmp_path: Path
) -> None:
    monkeypatch.setenv("SONICBUS_EMBED__THREADS", "1")
    monkeypatch.setenv("SONICBUS_EMBED__DEVICE", "cpu")
    settings = load_settings(home=tmp_path)
    assert settings.embed.threads == 1
    model = embedding_model(settings, "musicnn")
    torch_threads = torch.get_num_threads()
    with threadpool_limits(limits=None):  # puts every native pool back afterwards
        try:
            model.ensure_loaded()
            assert torch.get_num_threads() == 1
            cap_threads(settings.embed.threads)
            assert all(pool["num_threads"] == 1 for pool in threadpool_info())

            embedder = Embedder(settings, model, lite_store, producer=None)  # type: ignore[arg-type]
            assert embedder.decode_pool is not None and embedder.decode_pool._max_workers == 1
            songs = [tmp_path / f"{i}.wav" for i in range(3)]
            for i, song in enumerate(songs):
                write_song(song, seconds=2, seed=i)
            deliveries = [Delivery(None, s.name, untitled_event(s, s.stem)) for s in songs]
            decoded, embeddings, _, failures = await embedder._embed_as_decoded(deliveries)
            assert failures == [] and len(decoded) == len(embeddings) == 3  # through the pool
            embedder.close()
        finally:
            torch.set_num_threads(torch_threads)
            model.close()
