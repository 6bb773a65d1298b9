"""Clustering playlists: runs per second and wall time of the evolutionary search.

The target: 1,000 clustering runs over a synthetic library of 20,000 tracks
(MusiCNN-shaped: 600-dim enriched embeddings and 50 tag probabilities, in 40
planted groups), with the default search settings (sample 2,000 per run, the
four algorithms, PCA, elites and mutation). It times the search itself (the
`clustering` job's core, `pipeline.recommender.clustering`), then applying the
best run to the whole library and the post-processing; reading the collection
and writing the playlists are not in it. Also reports the adjusted Rand index
of the best clustering against the planted groups.
Usage: .venv/bin/python bench/cluster.py [--tracks N] [--runs N] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from models.musicnn_net import MSD_TAGS
from pipeline.recommender.clustering import (
    ClusterSearch,
    LibraryData,
    PlaylistOptions,
    SearchOptions,
    build_playlists,
)


def synthetic_library(
    tracks: int, groups: int, dim: int, seed: int = 3
) -> tuple[LibraryData, np.ndarray]:
    rng = np.random.default_rng(seed)
    planted = rng.integers(groups, size=tracks)
    centres = rng.standard_normal((groups, dim)).astype(np.float32)
    vectors = centres[planted] + 0.6 * rng.standard_normal((tracks, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tags = rng.uniform(0.02, 0.15, (tracks, len(MSD_TAGS))).astype(np.float32)
    dominant = rng.integers(len(MSD_TAGS), size=(groups, 3))
    for rank, value in enumerate((0.85, 0.65, 0.45)):
        tags[np.arange(tracks), dominant[planted, rank]] = value
    artists = [f"artist {i % 3000}" for i in range(tracks)]
    titles = [f"title {i}" for i in range(tracks)]
    ids = [f"t{i}" for i in range(tracks)]
    return LibraryData(ids, vectors, tags, MSD_TAGS, artists, titles), planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--dim", type=int, default=600)
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.runs, args.groups, args.dim = 1000, 10, 8, 64
    data, planted = synthetic_library(args.tracks, args.groups, args.dim)
    search = ClusterSearch(data, SearchOptions(runs=args.runs, seed=1))
    started = time.perf_counter()
    result = search.run()
    search_s = time.perf_counter() - started
    started = time.perf_counter()
    playlists = build_playlists(data, result.labels, PlaylistOptions(), np.random.default_rng(1))
    post_s = time.perf_counter() - started
    figures = {
        "runs_per_s": round(args.runs / search_s, 2),
        "search_wall_s": round(search_s, 1),
        "postprocess_s": round(post_s, 2),
        "best_score": round(result.best.fitness.score, 4),
        "best_algorithm": result.best.genome.algorithm,
        "clusters": result.figures()["clusters"],
        "playlists": len(playlists),
        "ari_vs_planted": round(float(adjusted_rand_score(planted, result.labels)), 3),
    }
    print(f"cluster: {figures}", file=sys.stderr)
    print(json.dumps({
        "bench": "cluster",
        "smoke": args.smoke,
        "tracks": args.tracks,
        "runs": args.runs,
        "dim": args.dim,
        "results": figures,
        "unit": "runs/s, s",
        "target": {"runs": 1000, "tracks": 20_000, "note": "wall time for 1,000 runs reported"},
        "machine": machine_info(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
