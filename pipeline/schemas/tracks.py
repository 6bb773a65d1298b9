"""The `tracks` topic: the compacted catalog of every track, keyed by track_id.

A value is a `TrackEvent`; a null value (tombstone) means the track is gone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from pipeline.schemas.base import Record, utc_now


class Fingerprint(BaseModel):
    """Enough to recognise an unchanged file without decoding it."""

    size: int = Field(ge=0, description="File size in bytes.")
    mtime_ns: int = Field(ge=0, description="Modification time, nanoseconds since the epoch.")
    fast_hash: str = Field(description="Hash of the file's head, middle and tail blocks.")

    def token(self) -> str:
        """One string to store next to the vector and compare on the next event."""
        return f"{self.size}:{self.mtime_ns}:{self.fast_hash}"


class TrackMetadata(BaseModel):
    title: str | None = None
    artist: str | None = None
    album_artist: str | None = None
    album: str | None = None
    track_number: int | None = None
    disc_number: int | None = None
    year: int | None = None
    genre: str | None = None
    duration_s: float | None = Field(None, ge=0)
    mbz_recording_id: str | None = None
    mbz_album_id: str | None = None
    mbz_artist_id: str | None = None


def title_from_file_name(path: str) -> str:
    """The title of a track without a title tag: its file name without the extension
    ("03 Intro.flac" -> "03 Intro"), as Navidrome shows such files too."""
    name = path.rsplit("/", 1)[-1]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


class Segment(BaseModel):
    """Part of a file that is a track of its own (a CUE sheet entry)."""

    start_s: float = Field(ge=0)
    end_s: float | None = Field(None, ge=0, description="None: to the end of the file.")


class TrackEvent(Record):
    """A track exists (or changed): every embedding group will (re)consider it."""

    track_id: str = Field(min_length=1, max_length=256)
    path: str = Field(min_length=1, description="Absolute path of the audio file.")
    library_root: str | None = Field(None, description="Music folder the path lies in.")
    relative_path: str | None = Field(None, description="Path relative to the library root.")
    source: Literal["filesystem", "navidrome", "replay", "manual"] = "filesystem"
    suffix: str | None = None
    metadata: TrackMetadata = Field(default_factory=TrackMetadata)
    fingerprint: Fingerprint | None = None
    segment: Segment | None = None
    navidrome_library_id: int | None = None
    navidrome_pid: str | None = Field(
        None,
        description="Navidrome's persistent id (a hash of tags): with metadata.mbz_recording_id "
        "a secondary key, to re-match tracks after Navidrome's database was rebuilt.",
    )
    observed_at: datetime = Field(default_factory=utc_now)
