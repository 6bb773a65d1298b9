"""A music folder published on a real broker: the first scan, rescans, moves, CUE albums,
live additions and deletions, bad files, and the mass-deletion guard."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from pipeline.bus import make_consumer
from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.producers.audiofiles import derive_track_id
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.samplefiles import write_tagged_audio
from pipeline.schemas import TrackEvent, TrackMetadata
from tests.fixtures.bus import dead_letters, end_offsets
from tests.fixtures.catalog import LIBRARY
from tests.fixtures.cli import sonicbus


def build_library(root: Path) -> None:
    for seed, (relative, metadata) in enumerate(LIBRARY.items()):
        write_tagged_audio(root / relative, metadata, seconds=0.5, seed=seed)


@pytest.fixture
def music(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    build_library(root)
    return root


class TopicTail:
    """Follows the tracks topic from its current end, collecting (key, value) as they come."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = make_consumer(settings.kafka, group_id=None, role="test-tail")
        self.records: list[tuple[str, bytes | None]] = []

    async def __aenter__(self) -> TopicTail:
        await self.consumer.start()
        tps = [
            TopicPartition(self.settings.topics.tracks, p)
            for p in range(self.settings.topics.partitions)
        ]
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the lazy seek now, before anything is written
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def next_for(self, key: str, timeout: float = 10.0) -> bytes | None:
        """The next value published for `key` (None for a tombstone)."""
        seen = len([k for k, _ in self.records if k == key])
        async with asyncio.timeout(timeout):
            while True:
                values = [v for k, v in self.records if k == key]
                if len(values) > seen:
                    return values[seen]
                for records in (await self.consumer.getmany(timeout_ms=50)).values():
                    self.records.extend((r.key.decode(), r.value) for r in records)


async def test_initial_scan_publishes_every_track_with_its_tags(
    settings: Settings, producer: AIOKafkaProducer, music: Path
) -> None:
    (music / "Broken").mkdir()
    (music / "Broken" / "empty.mp3").write_bytes(b"")
    (music / "Broken" / "notes.flac").write_text("not audio at all\n" * 40)
    (music / "Broken" / "escape.ogg").symlink_to(music.parent / "outside.ogg")
    write_tagged_audio(music.parent / "outside.ogg", None, seconds=0.2)

    report = await FilesystemWatcher(settings, [music], producer).scan_once()

    assert (report.found, report.published, report.dead_lettered) == (8, 5, 3)
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert len(events) == 5
    by_relative = {e.relative_path: e for e in events.values()}
    for relative, tags in LIBRARY.items():
        event = by_relative[relative]
        assert event.track_id == derive_track_id(relative)
        assert event.path == str(music / relative) and event.library_root == str(music)
        assert event.source == "filesystem" and event.suffix == relative.rsplit(".", 1)[1]
        assert event.metadata.model_dump(exclude={"duration_s"}) == tags.model_dump(
            exclude={"duration_s"}
        )
        assert event.metadata.duration_s == pytest.approx(0.5, abs=0.08)
        assert event.fingerprint is not None
        assert event.fingerprint.size == (music / relative).stat().st_size
    letters = {Path(letter.key or "").name: letter for letter in await dead_letters(settings)}
    assert set(letters) == {"empty.mp3", "notes.flac", "escape.ogg"}
    assert all(letter.stage == "ingest" for letter in letters.values())
    assert "empty file" in letters["empty.mp3"].message
    assert "not decodable audio" in letters["notes.flac"].message
    assert "outside the library root" in letters["escape.ogg"].message


async def test_rescanning_an_unchanged_library_publishes_nothing(
    settings: Settings, producer: AIOKafkaProducer, music: Path
) -> None:
    await FilesystemWatcher(settings, [music], producer).scan_once()
    before = await end_offsets(settings, settings.topics.tracks, settings.topics.partitions)
    touched = music / "Field Recordings" / "rain.wav"
    os.utime(touched, (time.time() + 60, time.time() + 60))  # a touch is not a change

    # A new watcher, as after a restart: what is published comes from the topic.
    report = await FilesystemWatcher(settings, [music], producer).scan_once()

    assert (report.published, report.unchanged, report.removed) == (0, 5, 0)
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == (
        before
    )


async def test_a_moved_file_keeps_its_id(
    settings: Settings, producer: AIOKafkaProducer, music: Path
) -> None:
    await FilesystemWatcher(settings, [music], producer).scan_once()
    old_relative = "Field Recordings/rain.wav"
    new_path = music / "Archive" / "2024" / "rain (storm).wav"
    new_path.parent.mkdir(parents=True)
    shutil.move(music / old_relative, new_path)

    report = await FilesystemWatcher(settings, [music], producer).scan_once()

    assert (report.moved, report.published, report.removed) == (1, 1, 0)
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert len(events) == 5
    moved = events[derive_track_id(old_relative)]
    assert moved.path == str(new_path)
    assert moved.relative_path == "Archive/2024/rain (storm).wav"
    assert moved.metadata.title == "Rain"


async def test_a_single_file_album_with_a_cue_sheet_becomes_virtual_tracks(
    settings: Settings, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    root = tmp_path / "music"
    album = root / "Miles Davis" / "Kind of Blue"
    tags = TrackMetadata(album="Kind of Blue", artist="Miles Davis", year=1959)
    write_tagged_audio(album / "CDImage.flac", tags, seconds=6.0)
    (album / "CDImage.cue").write_text(
        'PERFORMER "Miles Davis"\nTITLE "Kind of Blue"\nFILE "CDImage.wav" WAVE\n'
        '  TRACK 01 AUDIO\n    TITLE "So What"\n    INDEX 01 00:00:00\n'
        '  TRACK 02 AUDIO\n    TITLE "Freddie Freeloader"\n    INDEX 01 00:02:15\n'
        '  TRACK 03 AUDIO\n    TITLE "Blue in Green"\n    INDEX 01 00:04:30\n'
    )

    report = await FilesystemWatcher(settings, [root], producer).scan_once()

    assert report.published == 3
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    base = derive_track_id("Miles Davis/Kind of Blue/CDImage.flac")
    assert sorted(events) == [f"{base}#01", f"{base}#02", f"{base}#03"]
    cuts = [(e.segment.start_s, e.segment.end_s) for e in (events[k] for k in sorted(events))]
    assert cuts == [(0.0, 2.2), (2.2, 4.4), (4.4, pytest.approx(6.0, abs=0.05))]
    assert events[f"{base}#02"].metadata.title == "Freddie Freeloader"
    assert events[f"{base}#02"].metadata.track_number == 2

    # Without its sheet the file is one track again, and the virtual ones are retired.
    (album / "CDImage.cue").unlink()
    await FilesystemWatcher(settings, [root], producer).scan_once()
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert list(events) == [base] and events[base].segment is None


async def test_watching_publishes_a_copied_file_when_complete_follows_renames_and_deletes(
    settings: Settings, producer: AIOKafkaProducer, music: Path, tmp_path: Path
) -> None:
    watcher = FilesystemWatcher(settings, [music], producer)
    stop = asyncio.Event()
    running = asyncio.create_task(watcher.run(stop))
    try:
        async with TopicTail(settings) as tail:
            await asyncio.wait_for(watcher.ready.wait(), timeout=30)
            data = write_tagged_audio(
                tmp_path / "incoming.flac",
                TrackMetadata(title="Hyperballad (live)", artist="Björk"),
                seconds=3.0,
            ).read_bytes()
            target = music / "Björk" / "Live" / "hyperballad.flac"
            target.parent.mkdir(parents=True)
            with open(target, "wb") as fh:  # a copy in progress: half, a pause, the rest
                fh.write(data[: len(data) // 2])
                fh.flush()
                await asyncio.sleep(0.3)
                fh.write(data[len(data) // 2 :])
            written = time.monotonic()
            track_id = derive_track_id("Björk/Live/hyperballad.flac")

            value = await tail.next_for(track_id)
            latency = time.monotonic() - written
            assert latency < 2.0, f"published {latency:.2f} s after the write completed"
            event = TrackEvent.from_bytes(value)
            assert event.metadata.title == "Hyperballad (live)"
            assert event.fingerprint is not None and event.fingerprint.size == len(data)

            renamed = target.with_name("Hyperballad (Live at Shepherds Bush).flac")
            target.rename(renamed)  # a rename while watching keeps the id too
            moved = TrackEvent.from_bytes(await tail.next_for(track_id))
            assert moved.path == str(renamed) and moved.metadata.title == "Hyperballad (live)"

            renamed.unlink()
            deleted = time.monotonic()
            assert await tail.next_for(track_id) is None
            assert time.monotonic() - deleted < 2.0
            assert [k for k, _ in tail.records].count(track_id) == 3  # no half-copied version
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
    events = await read_tracks(settings.kafka, settings.topics.tracks)
    assert len(events) == 5 and track_id not in events


async def test_a_library_that_vanishes_is_not_deleted(
    settings: Settings, producer: AIOKafkaProducer, music: Path
) -> None:
    await FilesystemWatcher(settings, [music], producer).scan_once()
    for relative in list(LIBRARY)[:4]:  # 4 of 5 gone at once: more than half the library
        (music / relative).unlink()

    report = await FilesystemWatcher(settings, [music], producer).scan_once()

    assert report.removed == 0 and report.refused_removals == 4
    assert report.refusal is not None and "nothing was removed" in report.refusal
    assert len(await read_tracks(settings.kafka, settings.topics.tracks)) == 5

    # A missing root (an unmounted disk) is refused before anything is looked at.
    missing = await FilesystemWatcher(settings, [music / "nowhere"], producer).scan_once()
    assert missing.error is not None and "not mounted?" in missing.error


async def test_sonicbus_watch_once_from_the_command_line(
    settings: Settings, music: Path, tmp_path: Path
) -> None:
    ids = {derive_track_id(relative) for relative in LIBRARY}
    dry = await sonicbus(settings, "watch", str(music), "--once", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    printed = {line.split()[1] for line in dry.stdout.splitlines() if line.startswith("publish ")}
    assert printed == ids
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0

    real = await sonicbus(settings, "watch", str(music), "--once", cwd=tmp_path)
    assert real.returncode == 0, real.stdout + real.stderr
    assert "5 published" in real.stdout
    assert set(await read_tracks(settings.kafka, settings.topics.tracks)) == ids
