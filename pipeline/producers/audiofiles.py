"""One audio file: its tags, its fingerprint, its track id, and the reasons it may be refused.

All of this is blocking file IO, run in a thread pool by the producers; nothing
here talks to Kafka. A file that cannot become a track raises `IngestError`
with a message meant for people (it ends up in a log line and a dead letter).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import unicodedata
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import mutagen
import soundfile
from mutagen.id3 import Frame

from pipeline.errors import InvalidInput
from pipeline.schemas import Fingerprint, TrackMetadata

HASH_BLOCK_BYTES = 64 * 1024
TRACK_ID_HEX_CHARS = 24
CUE_SEPARATOR = "#"


class IngestError(InvalidInput):
    """A file that cannot become a track; the message says why."""


class FileVanished(Exception):
    """The file went away between listing and reading: nothing to publish, nothing to report."""


@dataclass(frozen=True)
class AudioFacts:
    """What a readable audio file says about itself."""

    metadata: TrackMetadata
    problems: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- names, paths, ids


def suffix_of(path: str) -> str:
    """Lower-case extension without the dot ('' when there is none)."""
    return os.path.splitext(path)[1][1:].lower()


def has_audio_extension(path: str, extensions: frozenset[str]) -> bool:
    return suffix_of(path) in extensions


def display(path: str) -> str:
    """A printable, UTF-8-safe form of any path (undecodable bytes shown as \\xNN)."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_name_is_utf8(path: str) -> None:
    """Track paths travel as JSON text: a name that is not UTF-8 cannot be published faithfully."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise IngestError(
            f"file name is not valid UTF-8 ({display(os.path.basename(path))}); "
            "rename it (e.g. with `convmv`) so it can be published"
        ) from None


def is_inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_inside_root(path: str, root: str) -> None:
    """Refuse files that resolve (through symlinks or '..') to somewhere outside the library."""
    real = os.path.realpath(path)
    real_root = os.path.realpath(root)
    if not is_inside(real, real_root):
        raise IngestError(f"resolves to {display(real)}, outside the library root {display(root)}")


def relative_path(path: str, root: str) -> str:
    """Library-relative path with '/' separators: the stable part of a file's location."""
    return os.path.relpath(path, root).replace(os.sep, "/")


def derive_track_id(relative: str) -> str:
    """Id of a track when no Navidrome id exists: sha1 of the library-relative path.

    Unicode is NFC-normalised first, so the same library copied between macOS
    (NFD names) and Linux keeps its ids.
    """
    normalised = unicodedata.normalize("NFC", relative)
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()[:TRACK_ID_HEX_CHARS]


def virtual_track_id(base_id: str, number: int) -> str:
    """Id of one CUE track of a file: the file's id plus '#NN'."""
    return f"{base_id}{CUE_SEPARATOR}{number:02d}"


def base_track_id(track_id: str) -> str:
    return track_id.split(CUE_SEPARATOR, 1)[0]


# ---------------------------------------------------------------- fingerprint


def fingerprint(fh: BinaryIO, size: int, mtime_ns: int, extra: bytes = b"") -> Fingerprint:
    """Size, mtime and a BLAKE2b hash of the head, middle and tail blocks (whole file if small).

    Three 64 KiB reads recognise the same file after a move or a re-copy without
    reading it all; tag edits change the head, so they change the hash. `extra`
    folds in a CUE sheet, whose edits change the tracks cut from the file.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(size.to_bytes(8, "little"))
    if size <= 3 * HASH_BLOCK_BYTES:
        fh.seek(0)
        digest.update(fh.read())
    else:
        for offset in (0, size // 2 - HASH_BLOCK_BYTES // 2, size - HASH_BLOCK_BYTES):
            fh.seek(offset)
            digest.update(fh.read(HASH_BLOCK_BYTES))
    digest.update(extra)
    return Fingerprint(size=size, mtime_ns=mtime_ns, fast_hash=digest.hexdigest())


# ---------------------------------------------------------------- tags

_VORBIS = {
    "title": ("title",),
    "artist": ("artist",),
    "album_artist": ("albumartist", "album artist", "album_artist"),
    "album": ("album",),
    "genre": ("genre",),
    "date": ("date", "originaldate", "year"),
    "track": ("tracknumber",),
    "disc": ("discnumber",),
    "mbz_recording_id": ("musicbrainz_trackid",),
    "mbz_album_id": ("musicbrainz_albumid",),
    "mbz_artist_id": ("musicbrainz_artistid",),
}
_ID3 = {
    "title": ("TIT2",),
    "artist": ("TPE1",),
    "album_artist": ("TPE2",),
    "album": ("TALB",),
    "genre": ("TCON",),
    "date": ("TDRC", "TYER", "TDOR"),
    "track": ("TRCK",),
    "disc": ("TPOS",),
    "mbz_recording_id": ("UFID:http://musicbrainz.org",),
    "mbz_album_id": ("TXXX:MusicBrainz Album Id",),
    "mbz_artist_id": ("TXXX:MusicBrainz Artist Id",),
}
_ITUNES = "----:com.apple.iTunes:"
_MP4 = {
    "title": ("\xa9nam",),
    "artist": ("\xa9ART",),
    "album_artist": ("aART",),
    "album": ("\xa9alb",),
    "genre": ("\xa9gen",),
    "date": ("\xa9day",),
    "track": ("trkn",),
    "disc": ("disk",),
    "mbz_recording_id": (_ITUNES + "MusicBrainz Track Id",),
    "mbz_album_id": (_ITUNES + "MusicBrainz Album Id",),
    "mbz_artist_id": (_ITUNES + "MusicBrainz Artist Id",),
}
_ASF = {
    "title": ("Title",),
    "artist": ("Author",),
    "album_artist": ("WM/AlbumArtist",),
    "album": ("WM/AlbumTitle",),
    "genre": ("WM/Genre",),
    "date": ("WM/Year",),
    "track": ("WM/TrackNumber",),
    "disc": ("WM/PartOfSet",),
    "mbz_recording_id": ("MusicBrainz/Track Id",),
    "mbz_album_id": ("MusicBrainz/Album Id",),
    "mbz_artist_id": ("MusicBrainz/Artist Id",),
}


def _key_table(tags: Any) -> dict[str, tuple[str, ...]]:
    """Which tag names mean what, by tag family (ID3, Vorbis comments, MP4 atoms, ASF)."""
    kind = type(tags).__name__
    if kind == "ID3" or hasattr(tags, "getall"):
        return _ID3
    if kind == "MP4Tags":
        return _MP4
    if kind == "ASFTags":
        return _ASF
    return _VORBIS


def _plain(value: Any) -> str | None:
    """One tag value as text, whatever container it came in."""
    while isinstance(value, list):
        if not value:
            return None
        value = value[0]
    if isinstance(value, Frame):
        if getattr(value, "genres", None):
            value = value.genres[0]
        elif hasattr(value, "text"):
            return _plain(list(value.text))
        elif hasattr(value, "data"):
            value = value.data
    if isinstance(value, tuple):  # MP4 track/disc pairs: (number, total)
        value = value[0] if value else None
    if hasattr(value, "value") and not isinstance(value, str | bytes):  # ASF attributes
        value = value.value
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def _lookup(tags: Any, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        try:
            value = tags[key]
        except (KeyError, ValueError, IndexError, TypeError):
            continue
        text = _plain(value)
        if text:
            return text
    return None


def _number(text: str | None) -> int | None:
    """'3', '03', '3/12' -> 3; 0 and junk -> None."""
    match = re.match(r"\s*(\d+)", text or "")
    number = int(match.group(1)) if match else 0
    return number if 0 < number < 100_000 else None


def _year(text: str | None) -> int | None:
    match = re.search(r"\b(\d{4})", text or "")
    return int(match.group(1)) if match else None


def metadata_from_tags(tags: Any, duration_s: float | None) -> TrackMetadata:
    """Tags of any family mapped onto TrackMetadata; absent tags stay None."""
    if tags is None:
        return TrackMetadata(duration_s=duration_s)
    table = _key_table(tags)
    found = {name: _lookup(tags, keys) for name, keys in table.items()}
    return TrackMetadata(
        title=found["title"],
        artist=found["artist"],
        album_artist=found["album_artist"],
        album=found["album"],
        track_number=_number(found["track"]),
        disc_number=_number(found["disc"]),
        year=_year(found["date"]),
        genre=found["genre"],
        duration_s=duration_s,
        mbz_recording_id=found["mbz_recording_id"],
        mbz_album_id=found["mbz_album_id"],
        mbz_artist_id=found["mbz_artist_id"],
    )


# ---------------------------------------------------------------- reading a file

_RIFF_HEADERS = {"WAVE": (b"RIFF", "<I"), "AIFF": (b"FORM", ">I")}


def _check_not_truncated(fh: BinaryIO, kind: str, size: int) -> None:
    """RIFF/AIFF headers state their length: a shorter file is a copy cut short."""
    header = _RIFF_HEADERS.get(kind)
    if header is None:
        return
    magic, fmt = header
    fh.seek(0)
    head = fh.read(8)
    if len(head) < 8 or head[:4] != magic:
        return
    declared = struct.unpack(fmt, head[4:8])[0]
    if declared in (0, 0xFFFFFFFF):  # streaming writers leave the size unset
        return
    if declared + 8 > size:
        raise IngestError(
            f"truncated: its {kind} header declares {declared + 8} bytes, the file has {size}"
        )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_audio(fh: BinaryIO, size: int) -> AudioFacts:
    """Tags and duration of an open audio file, or IngestError if it is not usable audio.

    Tags come from mutagen. When mutagen cannot parse the file (broken tags), the
    audio stream is probed with libsndfile: if that works the track is still
    usable, so it is returned without tag metadata and with a problem noted.
    """
    if size == 0:
        raise IngestError("empty file (0 bytes)")
    tag_error: BaseException | None = None
    audio: Any = None
    fh.seek(0)
    try:
        audio = mutagen.File(fh)
    except Exception as exc:  # mutagen raises its own errors and struct/IO errors alike
        tag_error = exc
    if audio is not None and audio.info is not None:
        kind = type(audio).__name__
        _check_not_truncated(fh, kind, size)
        duration = float(getattr(audio.info, "length", 0.0) or 0.0)
        if duration <= 0:
            raise IngestError(f"no audio in this {kind} file (duration 0: truncated or empty)")
        try:
            return AudioFacts(metadata_from_tags(audio.tags, duration))
        except Exception as exc:
            problem = f"tags unreadable ({_reason(exc)}); published without tag metadata"
            return AudioFacts(TrackMetadata(duration_s=duration), (problem,))
    return _probe_without_tags(fh, tag_error)


def _probe_without_tags(fh: BinaryIO, tag_error: BaseException | None) -> AudioFacts:
    fh.seek(0)
    try:  # by name: libsndfile does not recognise MP3 through a Python file object
        info = soundfile.info(getattr(fh, "name", fh))
    except Exception as exc:
        first = _reason(tag_error) if tag_error else "format not recognised"
        raise IngestError(f"not decodable audio ({first}; libsndfile: {_reason(exc)})") from exc
    if not info.duration or info.duration <= 0:
        raise IngestError("no audio frames (truncated or empty stream)")
    problems: tuple[str, ...] = ()
    if tag_error is not None:
        problems = (f"tags unreadable ({_reason(tag_error)}); published without tag metadata",)
    return AudioFacts(TrackMetadata(duration_s=float(info.duration)), problems)
