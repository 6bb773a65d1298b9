"""Instant Mix through Navidrome and the sonicbus plugin: what the plugin and Navidrome add.

What it does, in order:
1. starts (or reuses) a Kafka broker on a bench port (39494, home /tmp/sonicbus-bench-nd)
   through the infra scripts users run (with --smoke: the tests' broker), and builds the
   plugin (plugins/navidrome/build.sh);
2. writes a library of tiny tagged audio files (1,000 by default, 1 s each; reused when the
   count matches) and starts a Navidrome on it (port 39634) with plugins on, the plugin
   installed for 127.0.0.1 and `Agents = "sonicbus"`; Navidrome scans the files, which
   gives every track its Navidrome id;
3. fills Milvus Lite with synthetic MusiCNN vectors (600-d, clustered, artists of ~10
   tracks) keyed by those ids, and starts, in one child process as `sonicbus up` runs
   them, the query service and the HTTP service on that store; enables the plugin
   pointed at the HTTP service;
4. times `getSimilarSongs2?id=X&count=25` (Instant Mix: Navidrome -> plugin -> HTTP
   bridge -> Kafka -> query service -> back, then Navidrome resolves the songs) and the same
   request straight to the bridge (`POST /navidrome/v1/plugin/get_similar_songs_by_track`,
   what the plugin sends), and Navidrome's own floor (`getRandomSongs?size=25`: an
   authenticated request answering as many songs, no plugin), from 1 client and from 4
   clients, each sending the next request when the previous answer arrived.
Prints p50/p99 per phase on stderr and ends with ONE JSON line: the figures, the ratio
Navidrome-path / bridge-alone (p50), what Navidrome and the plugin add at 1 client (and the
plugin's part: that minus Navidrome's floor) and whether the targets are met (the plugin and
Navidrome add <= 50 % over the bridge alone; p50 <= 60 ms through Navidrome at 1 client).

Usage: .venv/bin/python bench/navidrome_mix.py [--tracks 1000] [--requests 200] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from pipeline import infra
from pipeline.config import (
    HttpSettings,
    KafkaSettings,
    MilvusSettings,
    QuerySettings,
    Settings,
    TopicSettings,
)
from pipeline.producers.samplefiles import write_tagged_audio
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
HOME = Path("/tmp/sonicbus-bench-nd")
KAFKA_PORT = 39494
NAVIDROME_PORT = 39634
HTTP_PORT = 39702
ADMIN, PASSWORD = "admin", "sonicbus-bench-admin"
TOKEN = "bench-client-token"
COUNT = 25
TARGET = {"overhead_ratio_p50": 1.5, "navidrome_p50_ms_1_client": 60.0}


def log(message: str) -> None:
    print(f"[navidrome_mix] {message}", file=sys.stderr, flush=True)


# -- the library and Navidrome -------------------------------------------------------------


def write_library(music: Path, tracks: int) -> None:
    """`tracks` tagged 1 s FLAC files, artists of 10 tracks; kept when the count matches."""
    marker = music / f".complete-{tracks}"
    if marker.exists():
        log(f"reusing the {tracks} files of {music}")
        return
    started = time.perf_counter()
    for i in range(tracks):
        artist, album = i // 10, i // 10
        meta = TrackMetadata(title=f"Song {i}", artist=f"Artist {artist}",
                             album=f"Album {album}", track_number=i % 10 + 1)  # fmt: skip
        path = music / f"Artist {artist}" / f"Album {album}" / f"{i % 10 + 1:02d} - Song {i}.flac"
        write_tagged_audio(path, meta, seconds=1.0, seed=i)
    marker.touch()
    log(f"wrote {tracks} files in {time.perf_counter() - started:.0f} s")


def build_plugin(out: Path) -> Path:
    result = subprocess.run(["bash", str(ROOT / "plugins/navidrome/build.sh"), str(out)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"building the plugin failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def build_noop_plugin(out: Path) -> bytes:
    """bench/navidrome_floor_plugin.c: Instant Mix answered from the plugin's config, no work."""
    wasm = out / "noop-plugin.wasm"
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([clang(), "--target=wasm32", "-Os", "-nostdlib", "-ffreestanding",
                    "-fno-builtin", "-Wl,--no-entry", "-Wl,--strip-all", "-o", str(wasm),
                    str(ROOT / "bench/navidrome_floor_plugin.c")], check=True)  # fmt: skip
    return wasm.read_bytes()


def clang() -> str:
    for name in ("clang", *(f"clang-{v}" for v in range(19, 13, -1))):
        if found := shutil.which(name):
            return found
    raise RuntimeError("clang is needed (bash infra/system-packages.sh clang lld)")


def install_plugin(ndp: Path, folder: Path, wasm: bytes | None = None) -> None:
    """The package with 127.0.0.1 as its requiredHosts, as `sonicbus.ndp` in `folder`; with
    `wasm`, that module instead of the package's (and an `answer` setting for it)."""
    with zipfile.ZipFile(ndp) as z:
        manifest, packaged = json.loads(z.read("manifest.json")), z.read("plugin.wasm")
    manifest["permissions"]["http"]["requiredHosts"] = ["127.0.0.1"]
    if wasm is not None:
        manifest["config"]["schema"]["properties"]["answer"] = {"type": "string"}
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / "sonicbus.ndp", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps(manifest))
        z.writestr("plugin.wasm", wasm if wasm is not None else packaged)


class Navidrome:
    def __init__(self, home: Path, music: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.data = home / f"navidrome-{port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SONICBUS_NAVIDROME")}
        self.env.update(
            SONICBUS_NAVIDROME__LOCAL_PORT=str(port),
            SONICBUS_NAVIDROME__MUSIC_FOLDER=str(music),
            SONICBUS_NAVIDROME_DATA=str(self.data),
            SONICBUS_NAVIDROME__USER=ADMIN,
            SONICBUS_NAVIDROME__PASSWORD=PASSWORD,
            SONICBUS_NAVIDROME_PLUGINS_FOLDER=str(self.data / "plugins"),
            SONICBUS_NAVIDROME_AGENTS="sonicbus",
        )

    def script(self, name: str) -> None:
        result = subprocess.run(["bash", str(INFRA / name)], env=self.env, capture_output=True,
                                text=True, timeout=3600, check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{result.stderr}")

    def tracks(self) -> list[tuple[str, str, str]]:
        """(id, title, artist) of every present track, from Navidrome's database."""
        uri = f"file:{self.data / 'navidrome.db'}?mode=ro"
        with sqlite3.connect(uri, uri=True) as db:
            rows = db.execute(
                "SELECT id, title, artist FROM media_file WHERE missing = 0 ORDER BY title"
            ).fetchall()
        return [tuple(r) for r in rows]

    def enable_plugin(self, config: dict[str, Any]) -> None:
        headers = self.admin_headers()
        for body in ({"config": json.dumps(config)}, {"enabled": True}):
            answer = httpx.put(f"{self.url}/api/plugin/sonicbus", json=body, headers=headers,
                               timeout=60)  # fmt: skip
            if answer.status_code != 200:
                raise RuntimeError(f"enabling the plugin: {answer.status_code} {answer.text}")

    def swap_plugin(self, ndp: Path, wasm: bytes, config: dict[str, Any]) -> None:
        """Disable the plugin, replace its module with `wasm`, rescan, enable with `config`."""
        headers = self.admin_headers()
        httpx.put(f"{self.url}/api/plugin/sonicbus", json={"enabled": False}, headers=headers,
                  timeout=60).raise_for_status()  # fmt: skip
        install_plugin(ndp, self.data / "plugins", wasm)
        httpx.post(f"{self.url}/api/plugin/rescan", headers=headers, timeout=60).raise_for_status()
        self.enable_plugin(config)

    def admin_headers(self) -> dict[str, str]:
        login = httpx.post(f"{self.url}/auth/login", json={"username": ADMIN, "password": PASSWORD},
                           timeout=30)  # fmt: skip
        login.raise_for_status()
        return {"X-ND-Authorization": f"Bearer {login.json()['token']}"}

    def auth(self) -> dict[str, str]:
        salt = secrets.token_hex(8)
        token = hashlib.md5((PASSWORD + salt).encode()).hexdigest()
        return {"u": ADMIN, "t": token, "s": salt, "v": "1.16.1", "c": "bench", "f": "json"}


# -- sonicbus: the query service and the HTTP service, as `sonicbus up` runs them -----------


def vectors(ids: list[tuple[str, str, str]], rng: np.random.Generator) -> list[VectorRow]:
    centers = rng.normal(size=(40, 600)).astype(np.float32)
    cluster = rng.integers(0, 40, size=len(ids))
    noise = 0.6 * rng.normal(size=(len(ids), 600)).astype(np.float32)
    return [
        VectorRow(track_id, centers[cluster[i]] + noise[i], artist=artist, title=title)
        for i, (track_id, title, artist) in enumerate(ids)
    ]


def serve(settings: Settings, ids: list[tuple[str, str, str]], ready: Any, stop: Any) -> None:
    """Child process: fill Milvus Lite, then the query and HTTP services until `stop`."""
    os.environ.setdefault("SONICBUS_LOG_LEVEL", "WARNING")

    async def main() -> None:
        import logging

        import uvicorn

        from pipeline.consumers.query import QueryService
        from pipeline.http.app import create_app
        from pipeline.http.runtime import OpsRuntime

        logging.basicConfig(level=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
        store = VectorStore(settings.milvus, settings.milvus_uri)
        name = store.collection_name("musicnn")
        if not store.has_collection(name) or store.count(name) != len(ids):
            store.drop_collection(name)
            store.ensure_collection(name, 600)
            store.upsert(name, vectors(ids, np.random.default_rng(5)))
        service = QueryService(settings, store)
        await service.start()
        await asyncio.wait_for(service.ready.wait(), 120)
        await asyncio.wait_for(service.following.wait(), 60)
        runtime = OpsRuntime(settings, store=store)
        await runtime.start()
        config = uvicorn.Config(create_app(settings, runtime), host="127.0.0.1",
                                port=settings.http.port, log_level="warning")  # fmt: skip
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        ready.set()
        while not stop.is_set() and not serving.done():
            await asyncio.sleep(0.2)
        server.should_exit = True
        await serving
        await runtime.stop()
        await service.stop()
        store.close()

    asyncio.run(main())


# -- measuring -----------------------------------------------------------------------------


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "mean_ms": round(statistics.fmean(ordered), 2),
            "max_ms": round(ordered[-1], 2), "requests": len(ordered)}  # fmt: skip


async def phase(
    ask: Any, seeds: list[tuple[str, str, str]], clients: int, requests: int, warmup: int
) -> dict[str, Any]:
    """`clients` loops, each `warmup` + `requests` requests back to back; times the latter.
    `ask(client, seed) -> number of songs` raises on a failed answer."""
    latencies: list[float] = []
    empty = 0
    rng = np.random.default_rng(clients)

    async def run() -> None:
        nonlocal empty
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(warmup + requests):
                seed = seeds[int(rng.integers(len(seeds)))]
                started = time.perf_counter()
                songs = await ask(client, seed)
                elapsed = (time.perf_counter() - started) * 1000
                if i >= warmup:
                    latencies.append(elapsed)
                    empty += songs == 0

    started = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(clients)))
    wall = time.perf_counter() - started
    return {**percentiles(latencies), "empty_answers": empty,
            "per_s": round(len(latencies) / wall, 1)}  # fmt: skip


def instant_mix(navidrome: Navidrome) -> Any:
    """`ask(client, seed)` of an Instant Mix through Navidrome: getSimilarSongs2 on the seed."""
    auth = navidrome.auth()

    async def through_navidrome(client: httpx.AsyncClient, seed: tuple[str, str, str]) -> int:
        answer = await client.get(f"{navidrome.url}/rest/getSimilarSongs2",
                                  params={**auth, "id": seed[0], "count": COUNT})  # fmt: skip
        body = answer.json()["subsonic-response"]
        if body.get("status") != "ok":
            raise RuntimeError(f"Navidrome: {body.get('error')}")
        return len((body.get("similarSongs2") or {}).get("song") or [])

    return through_navidrome


async def measure(
    navidrome: Navidrome, bridge: str, seeds: list[tuple[str, str, str]], requests: int,
    clients: list[int], warmup: int,
) -> dict[str, Any]:  # fmt: skip
    auth = navidrome.auth()
    through_navidrome = instant_mix(navidrome)

    async def bridge_alone(client: httpx.AsyncClient, seed: tuple[str, str, str]) -> int:
        # What the plugin sends for an Instant Mix: Navidrome's request, unchanged.
        request = {"id": seed[0], "name": seed[1], "artist": seed[2], "count": COUNT}
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Sonicbus-Timeout-Ms": "5000"}
        answer = await client.post(f"{bridge}/navidrome/v1/plugin/get_similar_songs_by_track",
                                   json=request, headers=headers)  # fmt: skip
        if answer.status_code != 200:
            raise RuntimeError(f"bridge: {answer.status_code} {answer.text}")
        return len(answer.json()["songs"])

    async def navidrome_floor(client: httpx.AsyncClient, seed: tuple[str, str, str]) -> int:
        # Navidrome's own cost of an authenticated request answering COUNT songs, no plugin.
        answer = await client.get(f"{navidrome.url}/rest/getRandomSongs",
                                  params={**auth, "size": COUNT})  # fmt: skip
        body = answer.json()["subsonic-response"]
        if body.get("status") != "ok":
            raise RuntimeError(f"Navidrome: {body.get('error')}")
        return len((body.get("randomSongs") or {}).get("song") or [])

    results: dict[str, Any] = {}
    for n in clients:
        # Alternate, so that a machine getting busier does not favour one path.
        for name, ask in (("bridge", bridge_alone), ("navidrome", through_navidrome),
                          ("navidrome_floor", navidrome_floor)):  # fmt: skip
            key = f"{name}_{n}_client{'s' if n > 1 else ''}"
            results[key] = await phase(ask, seeds, n, requests, warmup)
            log(f"{key}: {results[key]}")
    return results


async def measure_noop_plugin(
    navidrome: Navidrome, seeds: list[tuple[str, str, str]], requests: int, clients: list[int],
    warmup: int,
) -> dict[str, Any]:  # fmt: skip
    """Instant Mix through Navidrome with the no-work plugin installed (Navidrome's floor)."""
    through_navidrome = instant_mix(navidrome)

    results: dict[str, Any] = {}
    for n in clients:
        key = f"navidrome_noop_plugin_{n}_client{'s' if n > 1 else ''}"
        results[key] = await phase(through_navidrome, seeds, n, requests, warmup)
        log(f"{key}: {results[key]}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=200, help="Timed requests per client.")
    parser.add_argument("--home", type=Path, default=HOME)
    smoke.add_flag(parser)
    args = parser.parse_args()
    kafka_port, navidrome_port, http_port = KAFKA_PORT, NAVIDROME_PORT, HTTP_PORT
    clients, warmup = [1, 4], 10
    if args.smoke:
        args.tracks, args.requests, args.home = 30, 5, smoke.HOME
        kafka_port, clients, warmup = smoke.KAFKA_PORT, [1, 2], 1
        navidrome_port, http_port = NAVIDROME_PORT + 1, HTTP_PORT + 1

    load_before = os.getloadavg()[0]
    work = args.home / "navidrome-mix"  # the broker's data lies in args.home itself
    work.mkdir(parents=True, exist_ok=True)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(
        home=args.home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port}", local_port=kafka_port),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix, partitions=3),
        milvus=MilvusSettings(uri=str(work / f"milvus-{args.tracks}.db")),
        query=QuerySettings(threads=4, workers=8),
        http=HttpSettings(port=http_port, client_token=TOKEN),
    )
    infra.start_kafka(settings)
    asyncio.run(ensure_topics(settings.kafka, settings.topics))

    started = time.perf_counter()
    ndp = build_plugin(work / "plugin")
    build_s = time.perf_counter() - started
    music = work / f"music-{args.tracks}"
    write_library(music, args.tracks)
    navidrome = Navidrome(work, music, navidrome_port)
    install_plugin(ndp, navidrome.data / "plugins")
    started = time.perf_counter()
    navidrome.script("navidrome-start.sh")
    log(f"Navidrome up with its library scanned in {time.perf_counter() - started:.0f} s")
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    child = None
    try:
        ids = navidrome.tracks()
        if len(ids) != args.tracks:
            raise RuntimeError(f"Navidrome lists {len(ids)} tracks, not {args.tracks}")
        child = context.Process(target=serve, args=(settings, ids, ready, stop))
        child.start()
        if not ready.wait(300):
            raise RuntimeError("the query and HTTP services did not start in 300 s")
        bridge = f"http://127.0.0.1:{http_port}"
        navidrome.enable_plugin({"sonicbus_url": bridge, "token": TOKEN, "timeout_ms": 5000})
        results = asyncio.run(measure(navidrome, bridge, ids, args.requests, clients, warmup))
        # The same Instant Mix with a plugin that does nothing: what Navidrome alone costs.
        canned = {"songs": [{"id": i, "name": t, "artist": a} for i, t, a in ids[:COUNT]]}
        navidrome.swap_plugin(ndp, build_noop_plugin(work / "plugin"),
                              {"sonicbus_url": bridge, "answer": json.dumps(canned)})  # fmt: skip
        results |= asyncio.run(measure_noop_plugin(navidrome, ids, args.requests, clients, warmup))
    finally:
        stop.set()
        if child is not None:
            child.join(60)
            if child.is_alive():
                child.terminate()
        navidrome.script("navidrome-stop.sh")
    ratios = {
        f"{n}_client{'s' if n > 1 else ''}": round(
            results[f"navidrome_{n}_client{'s' if n > 1 else ''}"]["p50_ms"]
            / results[f"bridge_{n}_client{'s' if n > 1 else ''}"]["p50_ms"], 2
        )
        for n in clients
    }  # fmt: skip
    # Where the time goes at 1 client: Navidrome's path minus the bridge is what Navidrome and
    # the plugin add; minus Navidrome's own floor (a plain 25-song request) is the plugin's.
    phases = ("navidrome", "bridge", "navidrome_floor")
    one = {k: results[f"{k}_1_client"]["p50_ms"] for k in phases}
    added_ms = one["navidrome"] - one["bridge"]
    added = {"navidrome_and_plugin_ms": round(added_ms, 2),
             "navidrome_floor_ms": one["navidrome_floor"],
             "plugin_ms": round(added_ms - one["navidrome_floor"], 2)}  # fmt: skip
    # The best ratio any plugin could reach: the bridge plus Navidrome's cost with a plugin
    # that does nothing, over the bridge.
    floor_ratios = {
        key: round((results[f"navidrome_noop_plugin_{key}"]["p50_ms"]
                    + results[f"bridge_{key}"]["p50_ms"]) / results[f"bridge_{key}"]["p50_ms"], 2)
        for key in ratios
    }  # fmt: skip
    added["noop_plugin_navidrome_ms"] = results["navidrome_noop_plugin_1_client"]["p50_ms"]
    added["sonicbus_plugin_beyond_noop_ms"] = round(
        added_ms - results["navidrome_noop_plugin_1_client"]["p50_ms"], 2
    )
    met = {
        "overhead_ratio_p50": all(r <= TARGET["overhead_ratio_p50"] for r in ratios.values()),
        "navidrome_p50_ms_1_client": results["navidrome_1_client"]["p50_ms"]
        <= TARGET["navidrome_p50_ms_1_client"],
    }
    print(
        json.dumps(
            {
                "bench": "navidrome_mix",
                "smoke": args.smoke,
                "tracks": args.tracks,
                "count": COUNT,
                "requests_per_client": args.requests,
                **results,
                "navidrome_over_bridge_p50": ratios,
                "added_p50_1_client": added,
                "floor_ratio_p50_noop_plugin": floor_ratios,
                "plugin_build_s": round(build_s, 1),
                "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
                "target": TARGET,
                "met": met,
                "machine": machine_info(),
            }
        )
    )


if __name__ == "__main__":
    main()
