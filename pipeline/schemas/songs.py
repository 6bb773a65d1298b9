"""Songs, albums and artists as Navidrome names them: seeds that are not sonicbus track ids.

`SongRef` is field for field Navidrome 0.63.2's `plugins/types.SongRef` (the
same JSON names, camelCase), so what a Navidrome plugin receives can be
forwarded as it is. The query service resolves a reference to a track of its
library: by id (a sonicbus track id is Navidrome's id when the library was
ingested from Navidrome), else by MusicBrainz id, else by normalised artist +
title (album and duration break ties). See docs/wire-contract.md.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

REF = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True,
                 serialize_by_alias=True)  # fmt: skip
TEXT = 1000


class ArtistRef(BaseModel):
    """An artist (Navidrome's `ArtistRef`; sortName, role and subRole are ignored)."""

    model_config = REF

    id: str | None = Field(None, max_length=256, description="Navidrome's artist id.")
    name: str = Field("", max_length=TEXT)
    mbid: str | None = Field(None, max_length=64, description="MusicBrainz artist id.")


class AlbumRef(BaseModel):
    """An album: its tracks are the seeds (Navidrome's album id, name, album artist, MBID)."""

    model_config = REF

    id: str | None = Field(None, max_length=256, description="Navidrome's album id.")
    name: str = Field("", max_length=TEXT)
    artist: str | None = Field(None, max_length=TEXT, description="The album artist.")
    mbid: str | None = Field(None, max_length=64, description="MusicBrainz release id.")


class SongRef(BaseModel):
    """A song as Navidrome describes it (plugins/types/types.go, v0.63.2)."""

    model_config = REF

    id: str | None = Field(None, max_length=256, description="Navidrome's media file id.")
    name: str = Field("", max_length=TEXT, description="The title.")
    mbid: str | None = Field(None, max_length=64, description="MusicBrainz recording id.")
    isrc: str | None = Field(None, max_length=64)
    artist: str | None = Field(None, max_length=TEXT)
    artist_mbid: str | None = Field(None, alias="artistMbid", max_length=64)
    artists: list[ArtistRef] = Field(default_factory=list, max_length=64)
    album: str | None = Field(None, max_length=TEXT)
    album_mbid: str | None = Field(None, alias="albumMbid", max_length=64)
    duration: float | None = Field(None, ge=0, description="Seconds (deprecated by Navidrome).")
    duration_ms: int | None = Field(None, alias="durationMs", ge=0)

    def seconds(self) -> float | None:
        """The duration in seconds, durationMs first (as Navidrome's DurationInMs)."""
        if self.duration_ms:
            return self.duration_ms / 1000
        return self.duration or None

    def artist_names(self) -> list[str]:
        """Every artist name given, `artists` first (it takes precedence in Navidrome)."""
        names = [a.name for a in self.artists if a.name.strip()]
        if self.artist and self.artist.strip():
            names.append(self.artist)
        return list(dict.fromkeys(names))

    def describe(self) -> str:
        """For a warning or a log line: title, artist, id and MBID as far as known."""
        parts = [repr(self.name or "?")]
        artists = self.artist_names()
        if artists:
            parts.append(f"by {', '.join(artists)}")
        keys = [f"{k} {v}" for k, v in (("id", self.id), ("mbid", self.mbid)) if v]
        return " ".join(parts) + (f" ({', '.join(keys)})" if keys else "")
