"""Small real audio files with real tags, for tests, benchmarks and demos.

Audio is written by libsndfile (soundfile: WAV, AIFF, FLAC, Ogg Vorbis/Opus,
MP3) and tagged by mutagen the way taggers do it (ID3 for MP3/WAV/AIFF, Vorbis
comments for FLAC/Ogg), so the ingest code reads them exactly like a library.
"""

from __future__ import annotations

from pathlib import Path

import mutagen
import numpy as np
import soundfile
from mutagen.id3 import ID3, TALB, TCON, TDRC, TIT2, TPE1, TPE2, TPOS, TRCK, TXXX, UFID

from pipeline.schemas import TrackMetadata

# extension -> (soundfile format, subtype, sample rate, tag family)
FORMATS: dict[str, tuple[str, str, int, str]] = {
    "wav": ("WAV", "PCM_16", 22050, "id3"),
    "aiff": ("AIFF", "PCM_16", 22050, "id3"),
    "flac": ("FLAC", "PCM_16", 22050, "vorbis"),
    "ogg": ("OGG", "VORBIS", 22050, "vorbis"),
    "opus": ("OGG", "OPUS", 48000, "vorbis"),
    "mp3": ("MP3", "MPEG_LAYER_III", 22050, "id3"),
}


def tone(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A seeded chord with a little noise: every seed gives different audio content."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    freqs = 110.0 * 2 ** (rng.integers(0, 36, size=3) / 12)
    signal = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 4
    return (signal + rng.normal(0, 0.01, t.shape)).astype(np.float32)


def write_tagged_audio(
    path: Path, metadata: TrackMetadata | None = None, *, seconds: float = 1.0, seed: int = 0
) -> Path:
    """Write an audio file whose format follows the extension, then tag it."""
    extension = path.suffix.lower().lstrip(".")
    if extension not in FORMATS:
        raise ValueError(f"cannot write .{extension}; choose from {', '.join(FORMATS)}")
    fmt, subtype, rate, _family = FORMATS[extension]
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, tone(seconds, rate, seed), rate, format=fmt, subtype=subtype)
    if metadata is not None:
        tag_file(path, metadata)
    return path


def tag_file(path: Path, metadata: TrackMetadata) -> None:
    """(Re)write the tags of a file written by `write_tagged_audio` (or a copy of one)."""
    extension = path.suffix.lower().lstrip(".")
    if FORMATS[extension][3] == "id3":
        _tag_id3(path, extension, metadata)
    else:
        _tag_vorbis(path, metadata)


def _id3_frames(meta: TrackMetadata) -> list:
    frames: list = []
    text = {
        TIT2: meta.title,
        TPE1: meta.artist,
        TPE2: meta.album_artist,
        TALB: meta.album,
        TCON: meta.genre,
        TRCK: str(meta.track_number) if meta.track_number else None,
        TPOS: str(meta.disc_number) if meta.disc_number else None,
        TDRC: str(meta.year) if meta.year else None,
    }
    for frame, value in text.items():
        if value:
            frames.append(frame(encoding=3, text=[value]))
    if meta.mbz_recording_id:
        frames.append(UFID(owner="http://musicbrainz.org", data=meta.mbz_recording_id.encode()))
    for desc, value in (
        ("MusicBrainz Album Id", meta.mbz_album_id),
        ("MusicBrainz Artist Id", meta.mbz_artist_id),
    ):
        if value:
            frames.append(TXXX(encoding=3, desc=desc, text=[value]))
    return frames


def _tag_id3(path: Path, extension: str, meta: TrackMetadata) -> None:
    if extension == "mp3":
        tags = ID3()
        for frame in _id3_frames(meta):
            tags.add(frame)
        tags.save(path)
        return
    audio = mutagen.File(path)  # WAVE / AIFF carry an ID3 chunk
    if audio.tags is None:
        audio.add_tags()
    for frame in _id3_frames(meta):
        audio.tags.add(frame)
    audio.save()


def _tag_vorbis(path: Path, meta: TrackMetadata) -> None:
    audio = mutagen.File(path)
    values = {
        "title": meta.title,
        "artist": meta.artist,
        "albumartist": meta.album_artist,
        "album": meta.album,
        "genre": meta.genre,
        "tracknumber": str(meta.track_number) if meta.track_number else None,
        "discnumber": str(meta.disc_number) if meta.disc_number else None,
        "date": str(meta.year) if meta.year else None,
        "musicbrainz_trackid": meta.mbz_recording_id,
        "musicbrainz_albumid": meta.mbz_album_id,
        "musicbrainz_artistid": meta.mbz_artist_id,
    }
    for key, value in values.items():
        if value:
            audio[key] = [value]
    audio.save()
