"""Processes die under load on a three-broker cluster, and nothing is lost (`--faults`).

The story: two `sonicbus embed` processes ingest a library and two `sonicbus
query` replicas answer a client asking ten times a second. A third embedder
joins just as one of the first two is `kill -9`'d, and one query replica is
`kill -9`'d as well. Every track is embedded, the lag goes back to 0, and
every request is answered (a request the dead replica held is answered by the
other one, from the last commit: duplicates allowed, never a silence).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from pipeline.bus import make_producer
from pipeline.config import MilvusSettings
from pipeline.store import VectorStore
from pipeline.topics import embed_group, ensure_topics, query_group
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import publish
from tests.fixtures.cluster import (
    AskingClient,
    EmbeddingWatch,
    KafkaCluster,
    cluster_settings,
    pipeline_env,
    restarts_in,
    spawn,
    stop_all,
    wait_lag_zero,
)
from tests.fixtures.services import wait_for

TRACKS = 90
BATCH_TRACKS = 2


@pytest.mark.faults
@pytest.mark.timeout(900)
async def test_an_embedder_and_a_query_replica_killed_lose_nothing(
    kafka_cluster: KafkaCluster, milvus_server: str, tmp_path: Path
) -> None:
    prefix = f"fr_{int(time.time() * 1000) % 10**9}_"
    settings = cluster_settings(
        kafka_cluster, milvus=MilvusSettings(uri=milvus_server, collection_prefix=prefix)
    )
    await ensure_topics(settings.kafka, settings.topics)
    events = []
    for i in range(TRACKS):
        path = tmp_path / f"song{i:04d}.wav"
        write_song(path, seconds=3.0, seed=1000 + i)
        events.append(track_event(path, f"r{i:04d}"))

    env = pipeline_env(milvus_server, prefix, BATCH_TRACKS)
    logs = {name: tmp_path / f"{name}.log" for name in ("e1", "e2", "e3", "q1", "q2")}
    embed = ("embed", "--model", "musicnn")
    embedders = [spawn(settings, logs[n], *embed, **env) for n in ("e1", "e2")]
    replicas = [spawn(settings, logs[n], "query", **env) for n in ("q1", "q2")]
    watch = EmbeddingWatch(settings)
    asker = AskingClient(settings, seeds=[e.track_id for e in events[:5]])
    stop_asking, answering = asyncio.Event(), asyncio.Event()
    watching = asyncio.create_task(watch.run())
    asking = asyncio.create_task(asker.run(stop_asking, answering))
    try:
        await asyncio.wait_for(answering.wait(), timeout=600)  # the replicas are up
        producer = make_producer(settings.kafka, role="t-library")
        await producer.start()
        try:
            await publish(producer, settings, events)
        finally:
            await producer.stop()
        # Both replicas answer before one dies: a reply for a request on each.
        await wait_for(lambda: asker.replies >= 30, timeout=300, interval=0.2)
        await wait_for(lambda: watch.distinct >= TRACKS // 3, timeout=600, interval=0.1)
        embedders.append(spawn(settings, logs["e3"], *embed, **env))
        embedders[0].send_signal(signal.SIGKILL)
        replicas[0].send_signal(signal.SIGKILL)
        print(f"\nkilled an embedder and a query replica at {watch.distinct}/{TRACKS} embedded, "
              f"{asker.asked} requests asked")  # fmt: skip

        await wait_for(lambda: watch.distinct == TRACKS, timeout=600, interval=0.3)
        await wait_lag_zero(settings, embed_group(settings, "musicnn"))
        stop_asking.set()
        await asking
        await wait_lag_zero(settings, query_group(settings), timeout=60)
    finally:
        stop_asking.set()
        codes = stop_all([*embedders, *replicas])
        watching.cancel()
        await asyncio.gather(watching, asking, return_exceptions=True)

    restarts = restarts_in([*logs.values()])
    print(f"embedded more than once: {watch.embedded_twice}; longest pause in embedding "
          f"{watch.longest_pause():.1f} s, in answering {asker.longest_pause():.1f} s; "
          f"requests {asker.asked}, answered {asker.replies}, error replies "
          f"{dict(asker.error_replies)}, silent timeouts {asker.silent_timeouts}, duplicate "
          f"replies dropped {asker.duplicates}; restarts {restarts}")  # fmt: skip
    assert codes[0] == -signal.SIGKILL and codes[3] == -signal.SIGKILL
    assert codes[1:3] == [0, 0] and codes[4] == 0
    store = VectorStore(settings.milvus, milvus_server)
    try:
        collection = store.collection_name("musicnn")
        assert sorted(store.get(collection, [e.track_id for e in events])) == sorted(
            e.track_id for e in events
        )
    finally:
        for name in store.list_collections():
            if name.startswith(prefix):
                store.drop_collection(name)
        store.close()
    assert asker.silent_timeouts == 0
    assert asker.replies + sum(asker.error_replies.values()) == asker.asked
