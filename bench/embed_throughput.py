"""End-to-end embedding throughput of the `embed-musicnn` consumer on this machine.

Generates N tracks of synthetic music (default 40 x 30 s WAV), publishes them to
the real broker (started or reused on a bench port), runs the embedding
consumer with Milvus Lite until every track is stored, and reports tracks/s,
seconds of audio per second, per-stage times and peak memory.
Usage: .venv/bin/python bench/embed_throughput.py [--tracks N] [--seconds S] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from corpus import publish, write_tracks
from machine import machine_info

from pipeline import infra
from pipeline.bus import make_consumer
from pipeline.config import (
    EmbedSettings,
    KafkaSettings,
    MilvusSettings,
    Settings,
    TopicSettings,
)
from pipeline.consumers.embedder import run_embedder
from pipeline.schemas import EmbeddingEvent
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics

BENCH_HOME = Path(tempfile.gettempdir()) / "sonicbus-bench"
KAFKA_PORT = 39292
TARGET_REALTIME_FACTOR = 20.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=8, help="embed.batch_tracks (default 8)")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.seconds, args.batch = 3, 3.0, 2
    home, port = (smoke.HOME, smoke.KAFKA_PORT) if args.smoke else (BENCH_HOME, KAFKA_PORT)

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(
        home=home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", local_port=port),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix, partitions=3),
        embed=EmbedSettings(batch_tracks=args.batch, idle_unload_s=0, device="cpu"),
    )
    infra.start_kafka(settings)
    await ensure_topics(settings.kafka, settings.topics)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        await publish(settings, write_tracks(folder, [args.seconds] * args.tracks))

        store = VectorStore(MilvusSettings(), str(folder / "bench.db"))
        collection = store.collection_name("musicnn")
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
        embedded = await read_events(settings, args.tracks, task)
        elapsed = time.perf_counter() - started
        stop.set()
        await task
        stored = store.count(collection)
        store.close()

    first_done = min(e[0] for e in embedded)
    steady = [t for t, _ in embedded]
    steady_s = max(steady) - first_done
    steady_tracks = len(embedded) - 1
    timings = [e for _, e in embedded]
    audio_total = args.tracks * args.seconds
    steady_rate = steady_tracks / steady_s if steady_s > 0 else float("nan")
    result = {
        "bench": "embed_throughput",
        "smoke": args.smoke,
        "model": "musicnn",
        "tracks": args.tracks,
        "track_seconds": args.seconds,
        "batch_tracks": args.batch,
        "stored_rows": stored,
        "wall_s_including_model_load": round(elapsed, 2),
        "tracks_per_s": round(args.tracks / elapsed, 2),
        "steady_tracks_per_s": round(steady_rate, 2),
        "realtime_factor": round(audio_total / elapsed, 1),
        "steady_realtime_factor": round(steady_rate * args.seconds, 1),
        "mean_decode_ms": round(sum(t.decode_ms for t in timings) / len(timings), 1),
        "mean_embed_ms": round(sum(t.embed_ms for t in timings) / len(timings), 1),
        "mean_upsert_ms": round(sum(t.upsert_ms for t in timings) / len(timings), 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "target": {"steady_realtime_factor": TARGET_REALTIME_FACTOR},
        "machine": machine_info(),
    }
    print(json.dumps(result))
    if stored != args.tracks:
        raise SystemExit(f"{stored} rows stored for {args.tracks} tracks")


async def read_events(
    settings: Settings, expected: int, embedder: asyncio.Task[None]
) -> list[tuple[float, object]]:
    """(arrival time, timings) of each `embedded` event, read as they come (the embedder's
    error, should it stop before)."""
    consumer = make_consumer(settings.kafka, settings.topics.embeddings, group_id=None)
    await consumer.start()
    seen: list[tuple[float, object]] = []
    try:
        while len(seen) < expected:
            if embedder.done():
                embedder.result()
                raise SystemExit(f"the embedder stopped after {len(seen)} of {expected} tracks")
            batch = await consumer.getmany(timeout_ms=500)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = EmbeddingEvent.from_bytes(record.value)
                    if event.status == "embedded":
                        seen.append((now, event.timings))
    finally:
        await consumer.stop()
    return seen


if __name__ == "__main__":
    asyncio.run(main())
