"""One file at a time: tags, fingerprints, ids, CUE sheets, and the files that are refused."""

from __future__ import annotations

import builtins
import hashlib
import os
import unicodedata
from pathlib import Path

import pytest
from mutagen.asf import ASFDWordAttribute, ASFTags, ASFUnicodeAttribute
from mutagen.mp4 import MP4FreeForm, MP4Tags

from pipeline.producers import music_folder
from pipeline.producers.audiofiles import (
    IngestError,
    base_track_id,
    derive_track_id,
    fingerprint,
    metadata_from_tags,
    virtual_track_id,
)
from pipeline.producers.cue import CueError, decode_cue, parse_cue, segments, tracks_for
from pipeline.producers.music_folder import Candidate, Problem, events_for, inspect, walk
from pipeline.producers.samplefiles import write_tagged_audio
from tests.fixtures.catalog import SO_WHAT

META = SO_WHAT  # every tag sonicbus reads, the album artist apart from the artist
AUDIO = frozenset({"wav", "aiff", "flac", "ogg", "opus", "mp3"})


def inspect_new(path: Path, root: Path, cue: Path | None = None) -> music_folder.Inspection:
    return inspect(Candidate(str(path), str(root), str(cue) if cue else None), known=None)


@pytest.mark.parametrize("extension", ["wav", "aiff", "flac", "ogg", "opus", "mp3"])
def test_tags_of_every_format_become_track_metadata(tmp_path: Path, extension: str) -> None:
    path = write_tagged_audio(tmp_path / f"01 So What.{extension}", META, seconds=1.0)
    result = inspect_new(path, tmp_path)
    assert result.facts is not None and not result.problems
    read = result.facts.metadata
    assert read.model_dump(exclude={"duration_s"}) == META.model_dump(exclude={"duration_s"})
    assert read.duration_s == pytest.approx(1.0, abs=0.1)


def test_m4a_and_wma_tags_map_the_same_way() -> None:
    # No encoder for MP4/ASF here (no ffmpeg): their tag containers are built directly.
    mp4 = MP4Tags()
    mp4["\xa9nam"], mp4["\xa9ART"], mp4["aART"] = ["So What"], ["Miles Davis"], ["Miles"]
    mp4["\xa9alb"], mp4["trkn"], mp4["disk"] = ["Kind of Blue"], [(1, 5)], [(1, 1)]
    mp4["\xa9day"], mp4["\xa9gen"] = ["1959-08-17"], ["Jazz"]
    mp4["----:com.apple.iTunes:MusicBrainz Track Id"] = [MP4FreeForm(b"rec-1")]
    asf = ASFTags()
    asf["Title"], asf["Author"] = [ASFUnicodeAttribute("So What")], [ASFUnicodeAttribute("Miles")]
    asf["WM/TrackNumber"], asf["WM/Year"] = [ASFDWordAttribute(1)], [ASFUnicodeAttribute("1959")]
    asf["MusicBrainz/Track Id"] = [ASFUnicodeAttribute("rec-1")]
    from_mp4, from_asf = metadata_from_tags(mp4, 545.0), metadata_from_tags(asf, 545.0)
    assert (from_mp4.title, from_mp4.album_artist, from_mp4.track_number) == ("So What", "Miles", 1)
    assert (from_mp4.disc_number, from_mp4.year, from_mp4.mbz_recording_id) == (1, 1959, "rec-1")
    assert (from_asf.title, from_asf.artist, from_asf.track_number) == ("So What", "Miles", 1)
    assert (from_asf.year, from_asf.mbz_recording_id) == (1959, "rec-1")


def test_an_untagged_file_is_still_a_track(tmp_path: Path) -> None:
    path = write_tagged_audio(tmp_path / "untitled.flac", None, seconds=0.5)
    result = inspect_new(path, tmp_path)
    assert result.facts is not None
    assert result.facts.metadata.title is None
    assert result.facts.metadata.duration_s == pytest.approx(0.5, abs=0.05)
    [event] = events_for(result, "some-id")
    assert event.relative_path == "untitled.flac" and event.suffix == "flac"


def test_a_file_without_a_title_tag_is_titled_by_its_file_name(tmp_path: Path) -> None:
    # What replies, the CLI, the web UI and Navidrome's song matching then show.
    untagged = write_tagged_audio(tmp_path / "03 Night Drive.flac", None, seconds=0.5)
    [event] = events_for(inspect_new(untagged, tmp_path), "untagged")
    assert event.metadata.title == "03 Night Drive"
    tagged = write_tagged_audio(tmp_path / "01 track.flac", META, seconds=0.5)
    [event] = events_for(inspect_new(tagged, tmp_path), "tagged")
    assert event.metadata.title == "So What"  # a title tag wins
    # A CUE track without a TITLE: the file name and its number.
    audio = write_tagged_audio(tmp_path / "cut" / "Live Set.flac", None, seconds=4.0)
    (tmp_path / "cut" / "Live Set.cue").write_text(
        'FILE "Live Set.flac" WAVE\n  TRACK 01 AUDIO\n    INDEX 01 00:00:00\n'
        '  TRACK 02 AUDIO\n    TITLE "Encore"\n    INDEX 01 00:02:00\n'
    )
    [candidate] = [c for c in walk(str(audio.parent), AUDIO) if isinstance(c, Candidate)]
    events = events_for(inspect(candidate, None), "cut")
    assert [e.metadata.title for e in events] == ["Live Set (01)", "Encore"]


def test_fingerprint_samples_head_middle_and_tail(tmp_path: Path) -> None:
    data = bytearray(os.urandom(400 * 1024))
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(data)
    b.write_bytes(data)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        first = fingerprint(fa, len(data), 1)
        copy = fingerprint(fb, len(data), 2)
    assert first.fast_hash == copy.fast_hash  # same content elsewhere, another mtime
    data[len(data) // 2] ^= 0xFF  # inside the middle block
    b.write_bytes(data)
    with open(b, "rb") as fb:
        assert fingerprint(fb, len(data), 2).fast_hash != first.fast_hash
    data[len(data) // 2] ^= 0xFF
    data[100 * 1024] ^= 0xFF  # between the sampled blocks: the documented blind spot
    b.write_bytes(data)
    with open(b, "rb") as fb:
        assert fingerprint(fb, len(data), 2).fast_hash == first.fast_hash


def test_unchanged_file_is_recognised_and_a_retagged_one_is_not(tmp_path: Path) -> None:
    path = write_tagged_audio(tmp_path / "song.flac", META)
    known = inspect_new(path, tmp_path).fingerprint
    candidate = Candidate(str(path), str(tmp_path))
    assert inspect(candidate, known).unchanged
    os.utime(path, ns=(known.mtime_ns + 10**9, known.mtime_ns + 10**9))  # touched only
    touched = inspect(candidate, known)
    assert touched.unchanged and touched.fingerprint.mtime_ns != known.mtime_ns
    write_tagged_audio(path, META.model_copy(update={"title": "Freddie Freeloader"}))
    retagged = inspect(candidate, known)
    assert not retagged.unchanged
    assert retagged.facts is not None and retagged.facts.metadata.title == "Freddie Freeloader"


def test_track_ids_derive_from_the_library_relative_path() -> None:
    relative = "Miles Davis/Kind of Blue/01 So What.flac"
    expected = hashlib.sha1(relative.encode()).hexdigest()[:24]
    assert derive_track_id(relative) == expected
    assert derive_track_id(unicodedata.normalize("NFD", "Café/é.flac")) == derive_track_id(
        unicodedata.normalize("NFC", "Café/é.flac")
    )
    assert derive_track_id("a/b.flac") != derive_track_id("a/c.flac")
    assert virtual_track_id(expected, 3) == f"{expected}#03"
    assert base_track_id(f"{expected}#03") == expected


CUE = """REM GENRE "Jazz"
REM DATE 1959
PERFORMER "Miles Davis"
TITLE "Kind of Blue"
FILE "Kind of Blue.wav" WAVE
  TRACK 01 AUDIO
    TITLE "So What"
    INDEX 01 00:00:00
  TRACK 02 AUDIO
    TITLE "Freddie Freeloader"
    INDEX 00 00:01:10
    INDEX 01 00:01:37
  TRACK 03 AUDIO
    TITLE "Blue in Green"
    PERFORMER "Miles Davis & Bill Evans"
    INDEX 01 00:02:60
"""


def test_cue_sheet_gives_offsets_titles_and_performers() -> None:
    sheet = parse_cue(CUE)
    assert (sheet.title, sheet.performer, sheet.genre, sheet.year) == (
        "Kind of Blue",
        "Miles Davis",
        "Jazz",
        1959,
    )
    tracks = tracks_for(sheet, "Kind of Blue.flac")  # ripped as .wav, kept as .flac
    assert [t.title for t in tracks] == ["So What", "Freddie Freeloader", "Blue in Green"]
    assert tracks[1].start_s == pytest.approx(1 + 37 / 75)  # INDEX 01, not the INDEX 00 pregap
    assert tracks[2].start_s == pytest.approx(2 + 60 / 75)
    assert tracks[2].performer == "Miles Davis & Bill Evans"
    cut = segments(tracks, 4.0)
    assert [(c.start_s, c.end_s) for c in cut] == [
        (0.0, tracks[1].start_s),
        (tracks[1].start_s, tracks[2].start_s),
        (tracks[2].start_s, 4.0),
    ]
    assert segments(tracks, None)[-1].end_s is None


def test_cue_sheets_in_a_windows_code_page_are_read() -> None:
    raw = 'TITLE "Caf\xe9"\nFILE "a.flac" WAVE\n TRACK 01 AUDIO\n  INDEX 01 00:00:00\n'
    assert parse_cue(decode_cue(raw.encode("cp1252"))).title == "Café"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('FILE "a.flac" WAVE\n TRACK 01 AUDIO\n  TITLE "x"\n', "no INDEX 01"),
        ('FILE "a.flac" WAVE\n TRACK 01 AUDIO\n  INDEX 01 00:99:00\n', "bad INDEX time"),
        ("REM just a comment\n", "no TRACK"),
    ],
)
def test_broken_cue_sheets_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(CueError, match=reason):
        parse_cue(text)


def test_a_flac_with_a_cue_sheet_becomes_virtual_tracks(tmp_path: Path) -> None:
    audio = write_tagged_audio(tmp_path / "Kind of Blue.flac", META, seconds=4.0)
    cue = tmp_path / "Kind of Blue.cue"
    cue.write_text(CUE)
    [candidate] = [c for c in walk(str(tmp_path), AUDIO) if isinstance(c, Candidate)]
    assert candidate.cue_path == str(cue)
    events = events_for(inspect(candidate, None), "abc")
    assert [e.track_id for e in events] == ["abc#01", "abc#02", "abc#03"]
    assert [e.metadata.title for e in events] == ["So What", "Freddie Freeloader", "Blue in Green"]
    assert events[1].segment is not None and events[1].segment.start_s == pytest.approx(
        1.4933, 1e-3
    )
    assert events[2].segment is not None and events[2].segment.end_s == pytest.approx(4.0, abs=0.05)
    assert {e.metadata.album for e in events} == {"Kind of Blue"}
    assert events[2].metadata.artist == "Miles Davis & Bill Evans"
    assert events[0].metadata.duration_s == pytest.approx(events[1].segment.start_s)
    assert all(e.path == str(audio) for e in events)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.mp3", lambda p: _write(p, b""), "empty file"),
        ("notes.mp3", lambda p: _write(p, b"shopping list: milk\n" * 50), "not decodable audio"),
        ("noise.ogg", lambda p: _write(p, os.urandom(5000)), "not decodable audio"),
        (
            "cut.flac",
            lambda p: _write(p, write_tagged_audio(p, META).read_bytes()[:30]),
            "not decodable audio",
        ),
        (
            "half.wav",
            lambda p: _write(p, (b := write_tagged_audio(p, META).read_bytes())[: len(b) // 2]),
            "truncated",
        ),
    ],
)
def test_files_that_are_not_usable_audio_are_refused(
    tmp_path: Path, name: str, make, reason: str
) -> None:
    path = make(tmp_path / name)
    with pytest.raises(IngestError, match=reason):
        inspect_new(path, tmp_path)


def test_broken_tags_keep_the_audio_and_note_the_problem(tmp_path: Path) -> None:
    path = write_tagged_audio(tmp_path / "broken.mp3", META)
    data = bytearray(path.read_bytes())
    assert data[:3] == b"ID3"
    data[3] = 9  # an ID3 version no tagger writes
    path.write_bytes(data)
    result = inspect_new(path, tmp_path)
    assert result.facts is not None and result.facts.metadata.title is None
    assert result.facts.metadata.duration_s == pytest.approx(1.0, abs=0.1)
    assert len(result.problems) == 1 and "tags unreadable" in result.problems[0]


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    raw_name = os.fsencode(tmp_path) + b"/caf\xe9.flac"
    with open(raw_name, "wb") as fh:
        fh.write(write_tagged_audio(tmp_path / "x.flac", META).read_bytes())
    (tmp_path / "x.flac").unlink()
    [candidate] = [c for c in walk(str(tmp_path), AUDIO) if isinstance(c, Candidate)]
    with pytest.raises(IngestError, match="not valid UTF-8"):
        inspect(candidate, None)


def test_a_symlink_out_of_the_library_is_refused(tmp_path: Path) -> None:
    outside = write_tagged_audio(tmp_path / "elsewhere" / "secret.flac", META)
    root = tmp_path / "music"
    root.mkdir()
    (root / "link.flac").symlink_to(outside)
    with pytest.raises(IngestError, match="outside the library root"):
        inspect_new(root / "link.flac", root)


def test_listing_survives_symlink_loops_escapes_and_broken_links(tmp_path: Path) -> None:
    root = tmp_path / "music"
    write_tagged_audio(root / "Artist" / "song.flac", META)
    (root / "Artist" / "loop").symlink_to(root)
    write_tagged_audio(tmp_path / "elsewhere" / "other.flac", META)
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    (root / "gone.mp3").symlink_to(tmp_path / "does-not-exist.mp3")
    found = list(walk(str(root), AUDIO))
    candidates = [f.path for f in found if isinstance(f, Candidate)]
    problems = {os.path.basename(p.path): p for p in found if isinstance(p, Problem)}
    assert candidates == [str(root / "Artist" / "song.flac")]
    assert "symlink loop" in problems["loop"].message and not problems["loop"].is_track
    assert "outside the library root" in problems["escape"].message
    assert "broken symlink" in problems["gone.mp3"].message and problems["gone.mp3"].is_track


def test_an_unreadable_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tagged_audio(tmp_path / "locked.flac", META)
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the denial happen where it would
        real_open = builtins.open

        def denying_open(file, *args, **kwargs):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(music_folder, "open", denying_open, raising=False)
    with pytest.raises(IngestError, match="permission denied"):
        inspect_new(path, tmp_path)
