"""End-to-end embedding throughput of the `embed-musicnn` consumer on this machine.

Two corpora:
- synthetic (default): N generated WAV tracks (default 40 x 30 s);
- `--folder DIR` (or `--corpus`, which builds bench/real_corpus.py's Debian corpus of
  Ogg/MP3/FLAC soundtracks): real files, `--limit` of them, formats in turn.
The tracks are published to the real broker (started or reused on a bench port), the
embedding consumer runs with Milvus Lite until every track is stored, and the bench
reports the realtime factor (seconds of audio per second of wall time, model load
included), tracks per hour, seconds per hour of audio in each stage (decode +
resample, mel, tempo/key/energy, model, upsert; decoding, mel and analysis overlap
with the model, so stages add up to more than the wall), peak RSS, and, with a folder:
- model only: the network alone on the corpus' first patches, as GFLOP/s and as a
  share of the sgemm peak measured in the same run (bench/model_speed.py);
- the original TensorFlow extractor on the same files (bench/tf_peer.py, its own
  virtualenv made once): end-to-end and model-only ratios. `--no-peer` skips it.
`--heads msd+mtt` and `--max-patches N` set the model's options.
Usage: .venv/bin/python bench/embed_throughput.py [--corpus | --folder DIR] [--limit N]
       [--heads msd|msd+mtt] [--max-patches N] [--no-peer] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import smoke
from corpus import events_for_files, publish, write_tracks
from machine import machine_info
from model_speed import flops_per_patch, sgemm_peak, time_model_only

from models.base import ModelOptions
from models.musicnn import MusicnnModel, spread_patches
from models.musicnn_spec import musicnn_patches
from pipeline import infra
from pipeline.audio import decode_audio
from pipeline.bus import make_consumer
from pipeline.config import (
    EmbedSettings,
    KafkaSettings,
    MilvusSettings,
    Settings,
    TopicSettings,
)
from pipeline.consumers.embedder import run_embedder
from pipeline.schemas import EmbeddingEvent
from pipeline.schemas.embeddings import StageTimings
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics

BENCH_HOME = Path(tempfile.gettempdir()) / "sonicbus-bench"
KAFKA_PORT = 39292
TARGETS = {
    "realtime_factor": 75.0,
    "realtime_factor_with_patch_budget": 150.0,
    "model_share_of_sgemm_peak": 0.65,
    "model_only_vs_original": 2.0,
    "peak_rss_mib": 1536,
}
MODEL_ONLY_PATCHES = 320


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tracks", type=int, default=40, help="synthetic tracks")
    parser.add_argument("--seconds", type=float, default=30.0, help="synthetic track length")
    parser.add_argument("--folder", type=Path, help="embed the audio files of this folder")
    parser.add_argument("--corpus", action="store_true", help="build and use the Debian corpus")
    parser.add_argument("--limit", type=int, default=24, help="files of the folder (default 24)")
    parser.add_argument("--batch", type=int, default=8, help="embed.batch_tracks (default 8)")
    parser.add_argument("--heads", choices=["msd", "msd+mtt"], default="msd")
    parser.add_argument("--max-patches", type=int, help="patch budget per track (default: all)")
    parser.add_argument("--threads", type=int, help="embed.threads (default: all cores)")
    parser.add_argument(
        "--no-audio-features",
        action="store_true",
        help="embed.audio_features off: no tempo/key/loudness/energy (the figure before them)",
    )
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "torch"])
    parser.add_argument("--no-peer", action="store_true", help="skip the TensorFlow original")
    parser.add_argument("--tf-python", type=Path, help="python of an existing TF virtualenv")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.tracks, args.seconds, args.batch, args.limit = 3, 3.0, 2, 2
    if args.corpus:
        from real_corpus import build_corpus

        args.folder = build_corpus().pop().parent
    return args


async def main() -> None:
    args = parse_args()
    home, port = (smoke.HOME, smoke.KAFKA_PORT) if args.smoke else (BENCH_HOME, KAFKA_PORT)
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    settings = Settings(
        home=home,
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", local_port=port),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix, partitions=3),
        embed=EmbedSettings(
            batch_tracks=args.batch,
            idle_unload_s=0,
            device="cpu",
            threads=args.threads,
            audio_features=not args.no_audio_features,
            params={"musicnn": model_params(args)},
        ),
    )
    infra.start_kafka(settings)
    await ensure_topics(settings.kafka, settings.topics)
    with tempfile.TemporaryDirectory() as scratch:
        if args.folder:
            from real_corpus import describe, interleaved

            files = interleaved(list_audio(args.folder), args.limit)
            corpus = {"folder": str(args.folder), **describe(files)}
            events = events_for_files(args.folder, files)
        else:
            files = []
            events = write_tracks(Path(scratch), [args.seconds] * args.tracks)
            corpus = {"synthetic_tracks": args.tracks, "track_seconds": args.seconds}
        await publish(settings, events)
        store = VectorStore(MilvusSettings(), str(Path(scratch) / "bench.db"))
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
        embedded = await read_events(settings, len(events), task)
        elapsed = time.perf_counter() - started
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        stop.set()
        await task
        stored = store.count(store.collection_name("musicnn"))
        store.close()

    result = {
        "bench": "embed_throughput",
        "smoke": args.smoke,
        "model": "musicnn",
        "heads": args.heads,
        "max_patches": args.max_patches,
        "audio_features": not args.no_audio_features,
        "corpus": corpus,
        "batch_tracks": args.batch,
        "stored_rows": stored,
        **end_to_end(embedded, elapsed),
        "peak_rss_mib": round(peak_rss, 1),
    }
    if files:
        result |= model_only(files[:8], args)
        if not args.no_peer:
            result |= peer(files, args, result)
    result |= {"target": TARGETS, "machine": machine_info()}
    print(json.dumps(result))
    if stored != len(events):
        raise SystemExit(f"{stored} rows stored for {len(events)} tracks")


def model_params(args: argparse.Namespace) -> dict[str, object]:
    params = {"heads": args.heads, "max_patches": args.max_patches, "backend": args.backend}
    return {k: v for k, v in params.items() if v is not None}


def list_audio(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix.lower() in {".ogg", ".mp3", ".flac", ".wav"}]


def end_to_end(embedded: list[tuple[float, StageTimings]], elapsed: float) -> dict[str, object]:
    """Realtime factors and per-stage seconds per hour of audio.

    The steady rate leaves out the model load and the first batch: its clock starts when
    the first `embedded` events arrive and it counts only the audio of tracks that
    arrived after them (the first batch's tracks all arrive at that same moment).
    """
    timings = [t for _, t in embedded]
    audio_s = sum(t.audio_s for t in timings)
    first = min(at for at, _ in embedded)
    later = [(at, t) for at, t in embedded if at > first]
    steady_s = max(at for at, _ in embedded) - first
    steady_audio = sum(t.audio_s for _, t in later)
    hours = audio_s / 3600

    def per_hour(stage: str) -> float:
        return round(sum(getattr(t, stage) for t in timings) / 1000 / hours, 1)

    realtime = audio_s / elapsed
    return {
        "tracks": len(embedded),
        "audio_s": round(audio_s, 1),
        "wall_s_including_model_load": round(elapsed, 2),
        "realtime_factor": round(realtime, 1),
        "steady_realtime_factor": round(steady_audio / steady_s, 1) if later else None,
        "tracks_per_hour": round(len(embedded) / elapsed * 3600),
        "four_minute_tracks_per_hour": round(realtime * 3600 / 240),
        "stage_s_per_audio_hour": {
            "decode_resample": per_hour("decode_ms"),
            "mel": per_hour("prepare_ms"),
            "tempo_key_energy": per_hour("analyse_ms"),
            "model": per_hour("embed_ms"),
            "upsert": per_hour("upsert_ms"),
        },
    }


def model_only(files: list[Path], args: argparse.Namespace) -> dict:
    """The network alone (no decoding beside it) on the first patches of a few files."""
    from models.musicnn_net import MusiCNN  # PyTorch: only for the layer shapes (FLOPs)

    patches = [spread_patches(musicnn_patches(decode_audio(str(f), 16000)), args.max_patches)
               for f in files]  # fmt: skip
    stacked = np.concatenate(patches)[: 40 if args.smoke else MODEL_ONLY_PATCHES]
    threads = args.threads or os.cpu_count() or 1
    peak = sgemm_peak(threads, size=512 if args.smoke else 2048)
    model = MusicnnModel(
        ModelOptions(device="cpu", threads=args.threads, params=model_params(args))
    )
    model.load("cpu")
    seconds, flops, by_batch = 0.0, 0.0, {}
    for head, net in model._nets.items():  # the heads as the embedder runs them
        timing = time_model_only(net.run, stacked, repeats=1 if args.smoke else 2)
        seconds += timing.seconds
        flops += flops_per_patch(MusiCNN()) * len(stacked)
        if head == "msd":  # the forward batch (ModelOptions.batch_size, 16) against others
            for batch in (4, 8, 16, 32, 64):
                ms = time_model_only(net.run, stacked, batch=batch, repeats=1).ms_per_patch
                by_batch[str(batch)] = round(ms, 2)
    in_torch = MusicnnModel(
        ModelOptions(device="cpu", params={**model_params(args), "backend": "torch"})
    )
    in_torch.load("cpu")
    torch_ms = time_model_only(in_torch._nets["msd"].run, stacked[:64], repeats=1).ms_per_patch
    gflops = flops / seconds / 1e9
    return {
        "model_only": {
            "patches": len(stacked),
            "ms_per_patch": round(seconds * 1000 / len(stacked), 2),
            "realtime_factor": round(len(stacked) * 3.0 / seconds, 1),
            "gflops": round(gflops, 1),
            "sgemm_peak_gflops": round(peak["peak"], 1),
            "sgemm_gflops_by_blas": {k: round(v, 1) for k, v in peak.items() if k != "peak"},
            "share_of_sgemm_peak": round(gflops / peak["peak"], 3),
            "threads": threads,
            "backend": model._backend("cpu"),
            "msd_ms_per_patch_by_forward_batch": by_batch,
            "msd_ms_per_patch_pytorch_fused": round(torch_ms, 2),
        }
    }


def peer(files: list[Path], args: argparse.Namespace, ours: dict) -> dict:
    """The original TF extractor on the same files: end-to-end and model-only ratios."""
    from tf_peer import TfPeerError, ensure_tf_python, find_tf_python, time_original

    try:
        python = (
            find_tf_python(tf_python=args.tf_python)
            if args.smoke
            else ensure_tf_python(tf_python=args.tf_python)
        )
        if python is None:
            return {"peer": "skipped: no TensorFlow virtualenv (smoke runs never make one)"}
        timing = time_original(files, python)
    except TfPeerError as exc:
        return {"peer": f"failed: {exc}"}
    audio_s = sum(f.audio_s for f in timing.files)
    wall_s = sum(f.total_s for f in timing.files)
    model_s = sum(f.model_s for f in timing.files)
    patches = sum(f.patches for f in timing.files)
    original_ms = model_s * 1000 / patches
    ours_ms = ours["model_only"]["ms_per_patch"] / len(args.heads.split("+"))
    return {
        "peer": {
            "what": "musicnn 0.1.0 extractor, TensorFlow, MSD_musicnn, same files",
            "audio_s": round(audio_s, 1),
            "realtime_factor": round(audio_s / wall_s, 1),
            "model_ms_per_patch": round(original_ms, 2),
            "end_to_end_ratio": round(ours["realtime_factor"] / (audio_s / wall_s), 2),
            "model_only_ratio": round(original_ms / ours_ms, 2),
        }
    }


async def read_events(
    settings: Settings, expected: int, embedder: asyncio.Task[None]
) -> list[tuple[float, StageTimings]]:
    """(arrival time, timings) of each `embedded` event, read as they come (the embedder's
    error, should it stop before)."""
    consumer = make_consumer(settings.kafka, settings.topics.embeddings, group_id=None)
    await consumer.start()
    seen: list[tuple[float, StageTimings]] = []
    try:
        while len(seen) < expected:
            if embedder.done():
                embedder.result()
                raise SystemExit(f"the embedder stopped after {len(seen)} of {expected} tracks")
            batch = await consumer.getmany(timeout_ms=500)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event = EmbeddingEvent.from_bytes(record.value)
                    if event.status == "embedded":
                        seen.append((now, event.timings))
    finally:
        await consumer.stop()
    return seen


if __name__ == "__main__":
    asyncio.run(main())
