"""Round-trip latency of queries over the bus: 50,000 tracks, 8 concurrent clients.

What it does, in order:
1. starts (or reuses) a local Kafka broker on a bench port (39492, home
   /tmp/sonicbus-bench-q) through the same infra scripts users run;
2. fills Milvus (Lite, or the server) with synthetic tracks for three models (musicnn 600-d
   with 50 tag probabilities, muq 512-d, music2latent 192-d), clustered
   like a real library; reused between runs when the counts match;
3. times plain Milvus searches (what a query would cost uncached);
4. runs `sonicbus query` as its own process on that database (with
   `--replicas N`: N processes in the `query` group, on the embedded Milvus
   server, port 39830, since Milvus Lite serves one process), and 8
   clients in this process, each with its own reply topic, each sending
   the next request when the previous reply arrived:
   - `recommend`, limit 25, one model;
   - `recommend`, limit 25, three models (union);
   - `text`, limit 25, a different prompt every time (no prompt cache hits);
   - the single-model and text requests again from one client alone: the
     round trip without queueing behind the other seven.
Prints p50/p95/p99 per phase on stderr and ends with ONE JSON line.

Usage: .venv/bin/python bench/query_latency.py [--tracks 50000] [--requests 200] [--replicas 1]
       [--smoke]
(BENCH_LOG_LEVEL=INFO shows the service's log, e.g. how many searches shared a product.)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from models.musicnn_net import MSD_TAGS
from pipeline import infra
from pipeline.client import QueryClient
from pipeline.config import KafkaSettings, MilvusSettings, QuerySettings, Settings, TopicSettings
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics

HOME = Path("/tmp/sonicbus-bench-q")
KAFKA_PORT = 39492
MILVUS_PORT = 39830
MODELS = {"musicnn": 600, "muq": 512, "music2latent": 192}
TARGET = {"single_p50_ms": 15, "single_p99_ms": 60, "three_p99_ms": 150, "text_p50_ms": 50}
ADJECTIVES = [
    "calm",
    "upbeat",
    "dark",
    "happy",
    "sad",
    "dreamy",
    "aggressive",
    "mellow",
    "energetic",
    "melancholic",
    "warm",
    "lo-fi",
    "epic",
    "quiet",
    "groovy",
]
STYLES = [
    "rock",
    "jazz",
    "piano",
    "electronic",
    "folk",
    "hip hop",
    "ambient",
    "metal",
    "soul",
    "country",
    "house",
    "punk",
    "blues",
    "pop",
    "classical guitar",
]
EXTRAS = [
    "for a rainy day",
    "with guitar",
    "with female vocals",
    "from the 80s",
    "to dance to",
    "for studying",
    "with strings",
    "late at night",
    "for a road trip",
    "instrumental",
]


def log(message: str) -> None:
    print(f"[query_latency] {message}", file=sys.stderr, flush=True)


def bench_settings(
    prefix: str,
    home: Path,
    tracks: int,
    threads: int = 8,
    server: bool = False,
    ports: tuple[int, int] = (KAFKA_PORT, MILVUS_PORT),
) -> Settings:
    """`server`: the embedded Milvus server (several query processes), else Milvus Lite.
    `ports`: the broker's and the Milvus server's."""
    kafka_port, milvus_port = ports
    uri = f"http://127.0.0.1:{milvus_port}" if server else str(home / f"milvus-{tracks}.db")
    return Settings(
        home=home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port}", local_port=kafka_port),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix, partitions=6),
        milvus=MilvusSettings(uri=uri, local_port=milvus_port),
        query=QuerySettings(threads=threads, workers=max(threads, 8)),
    )


def synthetic(model: str, dim: int, n: int, rng: np.random.Generator) -> list[VectorRow]:
    """Clustered vectors (genres), artists of ~12 tracks, tags for musicnn."""
    centers = rng.normal(size=(200, dim)).astype(np.float32)
    cluster = rng.integers(0, 200, size=n)
    vectors = centers[cluster] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    tag_bias = rng.uniform(0, 0.6, size=(200, len(MSD_TAGS))) * (
        rng.random((200, len(MSD_TAGS))) < 0.1
    )
    rows = []
    for i in range(n):
        extra: dict[str, Any] = {"path": f"/music/{i}.flac"}
        if model == "musicnn":
            tags = np.clip(0.05 + tag_bias[cluster[i]] + 0.05 * rng.random(len(MSD_TAGS)), 0, 1)
            extra["tags"] = [round(float(x), 4) for x in tags]
        rows.append(
            VectorRow(
                f"t{i:06d}",
                vectors[i],
                artist=f"artist {i // 12}",
                title=f"song {i}",
                album=f"album {i // 10}",
                extra=extra,
            )
        )
    return rows


def populate(store: VectorStore, tracks: int) -> None:
    for model, dim in MODELS.items():
        name = store.collection_name(model)
        if store.has_collection(name) and store.count(name) == tracks:
            log(f"{model}: reusing {tracks} rows")
            continue
        store.drop_collection(name)
        store.ensure_collection(name, dim)
        started = time.perf_counter()
        rows = synthetic(model, dim, tracks, np.random.default_rng(len(model)))
        for at in range(0, tracks, 5000):
            store.upsert(name, rows[at : at + 5000], flush=False)
        store.flush(name)
        log(f"{model}: inserted {tracks} x {dim} in {time.perf_counter() - started:.0f} s")


def prepare(uri: str, tracks: int) -> dict[str, float]:
    """Fill (or reuse) the Milvus Lite database; time plain searches on it."""
    store = VectorStore(MilvusSettings(), uri)
    try:
        populate(store, tracks)
        direct = milvus_search_ms(store)
        kind = "server" if uri.startswith("http") else "Lite"
        log(f"Milvus {kind} search, {tracks} x 600 (what an uncached query pays): {direct}")
        return direct
    finally:
        store.close()


def milvus_search_ms(store: VectorStore, queries: int = 20) -> dict[str, float]:
    name = store.collection_name("musicnn")
    rng = np.random.default_rng(3)
    store.search(name, rng.normal(size=(1, 600)), limit=100)
    timings = []
    for _ in range(queries):
        started = time.perf_counter()
        store.search(name, rng.normal(size=(1, 600)), limit=100)
        timings.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(timings), 1), "max_ms": round(max(timings), 1)}


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "max_ms": round(ordered[-1], 2),
    }


async def phase(
    clients: list[QueryClient], make: Any, requests: int, warmup: int
) -> dict[str, Any]:
    """Each client sends `warmup` + `requests` requests back to back; times the latter."""
    latencies: list[float] = []
    service_ms: list[float] = []
    errors: list[str] = []
    counter = itertools.count()

    async def run(client: QueryClient) -> None:
        for i in range(warmup + requests):
            request = make(next(counter))
            started = time.perf_counter()
            reply = await client.ask(request, timeout=30)
            elapsed = (time.perf_counter() - started) * 1000
            if not reply.ok:
                errors.append(f"{reply.error.code}: {reply.error.message}")
            elif i >= warmup:
                latencies.append(elapsed)
                service_ms.append(reply.elapsed_ms)

    started = time.perf_counter()
    await asyncio.gather(*(run(c) for c in clients))
    wall = time.perf_counter() - started
    result = percentiles(latencies)
    result["service_p50_ms"] = round(statistics.median(service_ms), 2)
    result["requests"] = len(latencies)
    result["throughput_rps"] = round((warmup + requests) * len(clients) / wall, 1)
    result["errors"] = len(errors)
    if errors:
        log(f"first error: {errors[0]}")
    return result


def prompts() -> list[str]:
    combos = itertools.product(ADJECTIVES, STYLES, EXTRAS)
    return [f"{a} {s} {e}" for a, s, e in combos]


async def measure(
    settings: Settings,
    tracks: int,
    requests: int,
    clients_n: int,
    phases: list[str],
    replicas: int = 1,
    smoke_run: bool = False,
) -> dict[str, Any]:
    """`smoke_run`: one warm-up request per client, and no waiting for the service to be fast."""
    replies = settings.topics.replies
    reply_topics = [f"{replies}.bench{i}" for i in range(clients_n)]
    from aiokafka.admin import NewTopic

    from pipeline.bus import make_admin

    admin = make_admin(settings.kafka)
    await admin.start()
    await admin.create_topics([NewTopic(t, 1, 1) for t in reply_topics])
    await admin.close()
    clients = [QueryClient(settings, reply_topic=t) for t in reply_topics]
    for client in clients:
        await client.start()
    rng = np.random.default_rng(9)
    all_prompts = prompts()
    rng.shuffle(all_prompts)

    def seeds() -> list[dict[str, str]]:
        return [{"track_id": f"t{i:06d}"} for i in rng.integers(0, tracks, size=2)]

    def single(i: int) -> dict[str, Any]:
        return {
            "type": "recommend",
            "request_id": uuid.uuid4().hex,
            "seeds": seeds(),
            "limit": 25,
            "models": ["musicnn"],
        }

    def three(i: int) -> dict[str, Any]:
        return {
            "type": "recommend",
            "request_id": uuid.uuid4().hex,
            "seeds": seeds(),
            "limit": 25,
            "models": list(MODELS),
            "merge": "union",
        }

    def text(i: int) -> dict[str, Any]:
        return {
            "type": "text",
            "request_id": uuid.uuid4().hex,
            "limit": 25,
            "prompt": all_prompts[i % len(all_prompts)],
        }

    try:
        # The service loads indexes and the sentence model in the background, then sets its
        # heap aside from garbage collection: wait until both kinds of query are fast.
        # Requests go to every partition (random keys), hence to every replica.
        async with asyncio.timeout(600):
            while True:
                started = time.perf_counter()
                probes: list[dict[str, Any]] = []
                for _ in range(4 * replicas):
                    probe = {"type": "text", "request_id": uuid.uuid4().hex, "prompt": "warm"}
                    probes += [three(0), probe]
                replies = [await clients[0].ask(r, timeout=300) for r in probes]
                fast = time.perf_counter() - started < 0.5 * replicas
                if all(r.ok for r in replies) and (fast or smoke_run):
                    break
                await asyncio.sleep(1)
        await asyncio.sleep(0 if smoke_run else 3)
        warmup = 1 if smoke_run else 10
        texts = requests if smoke_run else max(requests // 2, 20)
        results = {}
        for name, make, count, senders in (
            ("single_model", single, requests, clients),
            ("three_models", three, requests, clients),
            ("text", text, texts, clients),
            # One client alone: the round trip without queueing behind the other seven.
            ("single_model_1_client", single, requests, clients[:1]),
            ("text_1_client", text, texts, clients[:1]),
        ):
            if name not in phases:
                continue
            log(f"{name}: {len(senders)} client(s), {count} timed requests each ...")
            results[name] = await phase(senders, make, count, warmup)
            log(f"{name}: {results[name]}")
        return results
    finally:
        for client in clients:
            await client.stop()


def start_service(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONICBUS_")}
    env.update(
        SONICBUS_HOME=str(settings.home),
        SONICBUS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        SONICBUS_TOPICS__PREFIX=settings.topics.prefix,
        SONICBUS_TOPICS__GROUP_PREFIX=settings.topics.group_prefix,
        SONICBUS_MILVUS__URI=settings.milvus_uri,
        SONICBUS_QUERY__WORKERS=str(settings.query.workers),
        SONICBUS_QUERY__THREADS=str(settings.query.threads),
        SONICBUS_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
    )
    root = Path(__file__).resolve().parent.parent
    # Its logs go to stderr: stdout carries the one JSON line of this bench.
    command = [sys.executable, "-m", "pipeline.cli", "query"]
    return subprocess.Popen(command, env=env, cwd=root, stdout=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=200, help="Timed requests per client.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--threads", type=int, default=8, help="query.threads of the service.")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="Query processes in the group; above 1 they read the embedded Milvus server.",
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["single_model", "three_models", "text", "single_model_1_client", "text_1_client"],
        help="Subset of the phases.",
    )
    parser.add_argument("--home", type=Path, default=HOME, help="Broker data and Milvus Lite file.")
    smoke.add_flag(parser)
    args = parser.parse_args()
    ports = (KAFKA_PORT, MILVUS_PORT)
    if args.smoke:
        args.tracks, args.requests, args.clients, args.threads = 300, 3, 2, 2
        args.replicas, args.home, ports = 1, smoke.HOME, (smoke.KAFKA_PORT, smoke.MILVUS_PORT)

    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    args.home.mkdir(parents=True, exist_ok=True)
    server = args.replicas > 1
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = bench_settings(prefix, args.home, args.tracks, args.threads, server, ports)
    infra.start_kafka(settings)
    milvus_was_running = infra.port_open(ports[1])
    if server:
        infra.start_milvus_server(settings)
    asyncio.run(ensure_topics(settings.kafka, settings.topics))
    # Milvus Lite serves one process at a time and its server lives as long as the process
    # that opened it: fill it from a child process, so the query service can open it next.
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        direct = pool.apply(prepare, (settings.milvus_uri, args.tracks))
    services = [start_service(settings) for _ in range(args.replicas)]
    try:
        results = asyncio.run(
            measure(
                settings,
                args.tracks,
                args.requests,
                args.clients,
                args.phases,
                args.replicas,
                args.smoke,
            )
        )
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(timeout=60)
        if server and not milvus_was_running:
            infra.stop_milvus_server(settings)
    met = {}
    for target, (phase_name, figure) in {
        "single_p50_ms": ("single_model", "p50_ms"),
        "single_p99_ms": ("single_model", "p99_ms"),
        "three_p99_ms": ("three_models", "p99_ms"),
        "text_p50_ms": ("text", "p50_ms"),
    }.items():
        if phase_name in results:
            met[target] = results[phase_name][figure] <= TARGET[target]
    print(
        json.dumps(
            {
                "bench": "query_latency",
                "smoke": args.smoke,
                "tracks": args.tracks,
                "clients": args.clients,
                "query_replicas": args.replicas,
                "milvus": "server" if server else "lite",
                "limit": 25,
                "models": MODELS,
                **results,
                "milvus_search_uncached": direct,
                "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
                "target": TARGET,
                "met": met,
                "machine": machine_info(),
            }
        )
    )
    failed = [name for name, figures in results.items() if figures["errors"]]
    if failed:
        raise SystemExit(f"requests failed in {', '.join(failed)}")


if __name__ == "__main__":
    main()
