"""Compare the PyTorch MusiCNN port with the original TensorFlow musicnn, and time it.

Why: the port is only worth shipping if it reproduces the released model, so this
script runs both on the same recording and reports the largest absolute
differences of the 200-d ``penultimate`` embeddings and of the 50 MSD tag
probabilities (target < 1e-3).  No real recordings are available offline, so by
default it synthesizes a deterministic, music-like 30 s clip (chords, bass,
melody, drums, noise) and writes it as a 16 kHz WAV.

The TF reference comes from ``bench/musicnn_parity_tf.py``, which needs its own
virtualenv with TensorFlow (see its docstring).  One command does everything::

    .venv/bin/python bench/musicnn_parity.py --tf-python /tmp/tfenv/bin/python

or produce the reference yourself and pass ``--reference``.  The last line of
output is one JSON object with the figures and the machine they came from.

``--smoke`` (seconds): with a reference, the comparison at one timing repeat; without
one (no TensorFlow here), the port alone on a 6 s clip, its outputs checked for shape and
range, and the JSON says ``"tf_comparison": "skipped: ..."`` with no difference figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import smoke
import soundfile as sf
from machine import machine_info

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / "var" / "musicnn_parity"
TOLERANCE = 1e-3


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _tone(
    freq: float, duration: float, sr: int, harmonics: int, decay: float, attack: float = 0.01
) -> np.ndarray:
    """A harmonic tone with a linear attack and exponential decay."""
    t = np.arange(int(duration * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * h * t) / h for h in range(1, harmonics + 1))
    envelope = np.minimum(t / attack, 1.0) * np.exp(-t / decay)
    return (wave * envelope).astype(np.float64)


def _add(buffer: np.ndarray, start: float, sound: np.ndarray, sr: int, gain: float) -> None:
    begin = int(start * sr)
    end = min(begin + sound.size, buffer.size)
    if begin < end:
        buffer[begin:end] += gain * sound[: end - begin]


def synthesize_music(seconds: float = 30.0, sr: int = 16000, seed: int = 20190801) -> np.ndarray:
    """Deterministic pop-like clip: I-V-vi-IV pads, bass, pentatonic lead, kick/snare/hats.

    Peak-normalized to 0.9, so loud mel bins go past what ``10000 * x`` can hold in
    float16 (the original's numpy-2 overflow case) and the float16 rounding matters.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr))
    beat = 60.0 / 112.0
    bar = 4 * beat
    progression = [(48, (60, 64, 67)), (43, (59, 62, 67)), (45, (60, 64, 69)), (41, (60, 65, 69))]
    pentatonic = [72, 74, 76, 79, 81, 84]
    for index in range(int(seconds / bar) + 1):
        start = index * bar
        bass_note, triad = progression[index % len(progression)]
        for note in triad:
            detune = 1.0 + 0.002 * rng.standard_normal()
            pad = _tone(_midi_hz(note) * detune, bar, sr, harmonics=6, decay=2.5, attack=0.08)
            _add(out, start, pad, sr, 0.12)
        for step in range(4):
            _add(out, start + step * beat, _tone(_midi_hz(bass_note), beat, sr, 4, 0.35), sr, 0.35)
            kick_t = np.arange(int(0.3 * sr)) / sr
            kick = np.sin(2 * np.pi * (45 * kick_t + 75 * 0.05 * (1 - np.exp(-kick_t / 0.05))))
            if step in (0, 2):
                _add(out, start + step * beat, kick * np.exp(-kick_t / 0.12), sr, 0.8)
            else:
                snare_t = np.arange(int(0.2 * sr)) / sr
                body = rng.standard_normal(snare_t.size) + np.sin(2 * np.pi * 185 * snare_t)
                _add(out, start + step * beat, body * np.exp(-snare_t / 0.06), sr, 0.25)
            for half in (0.0, 0.5):
                hat = np.diff(rng.standard_normal(int(0.05 * sr) + 1))
                hat *= np.exp(-np.arange(hat.size) / (0.012 * sr))
                _add(out, start + (step + half) * beat, hat, sr, 0.06)
            for half in (0.0, 0.5):
                if rng.random() < 0.7:
                    note = pentatonic[int(rng.integers(len(pentatonic)))]
                    lead = _tone(_midi_hz(note), beat / 2, sr, harmonics=3, decay=0.3)
                    _add(out, start + (step + half) * beat, lead, sr, 0.15)
    out += 0.003 * rng.standard_normal(out.size)
    return (0.9 * out / np.max(np.abs(out))).astype(np.float32)


def torch_machine_info(threads: int) -> dict[str, Any]:
    """The machine, torch's version and threads, so the speed figures can be put in context."""
    import torch

    return {
        **machine_info(),
        "torch": torch.__version__,
        "torch_threads": threads,
        # Other work on the machine slows the timings; this says how busy it was.
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


def measure_speed(
    model: Any, patches: np.ndarray, audio: np.ndarray, batch_size: int, repeats: int
) -> dict[str, float]:
    """Time the network on ``batch_size``-patch batches and the log-mel front end (medians)."""
    import torch

    from models.musicnn_net import HOP_LENGTH, SAMPLE_RATE, musicnn_patches

    reps = int(np.ceil(batch_size / len(patches)))
    batch = torch.from_numpy(np.tile(patches, (reps, 1, 1))[:batch_size].copy())
    network_times: list[float] = []
    with torch.inference_mode():
        model(batch)  # warm-up: oneDNN picks its kernels on the first call
        for _ in range(repeats):
            started = time.perf_counter()
            model(batch)
            network_times.append(time.perf_counter() - started)
    logmel_times: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        musicnn_patches(audio)
        logmel_times.append(time.perf_counter() - started)
    # Medians: other work on a shared 2-core machine makes single runs noisy.
    network_s = float(np.median(network_times))
    seconds_per_patch = patches.shape[1] * HOP_LENGTH / SAMPLE_RATE
    patches_per_s = batch_size / network_s
    return {
        "batch_size": batch_size,
        "patches_per_s": round(patches_per_s, 2),
        "audio_s_per_s_network": round(patches_per_s * seconds_per_patch, 1),
        "audio_s_per_s_logmel": round(audio.size / SAMPLE_RATE / float(np.median(logmel_times)), 1),
        "repeats": repeats,
    }


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise SystemExit(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def main(argv: list[str] | None = None) -> int:
    """Build/reuse the audio and TF reference, run the port, print diffs and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, default=DEFAULT_DIR / "synthetic_music.wav")
    parser.add_argument("--reference", type=Path, default=DEFAULT_DIR / "tf_reference.npz")
    parser.add_argument("--tf-python", help="python of a TF venv: (re)build the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats = 1

    sys.path.insert(0, str(REPO_ROOT))
    import torch

    from models.musicnn_checkpoint import ensure_musicnn_wheel
    from models.musicnn_net import (
        SAMPLE_RATE,
        load_pretrained_musicnn,
        musicnn_patches,
        run_musicnn,
    )

    torch.set_num_threads(args.threads)
    if not args.audio.exists() and (args.tf_python or not args.smoke):
        args.audio.parent.mkdir(parents=True, exist_ok=True)
        sf.write(args.audio, synthesize_music(sr=SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
        print(f"wrote synthetic audio to {args.audio}")
    if args.tf_python:
        command = [
            args.tf_python, str(REPO_ROOT / "bench" / "musicnn_parity_tf.py"),
            "--audio", str(args.audio), "--out", str(args.reference),
            "--wheel", str(ensure_musicnn_wheel()),
        ]  # fmt: skip
        print("running:", " ".join(command))
        subprocess.run(command, check=True)
    if args.smoke and not (args.reference.exists() and args.audio.exists()):
        return port_only(args)
    if not args.reference.exists():
        raise SystemExit(
            f"{args.reference} missing: run bench/musicnn_parity_tf.py in a TensorFlow venv "
            "or pass --tf-python PATH_TO_TF_VENV_PYTHON"
        )

    reference = np.load(args.reference)
    meta = json.loads(str(reference["meta"]))
    audio, sr = sf.read(args.audio, dtype="float32")
    if sr != SAMPLE_RATE or audio.ndim != 1:
        raise SystemExit(f"parity audio must be 16 kHz mono (got {sr} Hz, shape {audio.shape})")
    # Match the STFT centre padding of the librosa the TF reference ran with.
    patches = musicnn_patches(audio, pad_mode=meta["stft_pad_mode"])
    model = load_pretrained_musicnn()
    tags, embedding = run_musicnn(model, patches, batch_size=args.batch_size)
    tf_patches = reference["patches"]
    tags_same_input, embedding_same_input = run_musicnn(model, tf_patches, args.batch_size)
    with torch.inference_mode():
        pooled = model.features(torch.from_numpy(tf_patches)).numpy().reshape(-1, 753, 2)

    result: dict[str, Any] = {
        "bench": "musicnn_parity",
        "smoke": args.smoke,
        "tf_comparison": "done",
        "max_abs_diff_embedding": _max_abs(embedding, reference["penultimate"]),
        "max_abs_diff_tags": _max_abs(tags, reference["taggram"]),
        "max_abs_diff_patches": _max_abs(patches, tf_patches),
        "max_abs_diff_embedding_same_patches": _max_abs(
            embedding_same_input, reference["penultimate"]
        ),
        "max_abs_diff_tags_same_patches": _max_abs(tags_same_input, reference["taggram"]),
        "max_abs_diff_max_pool": _max_abs(pooled[:, :, 0], reference["max_pool"]),
        "max_abs_diff_mean_pool": _max_abs(pooled[:, :, 1], reference["mean_pool"]),
        "n_patches": int(patches.shape[0]),
        "audio": str(args.audio),
        "reference": {k: meta[k] for k in ("tensorflow", "numpy", "librosa", "stft_pad_mode")},
        "top_tags": [str(reference["labels"][i]) for i in np.argsort(-tags.mean(0))[:5]],
    }
    result["target"] = {"max_abs_diff_embedding": TOLERANCE, "max_abs_diff_tags": TOLERANCE}
    result["within_tolerance"] = (
        result["max_abs_diff_embedding"] < TOLERANCE and result["max_abs_diff_tags"] < TOLERANCE
    )
    if args.speed:
        result["speed"] = measure_speed(model, patches, audio, args.batch_size, args.repeats)
    result["machine"] = torch_machine_info(args.threads)
    for key, value in result.items():
        if key.startswith("max_abs_diff"):
            print(f"{key:40s} {value:.3e}")
    print(json.dumps(result))
    return 0 if result["within_tolerance"] else 1


def port_only(args: argparse.Namespace) -> int:
    """--smoke without a TF reference: run the port on a short clip and check its outputs;
    nothing is compared, so no difference figure is printed."""
    from models.musicnn_net import (
        SAMPLE_RATE,
        load_pretrained_musicnn,
        musicnn_patches,
        run_musicnn,
    )

    audio = synthesize_music(seconds=6.0, sr=SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as scratch:  # through a file, as the real run reads it
        path = Path(scratch) / "clip.wav"
        sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        audio, _ = sf.read(path, dtype="float32")
    patches = musicnn_patches(audio)
    model = load_pretrained_musicnn()
    tags, embedding = run_musicnn(model, patches, batch_size=args.batch_size)
    checks = {
        "embedding_shape": list(embedding.shape),
        "tags_shape": list(tags.shape),
        "finite": bool(np.isfinite(embedding).all() and np.isfinite(tags).all()),
        "tags_in_0_1": bool(((tags >= 0) & (tags <= 1)).all()),
    }
    ok = (
        embedding.shape == (patches.shape[0], 200)
        and tags.shape == (patches.shape[0], 50)
        and checks["finite"]
        and checks["tags_in_0_1"]
    )
    result: dict[str, Any] = {
        "bench": "musicnn_parity",
        "smoke": True,
        "tf_comparison": f"skipped: no TensorFlow reference at {args.reference} (it comes from "
        "bench/musicnn_parity_tf.py in a TensorFlow venv: pass --tf-python)",
        "port_checks": checks,
        "n_patches": int(patches.shape[0]),
        "target": {"max_abs_diff_embedding": TOLERANCE, "max_abs_diff_tags": TOLERANCE},
    }
    if args.speed:
        result["speed"] = measure_speed(model, patches, audio, args.batch_size, args.repeats)
    result["machine"] = torch_machine_info(args.threads)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
