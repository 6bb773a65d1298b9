"""CUE sheets: one audio file holding a whole album becomes one virtual track per CUE track.

A track starts at its `INDEX 01` (mm:ss:ff, 75 frames a second) and ends where
the next track starts; the last one ends with the file. Only the commands that
matter for tracks are read; the rest (FLAGS, PREGAP, CATALOG, ...) is ignored.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from pipeline.errors import InvalidInput

FRAMES_PER_SECOND = 75


class CueError(InvalidInput):
    """A CUE sheet that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class CueTrack:
    number: int
    start_s: float
    title: str | None = None
    performer: str | None = None


@dataclass(frozen=True)
class CueFile:
    name: str
    tracks: tuple[CueTrack, ...]


@dataclass(frozen=True)
class CueSheet:
    title: str | None = None
    performer: str | None = None
    genre: str | None = None
    year: int | None = None
    disc_number: int | None = None
    files: tuple[CueFile, ...] = field(default=())


@dataclass(frozen=True)
class CueSegment:
    """One virtual track: the CUE entry and its [start, end) in seconds."""

    track: CueTrack
    start_s: float
    end_s: float | None


def decode_cue(raw: bytes) -> str:
    """CUE files are often written by Windows rippers in a legacy code page."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def index_seconds(value: str) -> float:
    """'mm:ss:ff' -> seconds; minutes may exceed 59 (long albums)."""
    match = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2})", value.strip())
    if match is None:
        raise CueError(f"bad INDEX time {value!r} (expected mm:ss:ff)")
    minutes, seconds, frames = (int(g) for g in match.groups())
    if seconds >= 60 or frames >= FRAMES_PER_SECOND:
        raise CueError(f"bad INDEX time {value!r}")
    return minutes * 60 + seconds + frames / FRAMES_PER_SECOND


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError:  # an unbalanced quote: keep what is there
        return line.replace('"', " ").split()


def _rem_int(value: str) -> int | None:
    match = re.search(r"\d+", value)
    return int(match.group()) if match else None


@dataclass
class _Draft:
    """Fields collected while reading; a sheet and each of its tracks get one."""

    number: int = 0
    start_s: float | None = None
    title: str | None = None
    performer: str | None = None
    genre: str | None = None
    year: int | None = None
    disc_number: int | None = None


def parse_cue(text: str) -> CueSheet:
    """Parse the text of a CUE sheet; raises CueError when it has no usable track."""
    sheet = _Draft()
    files: list[tuple[str, list[_Draft]]] = []
    track: _Draft | None = None
    for line_number, raw_line in enumerate(text.splitlines(), start=1):
        words = _words(raw_line.strip())
        if not words:
            continue
        command, args = words[0].upper(), words[1:]
        target = track if track is not None else sheet
        if command == "FILE" and args:
            files.append((args[0], []))
            track = None
        elif command == "TRACK" and args:
            if not files:
                raise CueError(f"line {line_number}: TRACK before any FILE")
            if not args[0].isdigit():
                raise CueError(f"line {line_number}: bad track number {args[0]!r}")
            track = _Draft(number=int(args[0]))
            files[-1][1].append(track)
        elif command == "TITLE" and args:
            target.title = " ".join(args)
        elif command == "PERFORMER" and args:
            target.performer = " ".join(args)
        elif command == "INDEX" and len(args) >= 2 and track is not None and args[0] == "01":
            try:
                track.start_s = index_seconds(args[1])
            except CueError as exc:
                raise CueError(f"line {line_number}: {exc}") from None
        elif command == "REM" and len(args) >= 2 and track is None:
            key, value = args[0].upper(), " ".join(args[1:])
            if key == "GENRE":
                sheet.genre = value
            elif key == "DATE":
                sheet.year = _rem_int(value)
            elif key == "DISCNUMBER":
                sheet.disc_number = _rem_int(value)
    cue_files = tuple(CueFile(name, _finish(name, drafts)) for name, drafts in files)
    if not any(f.tracks for f in cue_files):
        raise CueError("no TRACK with an INDEX 01")
    return CueSheet(
        title=sheet.title,
        performer=sheet.performer,
        genre=sheet.genre,
        year=sheet.year,
        disc_number=sheet.disc_number,
        files=cue_files,
    )


def _finish(file_name: str, drafts: list[_Draft]) -> tuple[CueTrack, ...]:
    tracks = []
    for draft in drafts:
        if draft.start_s is None:
            raise CueError(f"track {draft.number} of {file_name!r} has no INDEX 01")
        tracks.append(CueTrack(draft.number, draft.start_s, draft.title, draft.performer))
    return tuple(tracks)


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name.replace("\\", "/")))[0].lower()


def tracks_for(
    sheet: CueSheet, audio_name: str, cue_name: str | None = None
) -> tuple[CueTrack, ...]:
    """The CUE tracks cut from one audio file.

    Matched by file name, then by stem (a sheet often names the .wav that was
    ripped while the library holds the .flac), then, for a one-file sheet named
    like the audio file, that file whatever name it gives.
    """
    base = os.path.basename(audio_name).lower()
    for cue_file in sheet.files:
        if os.path.basename(cue_file.name.replace("\\", "/")).lower() == base:
            return cue_file.tracks
    for cue_file in sheet.files:
        if _stem(cue_file.name) == _stem(audio_name):
            return cue_file.tracks
    if cue_name is not None and len(sheet.files) == 1 and _stem(cue_name) == _stem(audio_name):
        return sheet.files[0].tracks
    return ()


def splits(sheet: CueSheet, audio_name: str, cue_name: str | None = None) -> bool:
    """True when the sheet cuts this file into two tracks or more (a single-file album)."""
    return len(tracks_for(sheet, audio_name, cue_name)) >= 2


def segments(tracks: tuple[CueTrack, ...], file_duration_s: float | None) -> list[CueSegment]:
    """[start, end) of each track: the next track's start, and the file's end for the last."""
    ordered = sorted(tracks, key=lambda t: t.start_s)
    result = []
    for i, track in enumerate(ordered):
        end = ordered[i + 1].start_s if i + 1 < len(ordered) else file_duration_s
        if end is not None and end <= track.start_s:
            raise CueError(f"track {track.number} starts at or after its end ({track.start_s} s)")
        result.append(CueSegment(track=track, start_s=track.start_s, end_s=end))
    return result
