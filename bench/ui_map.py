"""The music map at 50,000 tracks: payload, first render in the headless browser, projection.

What it does, in order:
1. fills a Milvus Lite file (bench home) with synthetic MusiCNN rows (600-d, 50 tag
   probabilities, 200 clusters with tags of their own); reused when the count matches;
2. times the projection alone (`fit_projection` on every vector: landmark t-SNE) and
   its quality on 2,000 random tracks (trustworthiness, share of 10 nearest neighbours
   kept); with `--compare`, PCA and UMAP (when umap-learn is installed) on the same rows;
3. runs the HTTP service in this process on that store and the test broker, and times
   its first drawing of the map (reading every row, projecting, saving);
4. GET /api/map as a browser asks for it: bytes on the wire (gzip) and uncompressed;
5. opens /map in Debian's chromium (headless, SwiftShader WebGL) three times, each in a
   fresh context: time from navigation start to the first frame with every point drawn
   (the page's `data-first-render-ms`), and the frame time while zooming with the wheel.
Ends with ONE JSON line. Targets (issue 15): payload <= 2 MB compressed, first render
<= 2 s.

Usage: .venv/bin/python bench/ui_map.py [--tracks 50000] [--compare] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import string
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from models.musicnn_net import MSD_TAGS
from pipeline import infra
from pipeline.config import KafkaSettings, MilvusSettings, Settings, TopicSettings
from pipeline.http.app import create_app
from pipeline.http.runtime import OpsRuntime
from pipeline.recommender.projection import fit_projection, neighbour_quality
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics

DIM = 600
TARGET = {"payload_gzip_bytes": 2_000_000, "first_render_ms": 2000}
CHROMIUM = Path(os.environ.get("SONICBUS_CHROMIUM", "/usr/bin/chromium"))
HOME = Path("/tmp/sonicbus-bench-map")


def log(message: str) -> None:
    print(f"[ui_map] {message}", file=sys.stderr, flush=True)


def synthetic(n: int, seed: int = 5) -> tuple[list[VectorRow], np.ndarray]:
    """Clustered vectors (200 'genres'), each cluster with three tags of its own."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, DIM)).astype(np.float32)
    cluster = rng.integers(0, 200, size=n)
    vectors = centres[cluster] + 0.8 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    dominant = rng.integers(len(MSD_TAGS), size=(200, 3))
    # Ids like Navidrome's (22 random base62 characters): they do not compress, as in life.
    alphabet = np.array(list(string.ascii_letters + string.digits))
    ids = ["".join(chars) for chars in alphabet[rng.integers(0, 62, size=(n, 22))]]
    rows = []
    for i in range(n):
        tags = rng.uniform(0.02, 0.15, len(MSD_TAGS))
        tags[dominant[cluster[i]]] = (0.85, 0.6, 0.45)
        rows.append(VectorRow(ids[i], vectors[i], artist=f"artist {i // 12}",
                              title=f"song {i}", album=f"album {i // 10}",
                              extra={"tags": [round(float(x), 3) for x in tags],
                                     "path": f"/music/{i}.flac"}))  # fmt: skip
    return rows, vectors


def populate(store: VectorStore, rows: list[VectorRow]) -> None:
    name = store.collection_name("musicnn")
    if store.has_collection(name) and store.count(name) == len(rows):
        log(f"reusing {len(rows)} rows")
        return
    store.drop_collection(name)
    store.ensure_collection(name, DIM)
    started = time.perf_counter()
    for at in range(0, len(rows), 5000):
        store.upsert(name, rows[at : at + 5000], flush=False)
    store.flush(name)
    log(f"inserted {len(rows)} x {DIM} in {time.perf_counter() - started:.0f} s")


def projection_figures(vectors: np.ndarray, compare: bool) -> dict[str, Any]:
    started = time.perf_counter()
    projection, coords = fit_projection(vectors)
    figures: dict[str, Any] = {
        projection.method: {"seconds": round(time.perf_counter() - started, 1),
                            **neighbour_quality(vectors, coords)},
    }  # fmt: skip
    log(f"projection: {figures}")
    if not compare:
        return figures
    from sklearn.decomposition import PCA

    started = time.perf_counter()
    flat = PCA(2).fit_transform(vectors)
    figures["pca"] = {"seconds": round(time.perf_counter() - started, 1),
                      **neighbour_quality(vectors, flat)}  # fmt: skip
    try:
        import umap
    except ImportError:
        figures["umap"] = "umap-learn is not installed"
    else:
        started = time.perf_counter()
        layout = umap.UMAP(n_components=2).fit_transform(vectors)
        figures["umap"] = {"seconds": round(time.perf_counter() - started, 1),
                           **neighbour_quality(vectors, layout)}  # fmt: skip
    log(f"compared: {figures}")
    return figures


async def first_render(url: str, runs: int) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    renders, frames = [], []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for _ in range(runs):
                context = await browser.new_context(viewport={"width": 1280, "height": 800})
                page = await context.new_page()
                await page.goto(url + "/map")
                await page.wait_for_selector("#stage[data-first-render-ms]", timeout=120_000)
                stage = page.get_by_test_id("map-stage")
                renders.append(int(await stage.get_attribute("data-first-render-ms")))
                drawn = await page.get_by_test_id("map-points").get_attribute("data-drawn")
                frames.append(await zoom_frames(page))
                await context.close()
        finally:
            await browser.close()
    return {"first_render_ms": renders, "points_drawn": int(drawn or 0),
            "zoom_frame_ms_p50": round(statistics.median(frames), 1)}  # fmt: skip


async def zoom_frames(page: Any, steps: int = 30) -> float:
    """Median ms between frames while the wheel zooms in and out at the centre."""
    return float(await page.evaluate("""async (steps) => {
        const stage = document.getElementById("stage");
        const box = stage.getBoundingClientRect();
        const times = [];
        for (let k = 0; k < steps; k++) {
            stage.dispatchEvent(new WheelEvent("wheel", { deltaY: k < steps / 2 ? -120 : 120,
                clientX: box.left + box.width / 2, clientY: box.top + box.height / 2,
                bubbles: true, cancelable: true }));
            const t0 = performance.now();
            await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
            times.push((performance.now() - t0) / 2);
        }
        times.sort((a, b) => a - b);
        return times[Math.floor(times.length / 2)];
    }""", steps))  # fmt: skip


@contextlib.asynccontextmanager
async def serve(settings: Settings, store: VectorStore) -> AsyncIterator[str]:
    """The HTTP service (create_app, its own runtime on `store`) on a free loopback port."""
    import uvicorn

    runtime = OpsRuntime(settings, store=store)
    await runtime.start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, runtime), host="127.0.0.1",
                                          port=port, log_level="warning"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await runtime.stop()


async def measure(settings: Settings, store: VectorStore, runs: int) -> dict[str, Any]:
    import httpx

    async with serve(settings, store) as url, httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        while True:  # the service draws the map on its first request
            response = await client.get(url + "/api/map")
            if response.json()["state"] != "computing":
                break
            await asyncio.sleep(0.5)
        first_draw_s = time.perf_counter() - started
        document = response.json()
        async with client.stream("GET", url + "/api/map",
                                 headers={"Accept-Encoding": "gzip"}) as raw:  # fmt: skip
            wire = b"".join([chunk async for chunk in raw.aiter_raw()])
            encoding = raw.headers.get("content-encoding")
        log(f"map: {document['count']} points, {len(wire)} bytes ({encoding}), "
            f"first drawn in {first_draw_s:.1f} s")  # fmt: skip
        browser = await first_render(url, runs)
    return {
        "points": document["count"], "method": document.get("method"),
        "service_first_draw_s": round(first_draw_s, 1),
        "payload_gzip_bytes": len(wire), "payload_encoding": encoding,
        "payload_json_bytes": len(response.content),
        **browser,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3, help="Page loads timed.")
    parser.add_argument("--compare", action="store_true", help="Also PCA and UMAP.")
    parser.add_argument("--home", type=Path, default=HOME)
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.runs, args.compare, args.home = 300, 1, False, smoke.HOME / "ui_map"
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    args.home.mkdir(parents=True, exist_ok=True)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    port = smoke.KAFKA_PORT
    settings = Settings(
        home=args.home / f"service-{uuid.uuid4().hex[:6]}",  # no saved projection: drawn anew
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", local_port=port),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix),
        milvus=MilvusSettings(uri=str(args.home / f"milvus-map-{args.tracks}-v2.db")),
    )
    infra.start_kafka(settings.model_copy(update={"home": smoke.HOME}))  # the tests' broker
    asyncio.run(ensure_topics(settings.kafka, settings.topics))
    rows, vectors = synthetic(args.tracks)
    projection = projection_figures(vectors, args.compare)
    store = VectorStore(settings.milvus, settings.milvus_uri)
    try:
        populate(store, rows)
        results = asyncio.run(measure(settings, store, args.runs))
    finally:
        store.close()
    first = statistics.median(results["first_render_ms"])
    print(json.dumps({
        "bench": "ui_map", "smoke": args.smoke, "tracks": args.tracks, "dim": DIM,
        **results, "first_render_ms_median": first, "projection": projection,
        "units": {"payload_gzip_bytes": "bytes", "first_render_ms": "ms since navigation start",
                  "zoom_frame_ms_p50": "ms", "seconds": "s"},
        "target": TARGET,
        "met": {"payload_gzip_bytes": results["payload_gzip_bytes"] <= TARGET["payload_gzip_bytes"],
                "first_render_ms": first <= TARGET["first_render_ms"]},
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "machine": machine_info(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
