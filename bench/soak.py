"""Soak: a long ingest under steady query load; does memory or latency creep?

What it does, in order:
1. starts (or reuses) a Kafka broker on a bench port (39592, home /tmp/sonicbus-bench-soak)
   and the embedded Milvus server (port 39830; --milvus-port 39530 shares the tests' one)
   through the infra scripts users run;
2. writes N short tagged FLAC files (default 5,000, 5-10 s each, seeded);
3. starts E `sonicbus embed` processes (group embed-musicnn) and one `sonicbus query`
   process, each as its own process on the Milvus server, logging JSON to a file;
4. publishes the tracks at an even pace over the ingestion window (total minutes minus
   the settle time) while one client asks `similar` (a random track already embedded,
   limit 25) at a fixed rate (default 20 requests/s, open loop: a slow reply does not slow
   the next request down);
5. samples each process' resident memory (VmRSS from /proc) after the warm-up (the first
   tenth of the window), when every track is embedded (end of ingestion) and after the
   settle time (default 5 minutes) of queries alone; the target: no process grows more
   than 10 % over its warm-up figure;
6. compares p99 latency in the first and the last fifth of the ingestion (after warm-up),
   and counts the ERROR and WARNING lines of every process' log.
Prints progress on stderr and ends with ONE JSON line.

Usage: .venv/bin/python bench/soak.py [--tracks 5000] [--minutes 30] [--settle-minutes 5]
       [--rps 20] [--embedders 1] [--milvus-port 39830] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info
from processes import Service, rss_mib, start_service, stop_services

from pipeline import infra
from pipeline.bus import make_admin, make_consumer, make_producer
from pipeline.client import QueryClient, QueryTimeout
from pipeline.config import KafkaSettings, MilvusSettings, Settings, TopicSettings
from pipeline.producers.music_folder import Candidate, events_for, inspect
from pipeline.producers.samplefiles import write_tagged_audio
from pipeline.schemas import EmbeddingEvent, TrackEvent, TrackMetadata
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics

HOME = Path("/tmp/sonicbus-bench-soak")
KAFKA_PORT = 39592
MILVUS_PORT = 39830
TARGET = {"rss_growth_pct": 10.0, "errors": 0}
REQUEST_TIMEOUT_S = 10.0


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    tracks: int
    ingest_s: float  # the window the tracks are published over
    settle_s: float  # queries alone after the last track is embedded
    warmup_s: float
    rps: float
    embedders: int


def write_corpus(
    folder: Path, tracks: int, seconds: tuple[float, float] = (5.0, 10.0), seed: int = 7
) -> list[TrackEvent]:
    """`tracks` FLAC files of 5-10 s, each with its own audio and tags; their TrackEvents."""
    rng = random.Random(seed)
    events = []
    for i in range(tracks):
        tags = TrackMetadata(title=f"Song {i}", artist=f"Artist {i % 97}", album=f"Album {i % 31}")
        path = write_tagged_audio(
            folder / f"{i // 500:02d}" / f"song{i:05d}.flac",
            tags,
            seconds=rng.uniform(*seconds),
            seed=seed * 100_000 + i,
        )
        events.extend(events_for(inspect(Candidate(str(path), str(folder)), None), f"s{i:05d}"))
    return events


class Progress:
    """Follows the embeddings topic: which tracks are stored (the query seeds), and when."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: dict[str, float] = {}
        self.seeds: list[str] = []
        self.events = 0

    async def follow(self) -> None:
        consumer = make_consumer(
            self.settings.kafka, self.settings.topics.embeddings, group_id=None
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                now = time.monotonic()
                for records in batch.values():
                    for record in records:
                        event = EmbeddingEvent.from_bytes(record.value)
                        self.events += 1
                        if event.status == "embedded" and event.track_id not in self.embedded:
                            self.embedded[event.track_id] = now
                            self.seeds.append(event.track_id)
        finally:
            await consumer.stop()


@dataclass
class Sample:
    sent_at: float
    latency_ms: float | None  # None: an error reply or no reply in time
    outcome: str  # ok, error, timeout
    error: str = ""


async def query_load(
    client: QueryClient, progress: Progress, rps: float, stop: asyncio.Event, samples: list[Sample]
) -> None:
    """`similar` requests at `rps`, open loop, each on a random embedded track; each one's
    outcome is appended to `samples` when it is known."""
    pending: set[asyncio.Task[None]] = set()
    rng = random.Random(5)

    async def one(track_id: str) -> None:
        sent = time.monotonic()
        request = {"type": "similar", "request_id": uuid.uuid4().hex, "track_id": track_id,
                   "limit": 25}  # fmt: skip
        try:
            reply = await client.ask(request, timeout=REQUEST_TIMEOUT_S)
        except QueryTimeout:
            samples.append(Sample(sent, None, "timeout"))
            return
        elapsed = (time.monotonic() - sent) * 1000
        if reply.ok:
            samples.append(Sample(sent, elapsed, "ok"))
        else:
            error = f"{reply.error.code}: {reply.error.message}" if reply.error else "?"
            samples.append(Sample(sent, None, "error", error))

    interval = 1.0 / rps
    next_at = time.monotonic()
    while not stop.is_set():
        if progress.seeds:
            task = asyncio.create_task(one(rng.choice(progress.seeds)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*pending)


async def publish_paced(settings: Settings, events: list[TrackEvent], window_s: float) -> float:
    """Publish `events` evenly over `window_s`; returns when the last was acknowledged."""
    producer = make_producer(settings.kafka, role="bench")
    await producer.start()
    started = time.monotonic()
    try:
        for i, event in enumerate(events):
            await asyncio.sleep(max(0.0, started + i * window_s / len(events) - time.monotonic()))
            await producer.send(
                settings.topics.tracks, event.to_bytes(), key=event.track_id.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic()


def latency_figures(samples: list[Sample]) -> dict[str, Any]:
    done = sorted(s.latency_ms for s in samples if s.latency_ms is not None)
    figures: dict[str, Any] = {"requests": len(samples)}
    if done:
        figures |= {
            "p50_ms": round(done[len(done) // 2], 1),
            "p99_ms": round(done[min(len(done) - 1, int(0.99 * len(done)))], 1),
            "mean_ms": round(statistics.fmean(done), 1),
            "max_ms": round(done[-1], 1),
        }
    for outcome in ("error", "timeout"):
        figures[f"{outcome}s"] = sum(s.outcome == outcome for s in samples)
    if errors := sorted({s.error for s in samples if s.error}):
        figures["error_messages"] = errors[:3]
    return figures


def between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.sent_at < end]


@dataclass
class Timeline:
    """What one soak run saw, for `figures`."""

    services: list[Service]
    progress: Progress
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0  # publishing began
    warm_at: float = 0.0
    ingested_at: float = 0.0
    published_at: float = 0.0
    complete: bool = False
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    duplicate_replies: int = 0


async def create_reply_topic(settings: Settings, topic: str) -> None:
    from aiokafka.admin import NewTopic

    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


async def wait_for_query_service(client: QueryClient) -> None:
    """Until the service answers (an unknown seed: an error reply, which is an answer)."""
    async with asyncio.timeout(300):
        while True:
            probe = {"type": "similar", "track_id": "warm-up", "request_id": uuid.uuid4().hex}
            with contextlib.suppress(QueryTimeout):
                await client.ask(probe, timeout=5)
                return


async def soak(settings: Settings, plan: Plan, events: list[TrackEvent], logs: Path) -> Timeline:
    """Run the services, the paced ingest and the query load; sample along the way."""
    wanted = {e.track_id for e in events}
    reply_topic = f"{settings.topics.replies}.soak"
    await create_reply_topic(settings, reply_topic)
    embed = ["embed", "--model", "musicnn"]
    services = [start_service(settings, f"embed-{i}", embed, logs) for i in range(plan.embedders)]
    services.append(start_service(settings, "query", ["query"], logs))
    run = Timeline(services, Progress(settings))
    follower = asyncio.create_task(run.progress.follow())
    client = QueryClient(settings, reply_topic=reply_topic)
    stop_load = asyncio.Event()

    def failed() -> bool:
        return any(s.process.poll() is not None for s in services)

    try:
        launched = time.monotonic()
        await client.start()
        await wait_for_query_service(client)
        log(f"services up after {time.monotonic() - launched:.0f} s; publishing "
            f"{len(events)} tracks over {plan.ingest_s:.0f} s")  # fmt: skip
        run.started = time.monotonic()
        publisher = asyncio.create_task(publish_paced(settings, events, plan.ingest_s))
        load = asyncio.create_task(
            query_load(client, run.progress, plan.rps, stop_load, run.samples)
        )
        # Warm: the window's first tenth is over, the first tracks are embedded and the
        # query service has answered real requests (models loaded, caches filled).
        while not failed() and (
            time.monotonic() - run.started < plan.warmup_s
            or len(run.progress.embedded) < max(1, plan.tracks // 50)
            or sum(s.outcome == "ok" for s in run.samples) < 20
        ):
            await asyncio.sleep(0.2)
        run.warm_at = time.monotonic()
        for service in services:
            service.sample("after_warmup")
        log(f"warm-up over after {run.warm_at - run.started:.0f} s: "
            f"{len(run.progress.embedded)} embedded; rss {rss_now(services)}")  # fmt: skip

        deadline = run.started + 2 * plan.ingest_s + 600  # embedders far behind: stop anyway
        last_report = time.monotonic()
        while not (wanted <= run.progress.embedded.keys() and publisher.done()):
            if time.monotonic() > deadline or failed():
                break
            await asyncio.sleep(0.5)
            if time.monotonic() - last_report > 60:
                last_report = time.monotonic()
                log(f"{len(run.progress.embedded)}/{len(wanted)} embedded; "
                    f"rss {rss_now(services)}")  # fmt: skip
        run.ingested_at = time.monotonic()
        run.complete = wanted <= run.progress.embedded.keys()
        for service in services:
            service.sample("end_of_ingestion")
        log(f"ingestion {'done' if run.complete else 'INCOMPLETE'} after "
            f"{run.ingested_at - run.started:.0f} s")  # fmt: skip
        await asyncio.sleep(plan.settle_s)
        for service in services:
            service.sample("after_settle")
        stop_load.set()
        await load
        run.published_at = await publisher
    finally:
        stop_load.set()
        run.duplicate_replies = client.duplicate_replies
        await client.stop()
        follower.cancel()
        run.exit_codes = stop_services(services)
    return run


def figures(run: Timeline, plan: Plan) -> dict[str, Any]:
    """Memory growth per process, latency at the start and the end of the ingestion, logs."""
    per_process = {}
    for service in run.services:
        base = service.rss.get("after_warmup")
        later = [v for v in (service.rss.get("end_of_ingestion"), service.rss.get("after_settle"))
                 if v]  # fmt: skip
        growth = max(100 * (v - base) / base for v in later) if base and later else None
        levels, error_messages = service.log_levels()
        per_process[service.name] = {
            "rss_mib": service.rss,
            "rss_growth_pct": round(growth, 1) if growth is not None else None,
            "log_lines": levels,
            "error_messages": error_messages,
            "exit_code": run.exit_codes.get(service.name),
        }
    errors = sum(p["log_lines"].get("error", 0) + p["log_lines"].get("critical", 0)
                 for p in per_process.values())  # fmt: skip
    during = between(run.samples, run.warm_at, run.ingested_at)
    fifth = (run.ingested_at - run.warm_at) / 5
    first_embedded = min(run.progress.embedded.values(), default=run.started)
    embedded = len(run.progress.embedded)
    return {
        "ingestion_complete": run.complete,
        "embedded": embedded,
        "ingestion_s": round(run.ingested_at - run.started, 1),
        "publishing_s": round(run.published_at - run.started, 1),
        # While the embedders keep up, this is the publishing pace, not their capacity.
        "pace_tracks_per_s": round(plan.tracks / plan.ingest_s, 2),
        "tracks_per_s": round(embedded / max(run.ingested_at - first_embedded, 1e-9), 2),
        "processes": per_process,
        "latency_during_ingestion": latency_figures(during),
        "latency_ingestion_first_fifth": latency_figures(
            between(during, run.warm_at, run.warm_at + fifth)
        ),
        "latency_ingestion_last_fifth": latency_figures(
            between(during, run.ingested_at - fifth, run.ingested_at)
        ),
        "latency_settle": latency_figures(between(run.samples, run.ingested_at, float("inf"))),
        "duplicate_replies": run.duplicate_replies,
        "error_log_lines": errors,
    }


def rss_now(services: list[Service]) -> str:
    return ", ".join(f"{s.name} {rss_mib(s.process.pid)} MiB" for s in services)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=30.0, help="Total, settle included.")
    parser.add_argument("--settle-minutes", type=float, default=5.0)
    parser.add_argument("--rps", type=float, default=20.0, help="`similar` requests per second.")
    parser.add_argument("--embedders", type=int, default=1, help="`sonicbus embed` processes.")
    parser.add_argument("--milvus-port", type=int, default=MILVUS_PORT)
    parser.add_argument("--home", type=Path, default=HOME)
    smoke.add_flag(parser)
    args = parser.parse_args()
    kafka_port = KAFKA_PORT
    if args.smoke:
        args.tracks, args.minutes, args.settle_minutes, args.embedders = 4, 0.15, 0.05, 1
        args.home, kafka_port, args.milvus_port = smoke.HOME, smoke.KAFKA_PORT, smoke.MILVUS_PORT
    if args.settle_minutes >= args.minutes:
        parser.error("--minutes must be longer than --settle-minutes (ingestion needs time)")
    ingest_s = (args.minutes - args.settle_minutes) * 60
    plan = Plan(
        tracks=args.tracks,
        ingest_s=ingest_s,
        settle_s=args.settle_minutes * 60,
        warmup_s=max(1.0, ingest_s / 10),
        rps=args.rps,
        embedders=args.embedders,
    )
    load_before = os.getloadavg()[0]
    run = f"soak{uuid.uuid4().hex[:6]}"
    settings = Settings(
        home=args.home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port}", local_port=kafka_port),
        topics=TopicSettings(prefix=f"{run}.", group_prefix=f"{run}.", partitions=6),
        milvus=MilvusSettings(
            uri=f"http://127.0.0.1:{args.milvus_port}",
            local_port=args.milvus_port,
            collection_prefix=f"{run}_",
        ),
    )
    args.home.mkdir(parents=True, exist_ok=True)
    kafka_was_running = infra.port_open(kafka_port)
    milvus_was_running = infra.port_open(args.milvus_port)
    try:
        # A service already answering on its port is used as it is (whoever started it);
        # one started here is stopped at the end, whatever happens.
        if not kafka_was_running:
            infra.start_kafka(settings)
        if not milvus_was_running:
            infra.start_milvus_server(settings)
        asyncio.run(ensure_topics(settings.kafka, settings.topics))
        with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
            started = time.perf_counter()
            lengths = (2.0, 3.0) if args.smoke else (5.0, 10.0)
            events = write_corpus(Path(scratch) / "music", args.tracks, lengths)
            log(f"{len(events)} tracks written in {time.perf_counter() - started:.0f} s")
            logs = args.home / f"{run}-logs"
            logs.mkdir(parents=True)
            results = figures(asyncio.run(soak(settings, plan, events, logs)), plan)
    finally:
        with contextlib.suppress(Exception):  # Milvus may be what failed to start
            store = VectorStore(settings.milvus, settings.milvus_uri)
            for name in store.list_collections():
                if name.startswith(settings.milvus.collection_prefix):
                    store.drop_collection(name)
            store.close()
        if not milvus_was_running:
            infra.stop_milvus_server(settings)
        if not kafka_was_running:
            infra.stop_kafka(settings)
    growth = [p["rss_growth_pct"] for p in results["processes"].values()]
    met = {
        "rss_growth_pct": all(g is not None and g <= TARGET["rss_growth_pct"] for g in growth),
        "errors": results["error_log_lines"] <= TARGET["errors"],
    }
    print(json.dumps({
        "bench": "soak",
        "smoke": args.smoke,
        "tracks": args.tracks,
        "minutes": args.minutes,
        "settle_minutes": args.settle_minutes,
        "rps": args.rps,
        "embedders": args.embedders,
        "query_replicas": 1,
        "milvus": "server",
        **results,
        "logs": str(logs),
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "target": TARGET,
        "met": met,
        "machine": machine_info(),
    }))  # fmt: skip
    if not results["ingestion_complete"]:
        raise SystemExit("not every track was embedded")


if __name__ == "__main__":
    main()
