"""Search latency right after a bulk insert, on Milvus Lite and on the Milvus server.

The foundation target: a search issued immediately after inserting 20k vectors
of dim 600 answers in under 100 ms. Starts (or reuses) the embedded Milvus
server on a bench port. Usage: .venv/bin/python bench/store_search.py [--rows N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from pipeline import infra
from pipeline.config import MilvusSettings, Settings
from pipeline.store import VectorRow, VectorStore

BENCH_HOME = Path(tempfile.gettempdir()) / "sonicbus-bench"
MILVUS_PORT = 39630


def measure(store: VectorStore, vectors: np.ndarray, queries: int) -> dict[str, float]:
    name = store.collection_name("bench_search")
    store.drop_collection(name)
    store.ensure_collection(name, dim=vectors.shape[1])
    started = time.perf_counter()
    for start in range(0, len(vectors), 5000):
        rows = [
            VectorRow(track_id=f"t{start + i}", vector=v, artist=f"a{(start + i) % 500}")
            for i, v in enumerate(vectors[start : start + 5000])
        ]
        store.upsert(name, rows, flush=False)
    insert_s = time.perf_counter() - started
    started = time.perf_counter()
    store.flush(name)
    flush_s = time.perf_counter() - started
    rng = np.random.default_rng(7)
    latencies = []
    for i in range(queries):
        query = vectors[rng.integers(len(vectors))]
        started = time.perf_counter()
        store.search(name, [query], limit=25)
        latencies.append((time.perf_counter() - started) * 1000)
        if i == 0:
            first_ms = latencies[0]
    store.drop_collection(name)
    ordered = sorted(latencies)
    return {
        "insert_s": round(insert_s, 2),
        "flush_s": round(flush_s, 2),
        "first_search_ms": round(first_ms, 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=600)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--skip-server", action="store_true")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.queries = 2000, 10
    home, port = (smoke.HOME, smoke.MILVUS_PORT) if args.smoke else (BENCH_HOME, MILVUS_PORT)

    vectors = np.random.default_rng(1).random((args.rows, args.dim), dtype=np.float32)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        lite = VectorStore(MilvusSettings(), str(Path(scratch) / "bench.db"))
        results["milvus_lite"] = measure(lite, vectors, args.queries)
        lite.close()
    if not args.skip_server:
        # A collection of its own: the server may be shared (the tests' one, with --smoke).
        milvus = MilvusSettings(local_port=port, collection_prefix=f"bench{uuid.uuid4().hex[:6]}_")
        settings = Settings(home=home, milvus=milvus)
        infra.start_milvus_server(settings)
        server = VectorStore(settings.milvus, f"http://127.0.0.1:{port}")
        results["milvus_server_hnsw"] = measure(server, vectors, args.queries)
        server.close()
    for name, figures in results.items():
        print(f"{name}: {figures}", file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "store_search",
                "smoke": args.smoke,
                "rows": args.rows,
                "dim": args.dim,
                "queries": args.queries,
                "results": results,
                "unit": "ms (search), s (insert, flush)",
                "target": {"first_search_ms": 100},
                "machine": machine_info(),
            }
        )
    )


if __name__ == "__main__":
    main()
