"""Track identity with a real Navidrome: its `media_file.id` is sonicbus' key. It survives
Navidrome's rescans and file moves; a database rebuilt from scratch gives new ids, which
the scan producer re-matches to the old ones by the secondary keys on the TrackEvent
(Navidrome's `pid`, the MusicBrainz recording id, the file content).
"""

from __future__ import annotations

from pathlib import Path

from aiokafka import AIOKafkaProducer

from pipeline.catalog import read_tracks
from pipeline.config import Settings
from pipeline.producers.navidrome import DatabaseSource, NavidromeScanner
from pipeline.schemas import TrackMetadata
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs

SONGS = [
    Song(
        f"Artist {i}/Album {i}/0{i} - Song {i}.{suffix}",
        TrackMetadata(
            title=f"Song {i}",
            artist=f"Artist {i}",
            album=f"Album {i}",
            track_number=i + 1,
            mbz_recording_id=f"0f2a4b5c-0000-4000-8000-00000000000{i}" if i % 2 else None,
        ),
    )
    for i, suffix in enumerate(["mp3", "flac", "ogg", "mp3", "flac", "ogg"])
]


async def scan(settings: Settings, producer: AIOKafkaProducer):  # type: ignore[no-untyped-def]
    return await NavidromeScanner(
        settings, DatabaseSource(settings.navidrome), producer
    ).scan_once()


async def test_ids_survive_rescans_and_moves(
    settings: Settings,
    producer: AIOKafkaProducer,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
) -> None:
    files = write_songs(navidrome_folder, SONGS[:2])
    navidrome_server.rescan()
    config = navidrome_server.settings(settings)
    await scan(config, producer)
    before = navidrome_server.ids_by_path(navidrome_folder)

    moved = navidrome_folder / "Elsewhere" / "moved.mp3"
    moved.parent.mkdir()
    files[SONGS[0].path].rename(moved)
    navidrome_server.rescan(full=True)
    after = navidrome_server.ids_by_path(navidrome_folder)
    assert after[moved] == before[files[SONGS[0].path]]  # Navidrome kept the id

    report = await scan(config, producer)
    assert report.ok and report.published == 1 and report.removed == 0
    event = (await read_tracks(settings.kafka, settings.topics.tracks))[after[moved]]
    assert event.path == str(moved)


async def test_a_database_rebuilt_from_scratch_is_rematched(
    settings: Settings, producer: AIOKafkaProducer, navidrome_factory, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    write_songs(music, SONGS)
    first: NavidromeServer = navidrome_factory(music)
    report = await scan(first.settings(settings), producer)
    assert report.published == len(SONGS)
    old = await read_tracks(settings.kafka, settings.topics.tracks)
    assert all(e.navidrome_pid for e in old.values())
    first.stop()

    # A new Navidrome (fresh database) that sees the same files under another path.
    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(music)
    second: NavidromeServer = navidrome_factory(elsewhere)
    report = await scan(second.settings(settings), producer)  # default deletion guard

    new = await read_tracks(settings.kafka, settings.topics.tracks)
    assert not set(new) & set(old)  # every id changed
    assert report.ok and report.rematched == len(SONGS) and report.refused_removals == 0
    assert (report.published, report.removed) == (len(SONGS), len(SONGS))
    by_pid = {e.navidrome_pid: e for e in new.values()}
    for event in old.values():
        twin = by_pid[event.navidrome_pid]  # same tags, same pid
        assert twin.path == event.path.replace(str(music), str(elsewhere))
        assert twin.metadata.mbz_recording_id == event.metadata.mbz_recording_id
        assert twin.fingerprint == event.fingerprint
