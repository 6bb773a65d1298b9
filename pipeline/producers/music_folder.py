"""A music folder on disk: listing it safely, inspecting a file, and turning it into events.

The listing never follows a symlink out of the library or around a loop; the
inspection reads as little as it can (a file whose size and mtime match the
catalog is not even opened). Both are blocking and run in worker threads.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pipeline.producers.audiofiles import (
    AudioFacts,
    FileVanished,
    IngestError,
    check_inside_root,
    check_name_is_utf8,
    display,
    fingerprint,
    is_inside,
    read_audio,
    relative_path,
    suffix_of,
    virtual_track_id,
)
from pipeline.producers.cue import (
    CueError,
    CueSegment,
    CueSheet,
    decode_cue,
    parse_cue,
    segments,
    tracks_for,
)
from pipeline.schemas import Fingerprint, Segment, TrackEvent, TrackMetadata
from pipeline.schemas.tracks import title_from_file_name

log = logging.getLogger(__name__)

MAX_CUE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    """An audio file found in a library root, with the CUE sheet that splits it, if any."""

    path: str
    root: str
    cue_path: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something in the library that cannot be used. Track problems become dead letters;
    folder problems (loops, unreadable folders) are only logged."""

    path: str
    message: str
    is_track: bool


@dataclass(frozen=True)
class Inspection:
    """What one file looks like now; `unchanged` means the catalog already has it."""

    candidate: Candidate
    fingerprint: Fingerprint
    unchanged: bool
    facts: AudioFacts | None = None
    sheet: CueSheet | None = None
    segments: tuple[CueSegment, ...] = ()
    problems: tuple[str, ...] = ()


# ---------------------------------------------------------------- listing


def walk(
    root: str, extensions: frozenset[str], start: str | None = None
) -> Iterator[Candidate | Problem]:
    """Every audio file under `start` (default: the root), depth first, in name order.

    Folders are identified by (device, inode), so a symlink loop or a second link
    to a folder is listed once; a folder that resolves outside the root is skipped.
    """
    real_root = os.path.realpath(root)
    visited: set[tuple[int, int]] = set()
    stack = [start or root]
    while stack:
        folder = stack.pop()
        try:
            info = os.stat(folder)
            if not is_inside(os.path.realpath(folder), real_root):
                yield Problem(folder, "folder resolves outside the library root; skipped", False)
                continue
            if (info.st_dev, info.st_ino) in visited:
                yield Problem(folder, "folder already listed (symlink loop?); skipped", False)
                continue
            visited.add((info.st_dev, info.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Problem(folder, f"folder unreadable: {exc.strerror or exc}", False)
            continue
        audio, cues, subfolders = [], [], []
        for entry in entries:
            kind = _kind(entry)
            extension = suffix_of(entry.name)
            if kind == "dir":
                subfolders.append(entry.path)
            elif extension == "cue" and kind == "file":
                cues.append(entry.path)
            elif extension in extensions:
                if kind == "file":
                    audio.append(entry.path)
                else:
                    yield Problem(entry.path, kind, True)
        index, cue_problems = cue_index(cues)
        yield from cue_problems
        for path in audio:
            yield Candidate(path, root, index.get(os.path.basename(path).lower()))
        stack.extend(reversed(subfolders))


def _kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "file"
        if entry.is_symlink():
            return "broken symlink (its target does not exist)"
    except OSError as exc:
        return f"unreadable entry: {exc.strerror or exc}"
    return "not a regular file"


def read_cue(path: str) -> CueSheet:
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CUE_BYTES + 1)
    if len(raw) > MAX_CUE_BYTES:
        raise CueError("larger than 1 MiB: not a CUE sheet")
    return parse_cue(decode_cue(raw))


def cue_index(cue_paths: Iterable[str]) -> tuple[dict[str, str], list[Problem]]:
    """Audio file name (lower case) -> the CUE sheet in the same folder that splits it."""
    index: dict[str, str] = {}
    problems = []
    for cue_path in cue_paths:
        try:
            sheet = read_cue(cue_path)
        except (OSError, CueError) as exc:
            problems.append(Problem(cue_path, f"CUE sheet unusable: {exc}", True))
            continue
        folder = os.path.dirname(cue_path)
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        for name in names:
            if len(tracks_for(sheet, name, cue_path)) >= 2 and suffix_of(name) != "cue":
                index.setdefault(name.lower(), cue_path)
    return index, problems


def find_cue(audio_path: str) -> str | None:
    """The CUE sheet next to one audio file that splits it (for single live changes)."""
    folder = os.path.dirname(audio_path)
    try:
        cues = [os.path.join(folder, n) for n in os.listdir(folder) if suffix_of(n) == "cue"]
    except OSError:
        return None
    index, _ = cue_index(sorted(cues))
    return index.get(os.path.basename(audio_path).lower())


# ---------------------------------------------------------------- inspecting


def inspect(candidate: Candidate, known: Fingerprint | None) -> Inspection:
    """Fingerprint a file and, unless the catalog already has that content, read its tags.

    `known` is the fingerprint the catalog holds for this path. Same size and
    mtime: unchanged without opening the file. Same size and fast hash: unchanged
    (a touched file is not republished). Raises IngestError or FileVanished.
    """
    path = candidate.path
    check_name_is_utf8(path)
    check_inside_root(path, candidate.root)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileVanished(path) from None
    except OSError as exc:
        raise IngestError(f"cannot stat the file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise IngestError("not a regular file")
    if info.st_size == 0:
        raise IngestError("empty file (0 bytes)")
    cue_raw = b""
    if candidate.cue_path:
        try:
            with open(candidate.cue_path, "rb") as fh:
                cue_raw = fh.read(MAX_CUE_BYTES)
        except OSError:
            cue_raw = b""
    elif known and (known.size, known.mtime_ns) == (info.st_size, info.st_mtime_ns):
        return Inspection(candidate, known, unchanged=True)
    try:
        with open(path, "rb") as fh:
            print_ = fingerprint(fh, info.st_size, info.st_mtime_ns, cue_raw)
            if known and (known.size, known.fast_hash) == (print_.size, print_.fast_hash):
                return Inspection(candidate, print_, unchanged=True)
            facts = read_audio(fh, info.st_size)
    except FileNotFoundError:
        raise FileVanished(path) from None
    except PermissionError:
        raise IngestError("permission denied: the file cannot be read") from None
    except OSError as exc:
        raise IngestError(f"read error: {exc.strerror or exc}") from None
    sheet, cut, problems = _split(candidate, cue_raw, facts)
    return Inspection(candidate, print_, False, facts, sheet, cut, problems)


def inspect_safely(
    candidate: Candidate, known: Fingerprint | None
) -> Inspection | IngestError | FileVanished:
    """`inspect`, with its expected failures returned rather than raised (thread-pool side)."""
    try:
        return inspect(candidate, known)
    except (IngestError, FileVanished) as exc:
        return exc
    except Exception as exc:  # a bug or an odd file must not stop the scan
        log.exception("unexpected error reading %s", display(candidate.path))
        return IngestError(f"unexpected error: {type(exc).__name__}: {exc}")


def _split(
    candidate: Candidate, cue_raw: bytes, facts: AudioFacts
) -> tuple[CueSheet | None, tuple[CueSegment, ...], tuple[str, ...]]:
    if not cue_raw or candidate.cue_path is None:
        return None, (), facts.problems
    try:
        sheet = parse_cue(decode_cue(cue_raw))
        tracks = tracks_for(sheet, candidate.path, candidate.cue_path)
        cut = tuple(segments(tracks, facts.metadata.duration_s))
    except CueError as exc:
        problem = f"CUE sheet {display(candidate.cue_path)} unusable ({exc}); published whole"
        return None, (), (*facts.problems, problem)
    if len(cut) < 2:
        return None, (), facts.problems
    return sheet, cut, facts.problems


# ---------------------------------------------------------------- events


def events_for(inspection: Inspection, base_id: str) -> list[TrackEvent]:
    """The TrackEvents of an inspected file: one, or one per CUE track ('<id>#NN')."""
    candidate = inspection.candidate
    assert inspection.facts is not None, "events_for needs a fully inspected file"
    tags = inspection.facts.metadata
    # No title tag: the file name, so replies, the CLI, the UI and Navidrome's song
    # matching show "03 Intro" rather than nothing.
    name = title_from_file_name(candidate.path)
    if not tags.title:
        tags = tags.model_copy(update={"title": name})
    common = {
        "path": candidate.path,
        "library_root": candidate.root,
        "relative_path": relative_path(candidate.path, candidate.root),
        "source": "filesystem",
        "suffix": suffix_of(candidate.path) or None,
        "fingerprint": inspection.fingerprint,
    }
    if not inspection.segments or inspection.sheet is None:
        return [TrackEvent(track_id=base_id, metadata=tags, **common)]
    sheet = inspection.sheet
    events = []
    for cut in inspection.segments:
        track = cut.track
        metadata = TrackMetadata(
            title=track.title or f"{name} ({track.number:02d})",
            artist=track.performer or sheet.performer or tags.artist,
            album_artist=sheet.performer or tags.album_artist,
            album=sheet.title or tags.album,
            track_number=track.number,
            disc_number=sheet.disc_number or tags.disc_number,
            year=sheet.year or tags.year,
            genre=sheet.genre or tags.genre,
            duration_s=None if cut.end_s is None else cut.end_s - cut.start_s,
        )
        events.append(
            TrackEvent(
                track_id=virtual_track_id(base_id, track.number),
                metadata=metadata,
                segment=Segment(start_s=cut.start_s, end_s=cut.end_s),
                **common,
            )
        )
    return events
