"""How a patch budget (`embed.params.musicnn.max_patches`) changes who neighbours whom.

MusiCNN embeds a track as the statistics of its 3-s patches (a 4-minute track has
80). Embedding only N patches spread evenly over the track cuts the model's work
by 80/N; this bench measures what that costs in retrieval on real music: each
track's 10 nearest neighbours (cosine, as queries rank) in a library embedded
with the budget, against the same library embedded whole. Per-patch embeddings
are computed once per corpus and cached (~/.cache/sonicbus/bench-patches-*.npz),
so other budgets are only a few numpy operations.

Usage: .venv/bin/python bench/patch_budget.py [--corpus | --folder DIR] [--limit N]
       [--budgets 4,8,16,...] [--smoke]
Last line: one JSON object (mean top-10 overlap per budget, the recommended budget:
the smallest whose mean overlap is >= 0.8 and where every track keeps >= 6 of 10).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import smoke
from machine import machine_info
from real_corpus import build_corpus, describe, interleaved

from models.base import ModelOptions, enrich
from models.musicnn import MusicnnModel, spread_patches
from models.musicnn_net import musicnn_patches
from pipeline.audio import decode_audio

CACHE = Path.home() / ".cache" / "sonicbus"
NEIGHBOURS = 10
MEAN_OVERLAP_FLOOR = 0.8
KEEP_SIX_SHARE = 1.0


def patch_embeddings(files: list[Path], smoke_run: bool) -> list[np.ndarray]:
    """[T, 200] resting-value-centred MSD embeddings of every patch of every file."""
    key = hashlib.sha256("\n".join(str(f) for f in files).encode()).hexdigest()[:12]
    cached = CACHE / f"bench-patches-{key}.npz"
    if cached.is_file() and not smoke_run:
        with np.load(cached) as data:
            return [data[f"t{i}"] for i in range(len(files))]
    model = MusicnnModel(ModelOptions(device="cpu"))
    model.load("cpu")
    head = model._nets["msd"]
    frames = []
    for i, file in enumerate(files):
        audio = decode_audio(str(file), 16000, 0.0, 30.0 if smoke_run else None)
        patches = musicnn_patches(audio)
        out = [head.run(patches[s : s + 16])[1] for s in range(0, len(patches), 16)]
        frames.append(np.concatenate(out))
        print(f"{i + 1}/{len(files)} {file.name}: {len(patches)} patches", file=sys.stderr)
    if not smoke_run:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, **{f"t{i}": f for i, f in enumerate(frames)})
    return frames


def neighbours(vectors: np.ndarray, k: int) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1)[:, :k]


def compare(frames: list[np.ndarray], budgets: list[int]) -> dict[str, dict[str, float]]:
    k = min(NEIGHBOURS, len(frames) - 1)
    full = np.stack([enrich(f.T) for f in frames])
    reference = neighbours(full, k)
    results = {}
    for budget in budgets:
        vectors = np.stack([enrich(spread_patches(f, budget).T) for f in frames])
        found = neighbours(vectors, k)
        overlap = np.array([len(set(a) & set(b)) for a, b in zip(reference, found, strict=True)])
        cosine = np.sum(full * vectors, axis=1) / (
            np.linalg.norm(full, axis=1) * np.linalg.norm(vectors, axis=1)
        )
        results[str(budget)] = {
            "mean_top10_overlap": round(float(overlap.mean() / k), 3),
            "share_keeping_6_of_10": round(float((overlap >= 0.6 * k).mean()), 3),
            "mean_cosine_to_full": round(float(cosine.mean()), 4),
            "model_work_share": round(
                float(sum(min(len(f), budget) for f in frames) / sum(len(f) for f in frames)), 3
            ),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--corpus", action="store_true", help="build and use the Debian corpus")
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--budgets", default="2,4,8,12,16,24,32,48")
    smoke.add_flag(parser)
    args = parser.parse_args()
    folder = args.folder
    if args.corpus or folder is None:
        folder = build_corpus().pop().parent
    files = interleaved(
        [p for p in folder.iterdir() if p.suffix in {".ogg", ".mp3", ".flac", ".wav"}],
        4 if args.smoke else args.limit,
    )
    budgets = [int(b) for b in args.budgets.split(",")]
    frames = patch_embeddings(files, args.smoke)
    results = compare(frames, budgets)
    good = [b for b in budgets if results[str(b)]["mean_top10_overlap"] >= MEAN_OVERLAP_FLOOR
            and results[str(b)]["share_keeping_6_of_10"] >= KEEP_SIX_SHARE]  # fmt: skip
    print(json.dumps({
        "bench": "patch_budget",
        "smoke": args.smoke,
        "corpus": describe(files),
        "patches": int(sum(len(f) for f in frames)),
        "by_budget": results,
        "recommended_max_patches": min(good) if good else None,
        "target": {"mean_top10_overlap": MEAN_OVERLAP_FLOOR,
                   "share_keeping_6_of_10": KEEP_SIX_SHARE},
        "machine": machine_info(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
