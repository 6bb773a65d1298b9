"""A broker dies mid-ingest, on a three-broker cluster, and nothing is lost.

The story of a user who outgrew one machine: three Kafka brokers (replication
factor 3, min.insync.replicas=2), two `sonicbus embed` processes and two
`sonicbus query` replicas on one Milvus server, a library being ingested and a
client asking `similar` ten times a second. The broker that leads most
`tracks` partitions is `kill -9`'d a third of the way through and comes back at
two thirds. Afterwards every track is stored with its current fingerprint and
model version, the lag is back to 0, re-embedded tracks are no more than what
was in flight at the fault, the DLQ holds only the planted corrupt files, and
every request got a reply or an error reply (no silent timeout). The longest
pauses in embedding and in answering are printed.

The default suite runs a short library (CI); `--faults` the full 300 tracks.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipeline.bus import make_producer
from pipeline.config import MilvusSettings, Settings
from pipeline.store import VectorStore
from pipeline.topics import embed_group, ensure_topics, query_group, topic_config
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import dead_letters, publish
from tests.fixtures.cluster import (
    AskingClient,
    EmbeddingWatch,
    KafkaCluster,
    cluster_settings,
    committed_records,
    partition_leaders,
    pipeline_env,
    restarts_in,
    spawn,
    stop_all,
    topic_replication,
    wait_lag_zero,
)
from tests.fixtures.services import wait_for

CORRUPT = 2
BATCH_TRACKS = 2


async def ingest_with_a_broker_killed(
    cluster: KafkaCluster, milvus: str, folder: Path, tracks: int, seconds: float
) -> None:
    prefix = f"fb_{int(time.time() * 1000) % 10**9}_"
    settings: Settings = cluster_settings(
        cluster, milvus=MilvusSettings(uri=milvus, collection_prefix=prefix)
    )
    await ensure_topics(settings.kafka, settings.topics)
    tracks_topic = settings.topics.tracks
    assert set(await topic_replication(settings.kafka, tracks_topic)) == {3}
    assert (await topic_config(settings.kafka, tracks_topic))["min.insync.replicas"] == "2"

    # The library: generated songs, and two files that are not audio at all.
    events = []
    for i in range(tracks):
        path = folder / f"song{i:04d}.wav"
        write_song(path, seconds=seconds, seed=i)
        events.append(track_event(path, f"s{i:04d}"))
    corrupt = set()
    for i in range(CORRUPT):
        path = folder / f"broken{i}.wav"
        path.write_bytes(b"RIFF not really a wave file " * 50)
        events.insert((i + 1) * len(events) // (CORRUPT + 1), track_event(path, f"bad{i}"))
        corrupt.add(f"bad{i}")

    env = pipeline_env(milvus, prefix, BATCH_TRACKS)
    logs = [folder / f"{name}.log" for name in ("embed-1", "embed-2", "query-1", "query-2")]
    processes = [
        spawn(settings, logs[0], "embed", "--model", "musicnn", **env),
        spawn(settings, logs[1], "embed", "--model", "musicnn", **env),
        spawn(settings, logs[2], "query", **env),
        spawn(settings, logs[3], "query", **env),
    ]
    watch = EmbeddingWatch(settings)
    asker = AskingClient(settings, seeds=[e.track_id for e in events[:5]])
    stop_asking, answering = asyncio.Event(), asyncio.Event()
    watching = asyncio.create_task(watch.run())
    asking = asyncio.create_task(asker.run(stop_asking, answering))
    killed = None
    try:
        await asyncio.wait_for(answering.wait(), timeout=600)  # the replicas are up
        producer = make_producer(settings.kafka, role="t-library")
        await producer.start()
        try:
            await publish(producer, settings, events)
        finally:
            await producer.stop()

        await wait_for(lambda: watch.distinct >= tracks // 3, timeout=600, interval=0.1)
        leaders = await partition_leaders(settings.kafka, tracks_topic)
        killed = leaders.most_common(1)[0][0]
        group = embed_group(settings, "musicnn")
        finished = await committed_records(settings, group)
        seen = watch.distinct + len(await dead_letters(settings))
        in_flight = max(0, seen - finished) + 2 * BATCH_TRACKS
        cluster.kill(killed)
        killed_at = time.monotonic()
        print(f"\nkilled node {killed} (leads {leaders[killed]} of 6 tracks partitions) "
              f"at {watch.distinct}/{tracks} embedded; in flight: {in_flight}")  # fmt: skip

        await wait_for(lambda: watch.distinct >= 2 * tracks // 3, timeout=600, interval=0.2)
        await asyncio.to_thread(cluster.restart, killed)
        print(f"restarted node {killed} after {time.monotonic() - killed_at:.1f} s, "
              f"at {watch.distinct}/{tracks} embedded")  # fmt: skip
        killed = None

        await wait_for(lambda: watch.distinct == tracks, timeout=600, interval=0.3)
        await wait_lag_zero(settings, group)
        stop_asking.set()
        await asking
        await wait_lag_zero(settings, query_group(settings), timeout=60)
    finally:
        stop_asking.set()
        if killed is not None:
            await asyncio.to_thread(cluster.restart, killed)
        codes = stop_all(processes)
        watching.cancel()
        await asyncio.gather(watching, asking, return_exceptions=True)

    crashes = restarts_in(logs)
    print(f"embedded more than once: {watch.embedded_twice} (bound: {in_flight}); "
          f"longest pause in embedding: {watch.longest_pause():.1f} s; "
          f"in answering: {asker.longest_pause():.1f} s")  # fmt: skip
    print(f"requests: {asker.asked} asked, {asker.replies} answered, "
          f"error replies {dict(asker.error_replies)}, silent timeouts {asker.silent_timeouts}, "
          f"duplicate replies dropped {asker.duplicates}; restarts: {crashes}")  # fmt: skip
    assert codes == [0, 0, 0, 0], [log.read_text()[-3000:] for log in logs]

    # Every track's row carries its current fingerprint and model version.
    assert len(watch.model_versions) == 1
    store = VectorStore(settings.milvus, milvus)
    try:
        collection = store.collection_name("musicnn")
        good = [e for e in events if e.track_id not in corrupt]
        rows = store.get(collection, [e.track_id for e in good])
        assert sorted(rows) == sorted(e.track_id for e in good)
        for event in good:
            assert event.fingerprint is not None
            assert rows[event.track_id].fingerprint == event.fingerprint.token()
            assert rows[event.track_id].model_version in watch.model_versions
        assert store.count(collection) == len(good)
    finally:
        for name in store.list_collections():
            if name.startswith(prefix):
                store.drop_collection(name)
        store.close()

    assert watch.embedded_twice <= in_flight
    letters = await dead_letters(settings)
    assert {letter.key for letter in letters} == corrupt
    assert asker.silent_timeouts == 0
    assert asker.asked >= 10 and asker.replies > 0


@pytest.mark.timeout(420)
async def test_a_broker_killed_mid_ingest_loses_nothing_short(
    kafka_cluster: KafkaCluster, milvus_server: str, tmp_path: Path
) -> None:
    """CI's version: a short library of short songs."""
    await ingest_with_a_broker_killed(kafka_cluster, milvus_server, tmp_path, 45, seconds=3.0)


@pytest.mark.faults
@pytest.mark.timeout(1800)
async def test_a_broker_killed_mid_ingest_loses_nothing(
    kafka_cluster: KafkaCluster, milvus_server: str, tmp_path: Path
) -> None:
    """The full version (`--faults`): 300 songs."""
    await ingest_with_a_broker_killed(kafka_cluster, milvus_server, tmp_path, 300, seconds=5.0)
