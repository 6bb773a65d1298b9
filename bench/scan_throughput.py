"""Initial-scan throughput of the filesystem watcher on a real broker.

Generates 5,000 small tagged audio files (WAV, FLAC, Ogg Vorbis, MP3; not timed),
then times one `FilesystemWatcher.scan_once()`: listing, tag reading, content
fingerprints, id resolution and publishing every TrackEvent to Kafka (acks=all).
The broker is the local one `sonicbus infra up` uses, on a bench port; it is
started if needed and stopped again if this script started it.

    .venv/bin/python bench/scan_throughput.py [--files N] [--keep-broker] [--smoke]

The last line printed is one JSON object with the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import smoke
from machine import machine_info

from pipeline import infra
from pipeline.bus import make_admin, make_producer
from pipeline.config import KafkaSettings, Settings, TopicSettings
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.samplefiles import tag_file, write_tagged_audio
from pipeline.schemas import TrackMetadata
from pipeline.topics import ensure_topics

BENCH_PORT = 39292
BENCH_HOME = Path("/tmp/sonicbus-bench")
TARGET_FILES_PER_S = 500
FORMATS = ("flac", "mp3", "ogg", "wav")


def bench_settings(home: Path, port: int) -> Settings:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    return Settings(
        home=home,
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{port}", local_port=port, local_heap="512m"
        ),
        topics=TopicSettings(prefix=prefix, group_prefix=prefix, partitions=6),
    )


def generate_library(root: Path, count: int) -> None:
    """`count` files: one rendered template per format, copied and tagged one by one
    (the tags differ, so every file has its own content and fingerprint)."""
    templates = {}
    for extension in FORMATS:
        path = write_tagged_audio(root.parent / f"template.{extension}", None, seconds=0.25)
        templates[extension] = path.read_bytes()
    for i in range(count):
        extension = FORMATS[i % len(FORMATS)]
        artist, album = f"Artist {i % 97:02d}", f"Album {i % 13:02d}"
        path = root / artist / album / f"{i:05d} Track {i}.{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(templates[extension])
        tag_file(
            path,
            TrackMetadata(
                title=f"Track {i}",
                artist=artist,
                album=album,
                track_number=i % 20 + 1,
                year=1960 + i % 60,
                genre="Bench",
            ),
        )


async def timed_scan(settings: Settings, root: Path) -> tuple[float, float, int]:
    """Seconds of the initial scan, of an unchanged rescan, and the events published."""
    await ensure_topics(settings.kafka, settings.topics)
    producer = make_producer(settings.kafka, role="bench")
    await producer.start()
    try:
        started = time.perf_counter()
        report = await FilesystemWatcher(settings, [root], producer).scan_once()
        initial = time.perf_counter() - started
        started = time.perf_counter()
        rescan = await FilesystemWatcher(settings, [root], producer).scan_once()
        again = time.perf_counter() - started
    finally:
        await producer.stop()
    if report.published != report.found or rescan.published != 0:
        raise SystemExit(f"unexpected scan results: {report.summary()} / {rescan.summary()}")
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await admin.delete_topics(
            [
                settings.topics.name(f)
                for f in ("tracks", "embeddings", "dlq", "requests", "replies")
            ]
        )
    finally:
        await admin.close()
    return initial, again, report.published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--keep-broker", action="store_true", help="Leave the bench broker up.")
    smoke.add_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.files = 40
    home, port = (smoke.HOME, smoke.KAFKA_PORT) if args.smoke else (BENCH_HOME, BENCH_PORT)
    logging.basicConfig(level=logging.WARNING)

    settings = bench_settings(home, port)
    started_broker = not infra.port_open(port)
    print(f"broker 127.0.0.1:{port} ({'starting' if started_broker else 'reusing'})")
    infra.start_kafka(settings)
    workdir = Path(tempfile.mkdtemp(prefix="sonicbus-bench-"))
    try:
        root = workdir / "music"
        t0 = time.perf_counter()
        generate_library(root, args.files)
        print(f"generated {args.files} tagged files in {time.perf_counter() - t0:.1f} s")
        initial, rescan, published = asyncio.run(timed_scan(settings, root))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if started_broker and not args.keep_broker:
            infra.stop_kafka(settings)
    rate = published / initial
    print(f"initial scan: {published} files published in {initial:.2f} s = {rate:.0f} files/s")
    print(
        f"unchanged rescan: {published} files in {rescan:.2f} s = {published / rescan:.0f} files/s"
    )
    result = {
        "bench": "scan_throughput",
        "smoke": args.smoke,
        "files": published,
        "files_per_s": round(rate, 1),
        "rescan_files_per_s": round(published / rescan, 1),
        "target": {"files_per_s": TARGET_FILES_PER_S},
        "machine": machine_info(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
