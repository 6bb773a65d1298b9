"""Music for the benches: real tagged files, and the TrackEvents the filesystem producer
makes of them.

The audio comes from `pipeline.producers.samplefiles` (the one sample-file writer the
tests and demos use too); each file is inspected by the watcher's own code, so events
carry real durations, tags and fingerprints.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.bus import make_producer
from pipeline.config import Settings
from pipeline.producers.music_folder import Candidate, events_for, inspect
from pipeline.producers.samplefiles import write_tagged_audio
from pipeline.schemas import TrackEvent, TrackMetadata


def write_tracks(
    folder: Path, lengths_s: Iterable[float], seed: int = 0, prefix: str = "b"
) -> list[TrackEvent]:
    """One WAV per length (seconds) in `folder`, each with its own audio; their TrackEvents,
    with ids `<prefix>00000`, `<prefix>00001`, ..."""
    events = []
    for i, seconds in enumerate(lengths_s):
        tags = TrackMetadata(title=f"Song {i}", artist=f"Artist {i % 12}", album=f"Album {i % 5}")
        path = write_tagged_audio(
            folder / f"song{i:05d}.wav", tags, seconds=seconds, seed=seed * 100_000 + i
        )
        inspection = inspect(Candidate(str(path), str(folder)), known=None)
        events.extend(events_for(inspection, f"{prefix}{i:05d}"))
    return events


def events_for_files(folder: Path, files: Iterable[Path], prefix: str = "r") -> list[TrackEvent]:
    """The TrackEvents of existing audio files (real tags, durations, fingerprints), with ids
    `<prefix>00000`, ... in the order given."""
    events = []
    for i, path in enumerate(files):
        inspection = inspect(Candidate(str(path), str(folder)), known=None)
        events.extend(events_for(inspection, f"{prefix}{i:05d}"))
    return events


async def publish(settings: Settings, events: Iterable[TrackEvent]) -> None:
    """Publish TrackEvents to the tracks topic (keyed by id), all acknowledged on return."""
    producer = make_producer(settings.kafka, role="bench")
    await producer.start()
    try:
        for event in events:
            await producer.send(
                settings.topics.tracks, event.to_bytes(), key=event.track_id.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
