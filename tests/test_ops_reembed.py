"""Bulk re-embed by replaying `tracks`, on the real broker, the real Milvus server and MusiCNN.

The operator's stories:
- a library (a few corrupt files in it) is embedded; `sonicbus reembed --fresh`
  re-embeds every track into a new collection while queries keep being
  answered from the old one; when the group caught up the new collection
  takes over, queries follow, lag is back to 0, and the dead letters are
  exactly the corrupt files (once per pass);
- a replay is cancelled half-way: nothing moves while it is cancelled; it
  is resumed and every track ends up embedded exactly once;
- commands that must not run (members still consuming, a replay already
  running, an unknown model) are refused and move no offset.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from aiokafka import TopicPartition

from pipeline.bus import make_consumer
from pipeline.client import QueryClient
from pipeline.config import EmbedSettings, MilvusSettings, QuerySettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import QueryService
from pipeline.ops.lag import LagReader
from pipeline.ops.progress import finish_replay, replay_progress
from pipeline.ops.replay import cancel_replay, resume_replay, start_replay
from pipeline.schemas import DeadLetter, EmbeddingEvent, QueryReply
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import embed_group
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import drain, publish
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.services import wait_for

pytestmark = pytest.mark.timeout(300)

# The story: 300 tracks (two passes of ~1-2 min here, most of it the Milvus server's
# flush per batch). SONICBUS_TEST_REPLAY_TRACKS=60 makes a quick run while working on it.
LIBRARY = int(os.environ.get("SONICBUS_TEST_REPLAY_TRACKS", "300"))
CORRUPT = 3
# A replay waits for the group to be empty: the embedder a test just stopped leaves at once,
# but its member may take a moment to be gone on the broker.
WAIT_S = 30.0
WAIT = ("--wait", "--wait-timeout", str(WAIT_S))
HOLD_S = 10.0


def library(folder: Path, count: int, corrupt: int) -> tuple[list, list[str]]:
    """`count` one-second songs and `corrupt` broken files, as TrackEvents (corrupt ids last)."""
    events = []
    for i in range(count):
        path = folder / f"song{i:03d}.wav"
        write_song(path, seconds=1.0, seed=1000 + i)
        events.append(track_event(path, f"t{i:03d}"))
    bad = []
    for i in range(corrupt):
        path = folder / f"broken{i}.flac"
        path.write_bytes(b"fLaC" + os.urandom(2000))
        events.append(track_event(path, f"bad{i}"))
        bad.append(f"bad{i}")
    return events, bad


def replay_env(settings: Settings, milvus_uri: str, prefix: str, home: Path) -> dict[str, str]:
    return cli_env(
        settings,
        200,
        SONICBUS_MILVUS__URI=milvus_uri,
        SONICBUS_MILVUS__COLLECTION_PREFIX=prefix,
        SONICBUS_HOME=str(home),
    )


async def sonicbus(env: dict[str, str], *args: str) -> tuple[int, str]:
    """`sonicbus ARGS`: its exit status and what it printed (stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *sonicbus_command(*args), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, out.decode()


class Embedding:
    """The `embed-musicnn` consumer running in this process (stop/start like an operator)."""

    def __init__(self, settings: Settings, store: VectorStore) -> None:
        self.settings, self.store = settings, store
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.create_task(
            run_embedder(self.settings, "musicnn", self.stop_event, store=self.store)
        )

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=120)
            self.task = None


def embedder_group(settings: Settings) -> str:
    return embed_group(settings, "musicnn")


async def group_offsets(settings: Settings) -> dict:
    """The embedder group's committed offsets on this test's `tracks`."""
    async with LagReader(settings.kafka) as reader:
        report = await reader.describe(
            embedder_group(settings), ages=False, prefix=settings.topics.tracks
        )
    tracks = settings.topics.tracks
    return {p.partition: p.committed for p in report.partitions if p.topic == tracks}


async def caught_up(settings: Settings, timeout: float = 60) -> None:
    """Until the embedder committed everything (rows land before the batch's commit)."""
    group, tracks = embedder_group(settings), settings.topics.tracks
    async with LagReader(settings.kafka) as reader, asyncio.timeout(timeout):
        while (await reader.describe(group, ages=False, prefix=tracks)).pending_on(tracks):
            await asyncio.sleep(0.2)


def drop_collections(store: VectorStore, prefix: str) -> None:
    for name in store.list_collections():
        if name.startswith(prefix):
            store.drop_collection(name)


@pytest.fixture
def replay_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "embed": EmbedSettings(batch_tracks=40, idle_unload_s=0, device="cpu"),
            "query": QuerySettings(cache_refresh_s=1.0, default_timeout_s=20),
        }
    )


@pytest.mark.timeout(900)
async def test_fresh_replay_re_embeds_everything_while_the_old_collection_serves(
    replay_settings: Settings, producer, milvus_server: str, tmp_path: Path
) -> None:
    settings = replay_settings
    prefix = f"r{uuid.uuid4().hex[:8]}_"
    milvus = MilvusSettings(collection_prefix=prefix)
    settings = settings.model_copy(
        update={"milvus": milvus.model_copy(update={"uri": milvus_server})}
    )
    embed_store, query_store, check = (VectorStore(milvus, milvus_server) for _ in range(3))
    embed_store.state_ttl_s = query_store.state_ttl_s = 0.5
    events, corrupt = library(tmp_path, LIBRARY, CORRUPT)
    await publish(producer, settings, events)
    old = check.collection_name("musicnn")
    embedding = Embedding(settings, embed_store)
    service: QueryService | None = None
    client: QueryClient | None = None
    try:
        embedding.start()
        await wait_for(lambda: check.has_collection(old) and check.count(old) == LIBRARY, 480)
        await embedding.stop()

        # A row only the old collection holds: the replay will not produce it.
        t0 = check.get(old, ["t000"], with_vectors=True)["t000"]
        check.upsert(old, [VectorRow("ghost", t0.vector, title="only in the old one")])
        service = QueryService(settings, query_store)
        await service.start()
        await asyncio.wait_for(service.ready.wait(), 60)
        client = QueryClient(settings)
        await client.start()

        async def ghost() -> QueryReply:
            """Tracks similar to the ghost: an answer from the old collection, else not_found."""
            request = {"type": "similar", "request_id": uuid.uuid4().hex, "track_id": "ghost"}
            return await client.ask(request, timeout=20)

        async with asyncio.timeout(30):  # the service picks the row up at its next reconcile
            while not (await ghost()).ok:
                await asyncio.sleep(0.5)

        env = replay_env(settings, milvus_server, prefix, tmp_path / "home")
        code, out = await sonicbus(
            env, "reembed", "--model", "musicnn", "--fresh", "--detach", *WAIT
        )
        assert code == 0, out
        assert f"reset to replay {LIBRARY + CORRUPT} record(s)" in out
        state = check.model_state("musicnn", fresh=True)
        new = state.target
        assert state.active == old and new.startswith(f"{old}_")

        embedding.start()
        async with LagReader(settings.kafka) as reader:
            seen_midway = False
            while True:
                progress = await replay_progress(settings, check, "musicnn", reader)
                if 0 < progress.processed < progress.total and not seen_midway:
                    # Half-way: queries are still answered from the old collection.
                    assert (await ghost()).ok
                    assert check.active_collection("musicnn") == old
                    seen_midway = True
                if progress.caught_up:
                    break
                await asyncio.sleep(0.5)
        assert seen_midway
        assert progress.failures == CORRUPT and progress.processed == progress.total

        # Any terminal's `--status` sees it caught up and makes the new collection active.
        code, out = await sonicbus(env, "reembed", "--model", "musicnn", "--status", "--json")
        assert code == 0, out
        status = json.loads(out[out.index("{") :])
        assert (
            status["replay"]["status"] == "completed" and status["replay"]["note"] == f"kept {old}"
        )
        assert check.model_state("musicnn", fresh=True).active == new
        assert check.count(new) == LIBRARY and check.count(old) == LIBRARY + 1  # old one kept
        async with asyncio.timeout(30):  # the query service follows at its next reconcile
            while (reply := await ghost()).ok:
                await asyncio.sleep(0.5)
        assert reply.error is not None and reply.error.code == "not_found"

        async with LagReader(settings.kafka) as reader:
            report = await reader.describe(embedder_group(settings), prefix=settings.topics.tracks)
        mine = [p for p in report.partitions if p.topic == settings.topics.tracks]
        assert (
            len(mine) == 3
            and [(p.lag, p.pending, p.lag_seconds) for p in mine] == [(0, 0, 0.0)] * 3
        )

        letters = [
            DeadLetter.from_bytes(r.value)
            for r in await drain(settings, settings.topics.dlq, 2 * CORRUPT)
        ]
        assert Counter(d.key for d in letters) == {key: 2 for key in corrupt}  # once per pass
        assert {d.stage for d in letters} == {"audio"}

        emitted = [EmbeddingEvent.from_bytes(r.value) for r in await drain(
            settings, settings.topics.embeddings, 2 * LIBRARY)]  # fmt: skip
        replayed = Counter(
            e.track_id for e in emitted if e.collection == new and e.status == "embedded"
        )
        assert replayed == {f"t{i:03d}": 1 for i in range(LIBRARY)}
        vectors = check.get(new, ["t000", "t150"], with_vectors=True)
        assert all(
            v.vector is not None and np.isfinite(v.vector).all() and v.vector.shape == (1200,)
            for v in vectors.values()
        )
    finally:
        await embedding.stop()
        if client is not None:
            await client.stop()
        if service is not None:
            await service.stop()
        drop_collections(check, prefix)
        for store in (embed_store, query_store, check):
            store.close()


async def test_a_cancelled_replay_resumes_where_it_stopped_and_embeds_each_track_once(
    replay_settings: Settings, producer, milvus_server: str, tmp_path: Path
) -> None:
    prefix = f"c{uuid.uuid4().hex[:8]}_"
    milvus = MilvusSettings(collection_prefix=prefix, uri=milvus_server)
    settings = replay_settings.model_copy(
        update={
            "milvus": milvus,
            "embed": EmbedSettings(batch_tracks=8, idle_unload_s=0, device="cpu"),
        }
    )
    store = VectorStore(milvus, milvus_server)
    store.state_ttl_s = 0.3
    count = 32
    events, _ = library(tmp_path, count, 0)
    await publish(producer, settings, events)
    old = store.collection_name("musicnn")
    embedding = Embedding(settings, store)
    env = replay_env(settings, milvus_server, prefix, tmp_path / "home")
    try:
        # A member of embed-musicnn is consuming: Kafka forbids moving its offsets. Refused,
        # and nothing moved.
        member = make_consumer(
            settings.kafka, settings.topics.tracks, group_id=embedder_group(settings)
        )
        await member.start()
        try:
            async with asyncio.timeout(20):
                while len(member.assignment()) < 3:
                    await member.getmany(timeout_ms=200)
            await member.commit({TopicPartition(settings.topics.tracks, 0): 2})
            before = await group_offsets(settings)
            code, out = await sonicbus(env, "reembed", "--model", "musicnn", "--fresh")
            assert code == 1 and "active member(s)" in out and "--wait" in out, out
            code, out = await sonicbus(env, "reembed", "--model", "nope")
            assert code == 1 and "unknown model 'nope'" in out
            code, out = await sonicbus(env, "reembed", "-m", "musicnn", "--fresh", "--since", "2h")
            assert code == 1 and "drop --since" in out
            assert await group_offsets(settings) == before
            assert store.model_state("musicnn", fresh=True).replay is None
        finally:
            await member.stop()

        replay = await start_replay(settings, store, "musicnn", fresh=True, wait_s=WAIT_S)
        embedding.start()
        async with LagReader(settings.kafka) as reader:
            async with asyncio.timeout(120):
                while (
                    await replay_progress(settings, store, "musicnn", reader)
                ).processed < count // 4:
                    await asyncio.sleep(0.2)
            await cancel_replay(store, "musicnn")

            # The batch in hand finishes; then nothing moves: no embedding, no commit. "Nothing
            # moved for HOLD_S" must outlast one batch (decode, embed, the server's ~2.5 s flush),
            # or a slow batch in hand would look like a held embedder.
            async def still() -> tuple[int, dict]:
                progress = await replay_progress(settings, store, "musicnn", reader)
                return progress.processed, await group_offsets(settings)

            held, stable_since = await still(), asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() - stable_since < HOLD_S:
                await asyncio.sleep(0.4)
                now = await still()
                if now != held:
                    held, stable_since = now, asyncio.get_running_loop().time()
            # Meanwhile no new replay may start, and still nothing moves.
            code, out = await sonicbus(env, "reembed", "--model", "musicnn")
            assert code == 1 and "already cancelled" in out and "--resume" in out
            assert await still() == held
            assert 0 < held[0] < count

            await resume_replay(store, "musicnn")
            async with asyncio.timeout(120):
                while not (
                    progress := await replay_progress(settings, store, "musicnn", reader)
                ).caught_up:
                    await asyncio.sleep(0.3)
        done = await finish_replay(store, progress)
        assert done is not None and done.status == "completed"
        assert store.model_state("musicnn", fresh=True).active == replay.collection
        assert store.count(replay.collection) == count
        assert not store.has_collection(old)  # everything went to the fresh collection

        records = await drain(settings, settings.topics.embeddings, count)
        replayed = Counter(EmbeddingEvent.from_bytes(r.value).track_id for r in records)
        assert replayed == {f"t{i:03d}": 1 for i in range(count)}  # exactly once, across the cancel
        async with LagReader(settings.kafka) as reader:
            partitions = [TopicPartition(settings.topics.embeddings, p) for p in range(3)]
            starts, ends = await reader.log_bounds(partitions)
        assert sum(ends.values()) - sum(starts.values()) == count  # and no other event at all
    finally:
        await embedding.stop()
        drop_collections(store, prefix)
        store.close()


async def test_in_place_replays_skip_unchanged_tracks_unless_forced_and_start_at_since(
    replay_settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    """Milvus Lite (in this process): a replay in place re-reads tracks; unchanged ones are
    skipped, unless --force; --since replays only what was published after that time."""
    from datetime import UTC, datetime

    settings = replay_settings
    lite_store.state_ttl_s = 0.2
    events, _ = library(tmp_path, 8, 0)
    await publish(producer, settings, events)
    embedding = Embedding(settings, lite_store)
    collection = lite_store.collection_name("musicnn")

    async def replay_through(**options) -> list[EmbeddingEvent]:
        async with LagReader(settings.kafka) as reader:
            before = (await reader.log_bounds(embeddings_partitions))[1]
        replay = await start_replay(settings, lite_store, "musicnn", wait_s=WAIT_S, **options)
        embedding.start()
        async with LagReader(settings.kafka) as reader, asyncio.timeout(120):
            while not (
                p := await replay_progress(settings, lite_store, "musicnn", reader)
            ).caught_up:
                await asyncio.sleep(0.3)
        assert (await finish_replay(lite_store, p)).status == "completed"
        await embedding.stop()
        records = await drain(
            settings, settings.topics.embeddings, sum(before.values()) + replay.total
        )
        fresh = [r for r in records if r.offset >= before[TopicPartition(r.topic, r.partition)]]
        return [EmbeddingEvent.from_bytes(r.value) for r in fresh]

    embeddings_partitions = [TopicPartition(settings.topics.embeddings, p) for p in range(3)]
    try:
        embedding.start()
        await wait_for(
            lambda: lite_store.has_collection(collection) and lite_store.count(collection) == 8
        )
        await caught_up(settings)
        await embedding.stop()

        unforced = await replay_through()
        assert sorted((e.track_id, e.status) for e in unforced) == [
            (f"t{i:03d}", "skipped_unchanged") for i in range(8)
        ]

        since = datetime.now(UTC)
        await asyncio.sleep(0.05)
        await publish(producer, settings, events[:3])  # republished, still unchanged
        forced = await replay_through(force=True, since=since)
        assert sorted((e.track_id, e.status) for e in forced) == [
            (f"t{i:03d}", "embedded") for i in range(3)
        ]
        replay = lite_store.model_state("musicnn", fresh=True).replay
        assert replay is not None and replay.status == "completed"
    finally:
        await embedding.stop()
