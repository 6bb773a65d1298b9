"""What tempo, key, loudness and energy cost next to the MusiCNN embedding of the same audio.

Issue 18 says: if the analysis slows the embedder by more than 15 %, it runs in a
consumer group of its own. This bench answers that on this machine: it generates
music-like tracks (a drum pattern over a chord progression, 16 kHz, the samples
the MusiCNN embedder decodes), times `models.analysis.analyse_audio` on each and
MusiCNN's `embed` on the same tracks in batches (the embedder's batch_tracks),
and reports seconds per hour of audio for both (wall and CPU), the analysis
parts, and the ratio. Decoding is left out of both: it is shared.
Usage: .venv/bin/python bench/audio_features.py [--tracks N] [--seconds S]
       [--device cpu|cuda] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from models.analysis import analyse_audio
from models.analysis.energy import energy_figure
from models.analysis.key import estimate_key
from models.analysis.loudness import integrated_loudness
from models.analysis.spectrum import mel_frames, onset_strength
from models.analysis.tempo import estimate_tempo
from models.base import ModelOptions, TrackAudio
from models.registry import create_model

SR = 16000
INLINE_LIMIT = 0.15  # the threshold: more than this, and it gets its own group


def music_like(seconds: float, seed: int) -> np.ndarray:
    """A rock beat (kick, snare, eighth hi-hats) at a seeded tempo over seeded triads."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    bpm = track_bpm(seed)
    rng.uniform(70, 170)  # the draw track_bpm made, so the rest stays as it was
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    chords = np.zeros(n)
    for i, start in enumerate(range(0, n, 2 * SR)):
        span = t[start : start + 2 * SR] - t[start]
        base = root * 2 ** ((0, 5, 7, 0)[i % 4] / 12)
        chord = sum(np.sin(2 * np.pi * base * r * span) for r in (1.0, 1.26, 1.5))
        chords[start : start + 2 * SR] = chord * np.exp(-span / 1.5)
    hit_t = np.arange(int(0.15 * SR)) / SR
    noise = rng.normal(0, 1, hit_t.size)
    kick = np.sin(2 * np.pi * 55 * hit_t) * np.exp(-hit_t / 0.08)
    snare = noise * np.exp(-hit_t / 0.04)
    drums = np.zeros(n)
    hat = 0.15 * noise * np.exp(-hit_t / 0.012)
    for beat, at in enumerate(np.arange(0.05, seconds, 60 / bpm)):
        for sound, start in ((kick if beat % 2 == 0 else snare, at), (hat, at + 30 / bpm)):
            first = int(start * SR)
            piece = sound[: max(0, n - first)]
            drums[first : first + piece.size] += piece
    audio = 0.3 * chords + drums + 0.01 * rng.normal(0, 1, n)
    return (0.5 * audio / np.abs(audio).max()).astype(np.float32)


def track_bpm(seed: int) -> float:
    return float(np.random.default_rng(seed).uniform(70, 170))


def tempo_verdicts(found: list[float | None], truth: list[float]) -> dict[str, int]:
    """How many tempi were within 2 %, at half or double tempo, or otherwise off."""
    counts = {"right": 0, "half": 0, "double": 0, "other": 0}
    for bpm, true in zip(found, truth, strict=True):
        ratio = (bpm or 0.0) / true
        name = next(
            (
                k
                for k, r in (("right", 1), ("half", 0.5), ("double", 2))
                if abs(ratio / r - 1) <= 0.02
            ),
            "other",
        )
        counts[name] += 1
    return counts


def timed(work) -> tuple[float, float]:
    """(wall s, CPU s of the whole process: every torch/BLAS thread counts)."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_hour(seconds: float, audio_s: float) -> float:
    return round(seconds * 3600 / audio_s, 2)


def analysis_parts(tracks: list[np.ndarray]) -> dict[str, float]:
    """Wall seconds of each part of the analysis over all tracks."""
    parts = dict.fromkeys(("loudness", "mel_spectrum", "tempo", "key", "energy"), 0.0)
    for audio in tracks:
        started = time.perf_counter()
        loudness = integrated_loudness(audio, SR) or -60.0
        mark = time.perf_counter()
        parts["loudness"] += mark - started
        mel = mel_frames(audio, SR, float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))))
        onsets = onset_strength(mel)
        parts["mel_spectrum"] += time.perf_counter() - mark
        mark = time.perf_counter()
        estimate_tempo(onsets, mel.frames_per_s)
        parts["tempo"] += time.perf_counter() - mark
        mark = time.perf_counter()
        estimate_key(audio, SR)
        parts["key"] += time.perf_counter() - mark
        mark = time.perf_counter()
        energy_figure(loudness, mel, onsets)
        parts["energy"] += time.perf_counter() - mark
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--batch", type=int, default=8, help="tracks per embed call (default 8)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.seconds, args.batch = 2, 8.0, 2
    tracks = [music_like(args.seconds, seed) for seed in range(args.tracks)]
    audio_s = args.tracks * args.seconds

    analyse_audio(tracks[0][: 10 * SR], SR)  # librosa's first call builds filters and caches
    features: list = []
    analysis_wall, analysis_cpu = timed(
        lambda: features.extend(analyse_audio(a, SR) for a in tracks)
    )
    parts = analysis_parts(tracks)

    model = create_model("musicnn", ModelOptions(device=args.device, idle_unload_s=0))
    model.embed([TrackAudio("warm-up", tracks[0][: 10 * SR])])  # loads the weights
    batches = [tracks[i : i + args.batch] for i in range(0, len(tracks), args.batch)]

    def embed_all() -> None:
        for batch in batches:
            model.embed([TrackAudio(f"t{i}", audio) for i, audio in enumerate(batch)])

    embed_wall, embed_cpu = timed(embed_all)
    model.close()

    ratio_wall = analysis_wall / embed_wall
    result = {
        "bench": "audio_features",
        "smoke": args.smoke,
        "tracks": args.tracks,
        "track_seconds": args.seconds,
        "sample_rate": SR,
        "embed_device": args.device,
        "embed_batch_tracks": args.batch,
        "analysis_s_per_hour": per_hour(analysis_wall, audio_s),
        "analysis_cpu_s_per_hour": per_hour(analysis_cpu, audio_s),
        "analysis_parts_s_per_hour": {k: per_hour(v, audio_s) for k, v in parts.items()},
        "musicnn_embed_s_per_hour": per_hour(embed_wall, audio_s),
        "musicnn_embed_cpu_s_per_hour": per_hour(embed_cpu, audio_s),
        "analysis_vs_embed_wall": round(ratio_wall, 3),
        "analysis_vs_embed_cpu": round(analysis_cpu / embed_cpu, 3),
        "inline_limit": INLINE_LIMIT,
        "verdict": "inline in the embedder" if ratio_wall <= INLINE_LIMIT else "own consumer group",
        "bpm_true": [round(track_bpm(seed), 1) for seed in range(args.tracks)],
        "bpm_found": [f.bpm for f in features],
        "bpm_verdicts": tempo_verdicts(
            [f.bpm for f in features], [track_bpm(seed) for seed in range(args.tracks)]
        ),
        "machine": machine_info(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
