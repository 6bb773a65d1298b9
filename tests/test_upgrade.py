"""Upgrading sonicbus when a model's vectors change: the library re-embeds itself.

The user's story: an install made with the previous release holds 600-d MusiCNN
vectors. The new release writes 1200-d vectors of another model_version; the
user just starts it. Its embedder sees the stored vectors are not what it
writes and starts the `--fresh` replay itself: a new collection fills while
queries keep being answered from the old one, and once it is caught up the
new collection is the active one, every track at the new dim and version.
Starting the embedder again starts nothing more. A version change alone (same
dim) triggers it too, an embedder of the previous release still in the group
is waited for, and of two new embedders starting together one starts the
replay and the other joins it.

The releases are a stand-in `musicnn` (a fixed random projection of 0.1-s
frames, enriched like every model): what a release changes here is exactly
what it declares, `dim` and `model_version`. Real broker, real Milvus server.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest

from models.base import (
    EmbeddingModel,
    ManagedModel,
    ModelOptions,
    ModelParams,
    TrackAudio,
    TrackEmbedding,
    enrich,
)
from pipeline.bus import make_consumer
from pipeline.client import QueryClient
from pipeline.config import EmbedSettings, MilvusSettings, QuerySettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import QueryService
from pipeline.mainjob import embedder_component
from pipeline.ops.lag import LagReader
from pipeline.ops.progress import replay_progress
from pipeline.ops.upgrade import ModelLayout, bring_up_to_date, inspect
from pipeline.schemas import QueryReply
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import embed_group
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import publish
from tests.fixtures.services import wait_for

pytestmark = pytest.mark.timeout(180)

PREVIOUS = ("musicnn-msd-0123456789-p2", 600)  # what the previous release wrote
NEXT = ("musicnn-msd-mtt-0123456789-p3", 1200)  # what this release writes
FRAME = 1600  # 0.1 s at 16 kHz
STARTED = "re-embedding the library into"


class ReleaseParams(ModelParams):
    dim: int
    version: str


class MusicnnRelease(EmbeddingModel):
    """`musicnn` as one release ships it: a random-init linear model over 0.1-s frames."""

    name = "musicnn"
    sample_rate = 16_000
    params_schema = ReleaseParams
    params: ReleaseParams

    def __init__(self, options: ModelOptions) -> None:
        super().__init__(options)
        self.dim = self.params.dim
        self._weights: np.ndarray | None = None

    @property
    def model_version(self) -> str:
        return self.params.version

    def load(self, device: str) -> None:
        rng = np.random.default_rng(self.dim)
        self._weights = rng.standard_normal((self.dim // 3, FRAME)).astype(np.float32)

    def unload(self) -> None:
        self._weights = None

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        assert self._weights is not None
        out = []
        for track in tracks:
            samples = np.asarray(track.samples, dtype=np.float32)
            count = max(1, samples.size // FRAME)
            frames = np.resize(samples, count * FRAME).reshape(count, FRAME)
            out.append(TrackEmbedding(track.track_id, enrich(self._weights @ frames.T)))
        return out


def release(version: str, dim: int) -> ManagedModel:
    options = ModelOptions(device="cpu", idle_unload_s=0, params={"dim": dim, "version": version})
    return ManagedModel(MusicnnRelease(options))


class Embedder:
    """One embedder process of a release, started and stopped like an operator does."""

    def __init__(self, settings: Settings, store: VectorStore) -> None:
        self.settings, self.store = settings, store
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start_previous(self) -> None:
        """The previous release: its embedder, with no upgrade check."""
        model = release(*PREVIOUS)
        self._run(run_embedder(self.settings, "musicnn", self.stop_event, self.store, model=model))

    def start_next(self) -> None:
        """This release, as `sonicbus up` / `sonicbus embed` run it."""
        component = embedder_component(self.settings, "musicnn", self.store, release(*NEXT))
        self._run(component(self.stop_event))

    def _run(self, work) -> None:  # type: ignore[no-untyped-def]
        self.stop_event.clear()
        self.task = asyncio.create_task(work)

    async def stop(self) -> None:
        self.stop_event.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout=60)
            self.task = None


@pytest.fixture
def upgrade_settings(settings: Settings, milvus_server: str) -> Settings:
    milvus = MilvusSettings(collection_prefix=f"u{uuid.uuid4().hex[:8]}_", uri=milvus_server)
    return settings.model_copy(
        update={
            "milvus": milvus,
            "embed": EmbedSettings(batch_tracks=4, idle_unload_s=0, device="cpu"),
            "query": QuerySettings(cache_refresh_s=1.0, default_timeout_s=20),
            "ops": settings.ops.model_copy(update={"replay_check_s": 0.5}),
        }
    )


@pytest.fixture
def stores(upgrade_settings: Settings):  # type: ignore[no-untyped-def]
    """Stores as separate processes would open them: an embedder's, a query service's, ours."""
    milvus = upgrade_settings.milvus
    opened = [VectorStore(milvus, milvus.uri) for _ in range(3)]
    for store in opened:
        store.state_ttl_s = 0.3
    yield opened
    for name in opened[0].list_collections():
        if name.startswith(milvus.collection_prefix):
            opened[0].drop_collection(name)
    for store in opened:
        store.close()


async def library(producer, settings: Settings, folder: Path, count: int) -> None:  # type: ignore[no-untyped-def]
    events = []
    for i in range(count):
        path = folder / f"song{i:02d}.wav"
        write_song(path, seconds=1.0, seed=300 + i)
        events.append(track_event(path, f"t{i:02d}"))
    await publish(producer, settings, events)


async def test_a_new_release_re_embeds_the_library_while_the_old_vectors_serve(
    upgrade_settings: Settings, stores, producer, tmp_path: Path, caplog
) -> None:
    settings = upgrade_settings
    embed_store, query_store, check = stores
    caplog.set_level(logging.INFO)
    count = 12
    await library(producer, settings, tmp_path, count)
    old = check.collection_name("musicnn")
    embedder = Embedder(settings, embed_store)
    service: QueryService | None = None
    client: QueryClient | None = None
    try:
        # The install the previous release made: 600-d vectors of its version.
        embedder.start_previous()
        await wait_for(lambda: check.has_collection(old) and check.count(old) == count, 60)
        await embedder.stop()
        assert check.dimension(old) == 600
        # A row only the old collection holds: answers about it come from the old vectors.
        t00 = check.get(old, ["t00"], with_vectors=True)["t00"]
        check.upsert(old, [VectorRow("ghost", t00.vector, model_version=PREVIOUS[0])])
        service = QueryService(settings, query_store)
        await service.start()  # `similar` needs no text encoder: no wait for it to warm up
        client = QueryClient(settings)
        await client.start()

        async def ghost() -> QueryReply:
            request = {"type": "similar", "request_id": uuid.uuid4().hex, "track_id": "ghost"}
            return await client.ask(request, timeout=20)

        async with asyncio.timeout(30):
            while not (await ghost()).ok:
                await asyncio.sleep(0.5)

        # The new release starts: nobody runs `sonicbus reembed`.
        embedder.start_next()
        await wait_for(lambda: check.model_state("musicnn", fresh=True).target != old, 30)
        state = check.model_state("musicnn", fresh=True)
        new, replay = state.target, state.replay
        assert state.active == old and new.startswith(f"{old}_")
        assert replay is not None and replay.fresh and replay.status == "running"
        assert replay.reason == (
            f"stored vectors are 600-d from {PREVIOUS[0]}, this version writes 1200-d {NEXT[0]}"
        )
        said = [r.getMessage() for r in caplog.records if STARTED in r.getMessage()]
        assert said == [
            f"musicnn: {replay.reason}; {STARTED} {new} ({count} tracks); queries keep using "
            f"{old} until it is caught up"
        ]

        seen_midway = False
        async with LagReader(settings.kafka) as reader, asyncio.timeout(90):
            while check.model_state("musicnn", fresh=True).active == old:
                progress = await replay_progress(settings, check, "musicnn", reader)
                if 0 < progress.processed < progress.total and not seen_midway:
                    # Half-way: queries still answer from the old collection.
                    assert (await ghost()).ok
                    assert query_store.active_collection("musicnn") == old
                    seen_midway = True
                await asyncio.sleep(0.2)
        assert seen_midway
        # The embedder's own watcher switched it: no `sonicbus serve`, no `reembed --status`.
        state = check.model_state("musicnn", fresh=True)
        assert state.active == state.target == new and state.replay is not None
        assert state.replay.status == "completed" and state.replay.note == f"kept {old}"
        assert check.dimension(new) == 1200 and check.count(new) == count
        rows = check.get(new, [f"t{i:02d}" for i in range(count)], with_vectors=True)
        assert len(rows) == count
        assert {r.model_version for r in rows.values()} == {NEXT[0]}
        assert all(r.vector is not None and r.vector.shape == (1200,) for r in rows.values())
        assert check.count(old) == count + 1  # the old collection is kept
        async with asyncio.timeout(30):  # the query service follows at its next reconcile
            while (reply := await ghost()).ok:
                await asyncio.sleep(0.5)
        assert reply.error is not None and reply.error.code == "not_found"

        # Starting the new release again finds everything current: no second replay.
        await embedder.stop()
        caplog.clear()
        embedder.start_next()
        await wait_for(lambda: any("embedding with musicnn" in r.getMessage()
                                   for r in caplog.records), 30)  # fmt: skip
        assert not [r for r in caplog.records if STARTED in r.getMessage()]
        state = check.model_state("musicnn", fresh=True)
        assert state.active == new and state.replay is not None
        assert (state.replay.id, state.replay.status) == (replay.id, "completed")
    finally:
        await embedder.stop()
        if client is not None:
            await client.stop()
        if service is not None:
            await service.stop()


async def test_a_version_change_alone_waits_for_old_members_and_starts_one_replay(
    upgrade_settings: Settings, stores, producer, tmp_path: Path, caplog
) -> None:
    settings = upgrade_settings
    store = stores[0]
    caplog.set_level(logging.INFO, logger="pipeline.ops.upgrade")
    await library(producer, settings, tmp_path, 6)
    old = store.collection_name("musicnn")
    # What the previous release stored: 600-d rows of its version.
    store.ensure_collection(old, 600)
    vectors = np.random.default_rng(0).standard_normal((6, 600))
    store.upsert(
        old, [VectorRow(f"t{i:02d}", v, model_version="v1") for i, v in enumerate(vectors)]
    )
    same_dim = ModelLayout(model="musicnn", dim=600, model_version="v2")
    seen = await inspect(store, same_dim)
    assert seen.outcome is None and seen.active.other_versions == ["v1"]
    assert (await inspect(store, same_dim.model_copy(update={"model_version": "v1"}))).outcome == (
        "current"
    )

    # An embedder of the previous release is still consuming (a rolling upgrade).
    member = make_consumer(
        settings.kafka, settings.topics.tracks, group_id=embed_group(settings, "musicnn")
    )
    await member.start()
    stop = asyncio.Event()
    new = [release("v2", 600).model for _ in range(2)]
    try:
        async with asyncio.timeout(20):
            while not member.assignment():
                await member.getmany(timeout_ms=200)
        # Two embedders of the new release start at once.
        starting = [asyncio.create_task(bring_up_to_date(settings, store, m, stop)) for m in new]
        async with asyncio.timeout(20):
            while not any("waiting for the 1 member(s)" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.1)
        assert store.model_state("musicnn", fresh=True).replay is None  # nothing moved yet
    finally:
        await member.stop()
    outcomes = await asyncio.wait_for(asyncio.gather(*starting), 60)
    assert sorted(outcomes) == ["joined", "started"]
    assert len([r for r in caplog.records if STARTED in r.getMessage()]) == 1
    state = store.model_state("musicnn", fresh=True)
    assert state.active == old and state.replay is not None and state.replay.fresh
    assert state.replay.reason == "stored vectors are 600-d from v1, this version writes 600-d v2"
    assert state.replay.total == 6


async def test_an_upgrade_of_an_empty_library_starts_a_new_collection(
    upgrade_settings: Settings, stores
) -> None:
    """Nothing on `tracks` to replay: the new release writes a new collection at once."""
    store = stores[0]
    old = store.collection_name("musicnn")
    store.ensure_collection(old, 600)
    store.upsert(old, [VectorRow("gone", np.ones(600), model_version=PREVIOUS[0])], flush=False)
    outcome = await bring_up_to_date(upgrade_settings, store, release(*NEXT).model, asyncio.Event())
    assert outcome == "started"
    state = store.model_state("musicnn", fresh=True)
    assert state.active == state.target and state.active.startswith(f"{old}_")
    assert state.replay is None and store.count(old) == 1  # the old collection is kept
