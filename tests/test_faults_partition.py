"""A network partition: an embedder cut off from the broker (and from Milvus) for 30 s.

The user's story: one `sonicbus embed` process runs on a machine whose network drops out
in the middle of a batch. The process is left alone, in its own network namespace whose
link to the broker the test pulls (`ip link set ... down`: packets vanish, nothing is
refused), while the library keeps changing on the other side: new tracks are published
and a track already embedded is replaced by a new file. When the link comes back the
same process, never restarted by anyone, carries on: every track is stored once with its
current fingerprint and the model's version, the group's lag is 0, the dead-letter topic
holds only the planted corrupt file.

Runs under `infra/test.sh --faults` (marker `faults`): it needs root, its own broker and
a 30 s outage.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from pipeline.bus import make_consumer, make_producer
from pipeline.config import KafkaSettings, MilvusSettings, Settings
from pipeline.schemas import EmbeddingEvent, TrackEvent
from pipeline.store import StoredTrack, VectorStore
from pipeline.topics import embed_group, ensure_topics
from pipeline.wiring import embedding_model
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import committed_offsets, dead_letters
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.netns import NETNS_KAFKA_PORT, NetworkNamespace
from tests.fixtures.services import base_settings, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.milvus_server, pytest.mark.timeout(420)]

OUTAGE_S = 30.0
BEFORE_CUT = 16  # tracks published before the cut (the cut comes after the first few)
DURING_CUT = 6  # tracks published while the embedder is cut off


async def publish(settings: Settings, events: list[TrackEvent | None], keys: list[str]) -> None:
    producer = make_producer(settings.kafka, role="test")
    await producer.start()
    try:
        for event, key in zip(events, keys, strict=True):
            value = event.to_bytes() if event is not None else None
            await producer.send_and_wait(settings.topics.tracks, value, key=key.encode())
    finally:
        await producer.stop()


async def group_lag(settings: Settings, group: str) -> int:
    """Records of `tracks` the group has not committed yet, over every partition."""
    partitions = [TopicPartition(settings.topics.tracks, p) for p in range(3)]
    consumer = make_consumer(settings.kafka, group_id=None, role="test-offsets")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    committed = await committed_offsets(settings, group)
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)


async def embedded_events(settings: Settings) -> list[EmbeddingEvent]:
    consumer = make_consumer(settings.kafka, settings.topics.embeddings, group_id=None)
    await consumer.start()
    events: list[EmbeddingEvent] = []
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                events.extend(EmbeddingEvent.from_bytes(r.value) for r in records)
    finally:
        await consumer.stop()
    return events


def fingerprint(path: Path) -> str:
    """The fingerprint token an embedder stores for the file as it is now."""
    event = track_event(path, "any")
    assert event.fingerprint is not None
    return event.fingerprint.token()


def log_levels(path: Path) -> Counter[str]:
    """Lines per level in a JSON-lines log (`other` for what is not JSON, e.g. tracebacks)."""
    levels: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            levels[json.loads(line)["level"]] += 1
        except (ValueError, KeyError, TypeError):
            levels["other"] += 1
    return levels


async def test_an_embedder_cut_off_for_30_s_resumes_without_losing_work(
    network_namespace: NetworkNamespace,
    netns_kafka: str,
    netns_milvus: str,
    milvus_server: str,
    tmp_path: Path,
) -> None:
    ns = network_namespace
    settings = base_settings(
        kafka=KafkaSettings(bootstrap_servers=netns_kafka, local_port=NETNS_KAFKA_PORT)
    )
    await ensure_topics(settings.kafka, settings.topics)
    prefix = f"part_{settings.topics.prefix.strip('.')}_"
    store = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
    collection = store.collection_name("musicnn")
    version = embedding_model(settings, "musicnn").model.model_version

    music = tmp_path / "music"
    music.mkdir()
    paths = {}
    for i in range(BEFORE_CUT + DURING_CUT):
        paths[f"n{i:02d}"] = music / f"song{i:02d}.wav"
        write_song(paths[f"n{i:02d}"], seconds=6, seed=300 + i)
    corrupt = music / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 12)
    first = [track_event(paths[f"n{i:02d}"], f"n{i:02d}") for i in range(BEFORE_CUT)]
    first.insert(5, track_event(corrupt, "corrupt"))
    await publish(settings, first, [e.track_id for e in first])

    log_path = tmp_path / "embed.log"
    env = cli_env(
        settings,
        SONICBUS_MILVUS__URI=netns_milvus,
        SONICBUS_MILVUS__COLLECTION_PREFIX=prefix,
        SONICBUS_EMBED__BATCH_TRACKS="2",
        SONICBUS_EMBED__DEVICE="cpu",
        SONICBUS_LOG_FORMAT="json",
        SONICBUS_HOME=str(tmp_path / "home"),
    )

    def stored() -> dict[str, StoredTrack]:
        if not store.has_collection(collection):
            return {}
        return store.get(collection, sorted(paths))

    with log_path.open("w") as log_file:
        embedder = subprocess.Popen(
            ns.command(sonicbus_command("embed", "--model", "musicnn")),
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        assert ns.reaches(NETNS_KAFKA_PORT), "the namespace does not reach its broker"
        await wait_for(lambda: len(stored()) >= 3, timeout=180, interval=0.2)

        # The cut, in the middle of the backlog.
        ns.cut()
        cut_at = time.monotonic()
        at_cut = len(stored())
        assert at_cut < BEFORE_CUT, "the backlog was done before the cut"
        assert not ns.reaches(NETNS_KAFKA_PORT), "the cut let the broker through"

        # Meanwhile, on the broker's side: new tracks, and n00's file replaced.
        write_song(paths["n00"], seconds=7, seed=999)
        new_ids = [f"n{i:02d}" for i in range(BEFORE_CUT, BEFORE_CUT + DURING_CUT)]
        during = [track_event(paths[track_id], track_id) for track_id in new_ids]
        during.append(track_event(paths["n00"], "n00"))
        await publish(settings, during, [e.track_id for e in during])

        await asyncio.sleep(5)
        frozen = len(stored())  # a batch in flight at the cut cannot reach Milvus either
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        assert len(stored()) == frozen, "rows were written through the cut"
        assert embedder.poll() is None, "the embedder exited while cut off"
        ns.restore()
        restored_at = time.monotonic()
        link_back_s = ns.reaches_within(NETNS_KAFKA_PORT, seconds=30)
        assert link_back_s is not None, "the broker is still out of reach after the cut"

        # Afterwards: every track, each with its current file's fingerprint.
        current = {track_id: fingerprint(path) for track_id, path in paths.items()}

        def caught_up() -> bool:
            return {k: r.fingerprint for k, r in stored().items()} == current

        await wait_for(caught_up, timeout=240, interval=0.5)
        caught_up_s = time.monotonic() - restored_at
        group = embed_group(settings, "musicnn")
        async with asyncio.timeout(90):  # the last batch's commit follows its rows
            while await group_lag(settings, group) != 0:
                await asyncio.sleep(1)
        assert embedder.poll() is None, "the embedder exited"

        rows = stored()
        assert sorted(rows) == sorted(paths)
        assert {r.model_version for r in rows.values()} == {version}
        assert store.count(collection) == len(paths)  # each track once, no strays
        letters = await dead_letters(settings)
        assert letters and {d.key for d in letters} == {"corrupt"}
        assert all(d.stage == "audio" for d in letters)

        # Every track is announced on `embeddings`. A batch whose rows were written but
        # whose events could not be sent (the broker still out of reach) is retried, finds
        # its rows stored and announces them as `skipped_unchanged`: counted, reported.
        events = await embedded_events(settings)
        announced = {e.track_id for e in events if e.status in ("embedded", "skipped_unchanged")}
        assert announced == set(paths)
        per_track = Counter(e.track_id for e in events if e.status == "embedded")
        only_skipped = sorted(set(paths) - set(per_track))
        # n00 twice on purpose (a new file); anything else twice was in flight at the cut.
        again = sorted(t for t, n in per_track.items() if n > 1 and t != "n00")
    finally:
        if embedder.poll() is None:
            embedder.send_signal(signal.SIGTERM)
            try:
                embedder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                embedder.kill()
                embedder.wait(timeout=10)
        if store.has_collection(collection):
            store.drop_collection(collection)
        store.close()
    assert embedder.returncode == 0, log_path.read_text()[-3000:]
    levels = log_levels(log_path)
    crashes = sum("crashed; restarting" in line for line in log_path.read_text().splitlines())
    print(
        f"\npartition {OUTAGE_S:.0f} s: {at_cut} of {BEFORE_CUT} first tracks stored at the "
        f"cut; broker reachable {link_back_s:.1f} s after the link came back, every track "
        f"stored after {caught_up_s:.1f} s; embedded again after the cut: {again or 'none'}; "
        f"announced only as skipped_unchanged: {only_skipped or 'none'}; "
        f"dead letters: {len(letters)}; component restarts: {crashes}; "
        f"log lines per level: {dict(levels)}"
    )
