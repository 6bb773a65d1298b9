"""Bulk re-embed by replay: throughput, and how good the ETA shown at 10 % progress was.

Generates N short synthetic tracks (1-3 s WAV, lengths shuffled), publishes them
to the real broker (started or reused on a bench port; a small unmeasured
replay runs first, so a freshly started broker's JIT and torch's first calls
do not land in the measured one), starts a `--fresh`
replay of `embed-musicnn` exactly as `sonicbus reembed` does, runs the
embedder in this process with Milvus Lite, and follows progress the way the
command's progress bar does (every 0.5 s: processed/total, rate, ETA). It
reports the replay's throughput and compares the ETA shown when progress
first reached 10 % with the time the replay really took from there (target:
within +-20 %). Ends with one JSON line.
Usage: .venv/bin/python bench/reembed.py [--tracks N] [--batch B] [--warmup N] [--samples]
       [--keep-broker] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import time
import uuid
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR.parent))

import smoke  # noqa: E402
from corpus import publish, write_tracks  # noqa: E402
from machine import machine_info  # noqa: E402

from pipeline import infra  # noqa: E402
from pipeline.config import EmbedSettings, KafkaSettings, Settings, TopicSettings  # noqa: E402
from pipeline.consumers.embedder import run_embedder  # noqa: E402
from pipeline.logs import setup_logging  # noqa: E402
from pipeline.ops.lag import LagReader  # noqa: E402
from pipeline.ops.progress import ReplayRate, finish_replay, replay_progress  # noqa: E402
from pipeline.ops.replay import start_replay  # noqa: E402
from pipeline.store import VectorStore  # noqa: E402
from pipeline.topics import ensure_topics  # noqa: E402

BENCH_HOME = Path("/tmp/sonicbus-bench-r")
KAFKA_PORT = 39692
TARGET_ETA_ERROR = 0.20


async def publish_library(settings: Settings, folder: Path, count: int, seed: int) -> None:
    """`count` songs of 1-3 s (lengths shuffled), written to `folder` and published."""
    rng = random.Random(seed)
    lengths = [rng.uniform(1.0, 3.0) for _ in range(count)]
    await publish(settings, write_tracks(folder / f"seed{seed}", lengths, seed=seed))


async def follow_replay(settings: Settings, store: VectorStore) -> dict:
    """Start the replay, run the embedder, sample progress like the progress bar; the figures."""
    replay = await start_replay(settings, store, "musicnn", fresh=True)
    started = time.monotonic()
    stop = asyncio.Event()
    embedder = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    rate = ReplayRate()
    samples: list[tuple[float, int, float | None]] = []
    at_10: tuple[float, float | None, int] | None = None
    try:
        async with LagReader(settings.kafka) as reader:
            while True:
                progress = await replay_progress(settings, store, "musicnn", reader, rate)
                now = time.monotonic()
                samples.append((now - started, progress.processed, progress.eta_s))
                if at_10 is None and progress.processed >= 0.10 * progress.total:
                    at_10 = (now, progress.eta_s, progress.processed)
                    print(f"10 %: {progress.processed}/{progress.total}, ETA {progress.eta_s} s")
                if progress.caught_up:
                    break
                await asyncio.sleep(0.5)
        done = time.monotonic()
        finished = await finish_replay(store, progress)
    finally:
        stop.set()
        await asyncio.wait_for(embedder, timeout=120)
    assert finished is not None and finished.status == "completed" and at_10 is not None
    t10, eta10, processed10 = at_10
    actual = done - t10
    error = (eta10 - actual) / actual if eta10 is not None and actual > 0 else None
    return {
        "tracks": replay.total,
        "rows": store.count(replay.collection),
        "replay_s": round(done - started, 2),
        "throughput_tracks_per_s": round(replay.total / (done - started), 2),
        "steady_tracks_per_s": round((replay.total - processed10) / actual, 2) if actual else None,
        "first_progress_after_s": next(round(t, 2) for t, n, _ in samples if n > 0),
        "eta_at_10pct_s": eta10,
        "actual_remaining_at_10pct_s": round(actual, 2),
        "eta_error_pct": round(100 * error, 1) if error is not None else None,
        "eta_within_20pct": error is not None and abs(error) <= TARGET_ETA_ERROR,
        "samples": samples,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=400)
    parser.add_argument("--batch", type=int, default=8, help="embed.batch_tracks (default 8)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=40,
        help="Tracks of an unmeasured replay first (a fresh broker's JIT, torch's first calls).",
    )
    parser.add_argument("--samples", action="store_true", help="Print every progress sample.")
    parser.add_argument("--keep-broker", action="store_true", help="Leave the bench broker up.")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.batch, args.warmup = 12, 4, 0
    home, port = (smoke.HOME, smoke.KAFKA_PORT) if args.smoke else (BENCH_HOME, KAFKA_PORT)
    setup_logging("WARNING", "console")  # also quiets Milvus Lite's gRPC tracebacks
    load_before = os.getloadavg()[0]

    run = uuid.uuid4().hex[:6]
    settings = Settings(
        home=home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", local_port=port),
        topics=TopicSettings(prefix=f"bench{run}.", group_prefix=f"bench{run}.", partitions=3),
        embed=EmbedSettings(batch_tracks=args.batch, idle_unload_s=0, device="cpu"),
    )
    home.mkdir(parents=True, exist_ok=True)
    started_broker = not infra.port_open(port)
    print(f"broker 127.0.0.1:{port} ({'starting' if started_broker else 'reusing'})")
    infra.start_kafka(settings)
    database = home / f"milvus-{run}.db"
    music = home / f"music-{run}"
    try:
        store = VectorStore(settings.milvus, str(database))
        try:
            if args.warmup:
                warm_topics = TopicSettings(
                    prefix=f"bench{run}w.", group_prefix=f"bench{run}w.", partitions=3
                )
                warm = settings.model_copy(update={"topics": warm_topics})
                await ensure_topics(warm.kafka, warm.topics)
                await publish_library(warm, music, args.warmup, seed=3)
                await follow_replay(warm, store)
                print(f"warm-up replay of {args.warmup} tracks done", flush=True)
            await ensure_topics(settings.kafka, settings.topics)
            print(f"writing and publishing {args.tracks} tracks ...", flush=True)
            await publish_library(settings, music, args.tracks, seed=7)
            figures = await follow_replay(settings, store)
        finally:
            store.close()
    finally:
        shutil.rmtree(music, ignore_errors=True)
        shutil.rmtree(database, ignore_errors=True)  # Milvus Lite keeps a folder
        if started_broker and not args.keep_broker:
            infra.stop_kafka(settings)
    samples = figures.pop("samples")
    if args.samples:
        for t, processed, eta in samples:
            print(f"{t:7.2f} {processed:5d} {eta}")
    print(
        f"replayed {figures['tracks']} tracks in {figures['replay_s']} s "
        f"({figures['throughput_tracks_per_s']} tracks/s overall, "
        f"{figures['steady_tracks_per_s']} after 10 %); ETA at 10 %: "
        f"{figures['eta_at_10pct_s']} s, really {figures['actual_remaining_at_10pct_s']} s "
        f"({figures['eta_error_pct']} %, target +-{TARGET_ETA_ERROR:.0%})"
    )
    result = {
        "bench": "reembed",
        "smoke": args.smoke,
        **figures,
        "batch_tracks": args.batch,
        "warmup_tracks": args.warmup,
        "milvus": "lite",
        "target": {"eta_error_pct_at_most": round(100 * TARGET_ETA_ERROR)},
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": machine_info(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
