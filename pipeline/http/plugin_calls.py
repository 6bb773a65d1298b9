"""The Navidrome plugin's calls, in Navidrome's own shapes (`POST /navidrome/v1/plugin/<f>`).

Navidrome calls the plugin function `nd_<f>` with a JSON request and expects a
JSON response of a fixed shape (plugins/capabilities/{sonic_similarity,
metadata_agent}.go in Navidrome 0.63.2). The plugin passes the request here
unchanged and returns our answer unchanged, so this module is where the two
shapes meet: the request becomes a `SimilarBody` or `PathBody` (with the
plugin's settings, sent as headers), and the `Matches` go back as
`{"matches": [...]}` (SonicSimilarity) or `{"songs": [...]}` (MetadataAgent).
A setting the user got wrong in Navidrome is a 422 naming the setting: the
plugin writes that into Navidrome's log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.http.navidrome_queries import Matches, PathBody, SimilarBody
from pipeline.schemas.songs import AlbumRef, ArtistRef, SongRef

Function = Literal[
    "get_sonic_similar_tracks",
    "find_sonic_path",
    "get_similar_songs_by_track",
    "get_similar_songs_by_album",
    "get_similar_songs_by_artist",
]
PLUGIN_FUNCTIONS: tuple[str, ...] = Function.__args__  # type: ignore[attr-defined]
SONIC = ("get_sonic_similar_tracks", "find_sonic_path")

# The plugin's deadline: sonicbus gives up a little earlier, so a query service that does
# not answer comes back as our 504 rather than as the plugin's timeout.
DEADLINE_MARGIN_MS = 250


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)

    count: int = 0


class SonicSimilarTracks(_Request):
    song: SongRef


class SonicPath(_Request):
    start_song: SongRef = Field(alias="startSong")
    end_song: SongRef = Field(alias="endSong")


class SimilarByTrack(_Request):
    id: str = Field("", max_length=256)
    name: str = Field("", max_length=1000)
    artist: str = Field("", max_length=1000)
    mbid: str | None = Field(None, max_length=64)


class SimilarByAlbum(SimilarByTrack):
    pass


class SimilarByArtist(_Request):
    id: str = Field("", max_length=256)
    name: str = Field("", max_length=1000)
    mbid: str | None = Field(None, max_length=64)


REQUESTS: dict[str, type[_Request]] = {
    "get_sonic_similar_tracks": SonicSimilarTracks,
    "find_sonic_path": SonicPath,
    "get_similar_songs_by_track": SimilarByTrack,
    "get_similar_songs_by_album": SimilarByAlbum,
    "get_similar_songs_by_artist": SimilarByArtist,
}


class PluginSettings(BaseModel):
    """The plugin's settings in Navidrome, as its headers carry them."""

    models: list[str] | None = None
    diversity: float | None = None
    max_per_artist: int | None = None
    timeout_ms: int | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> PluginSettings:
        def given(name: str) -> str | None:
            value = headers.get(f"x-sonicbus-{name}", "").strip()
            return value or None

        settings = cls()
        if (raw := given("models")) is not None:
            settings.models = _models(raw)
        if (raw := given("diversity")) is not None:
            settings.diversity = _number(raw, "diversity", "a number in [0, 1]", 0.0, 1.0)
        if (raw := given("max-per-artist")) is not None:
            n = _number(raw, "max_per_artist", "a whole number >= 0", 0, None)
            if n != int(n):
                raise ValueError(f"plugin setting max_per_artist {raw!r} is not a whole number")
            settings.max_per_artist = int(n) or None  # 0: sonicbus' default
        if (raw := given("timeout-ms")) is not None:
            ms = _number(raw, "timeout_ms", "a positive number", 1, None)
            settings.timeout_ms = int(ms)
        return settings

    def deadline_s(self) -> float | None:
        if self.timeout_ms is None:
            return None
        ms = max(self.timeout_ms - DEADLINE_MARGIN_MS, self.timeout_ms * 0.8)
        return round(ms / 1000, 3)


def _models(raw: str) -> list[str]:
    """Models as `musicnn,muq` or a JSON list (Navidrome passes a non-string value as JSON)."""
    if raw.startswith("["):
        try:
            listed = json.loads(raw)
        except ValueError:
            listed = raw.strip("[]").split(",")
        return [str(m).strip().strip('"') for m in listed if str(m).strip().strip('"')]
    return [m.strip().strip('"') for m in raw.split(",") if m.strip().strip('"')]


def _number(raw: str, name: str, what: str, low: float, high: float | None) -> float:
    try:
        value = float(raw.strip('"'))
    except ValueError:
        value = float("nan")
    if not (value >= low and (high is None or value <= high)):
        raise ValueError(f"plugin setting {name} {raw!r} is not {what}")
    return value


class PluginCall(BaseModel):
    function: Function
    request: _Request
    settings: PluginSettings

    @classmethod
    def read(cls, function: str, body: bytes, headers: Mapping[str, str]) -> PluginCall:
        """Raises ValidationError (a bad body) or ValueError (a bad setting)."""
        request = REQUESTS[function].model_validate_json(body or b"{}")
        settings = PluginSettings.from_headers(headers)
        return cls(function=function, request=request, settings=settings)


def plugin_body(call: PluginCall) -> SimilarBody | PathBody:
    """The call as the body of `/similar` or `/path`, with the plugin's settings."""
    request, options = call.request, call.settings
    common: dict[str, Any] = {"count": request.count, "timeout_s": options.deadline_s()}
    if options.models:
        common["models"] = options.models
    if isinstance(request, SonicPath):
        return PathBody(start=request.start_song, end=request.end_song, **common)
    seed: dict[str, Any]
    if isinstance(request, SonicSimilarTracks):
        seed = {"song": request.song}
    elif isinstance(request, SimilarByAlbum):
        seed = {"album": AlbumRef(id=request.id or None, name=request.name,
                                  artist=request.artist or None, mbid=request.mbid)}  # fmt: skip
    elif isinstance(request, SimilarByTrack):
        seed = {"song": SongRef(id=request.id or None, name=request.name,
                                artist=request.artist or None, mbid=request.mbid)}  # fmt: skip
    else:
        assert isinstance(request, SimilarByArtist)
        seed = {"artist": ArtistRef(id=request.id or None, name=request.name, mbid=request.mbid)}
    return SimilarBody(**seed, **common, diversity=options.diversity,
                       max_per_artist=options.max_per_artist)  # fmt: skip


def plugin_answer(function: str, found: Matches) -> dict[str, Any]:
    """Navidrome's response of `nd_<function>`: matches with similarity, or songs; and our
    `warnings`, which Navidrome ignores and the plugin logs in one line."""
    dump = {"exclude_none": True, "by_alias": True}
    answer: dict[str, Any]
    if function in SONIC:
        answer = {"matches": [m.model_dump(**dump) for m in found.matches]}
    else:
        answer = {"songs": [m.song.model_dump(**dump) for m in found.matches]}
    if found.warnings:
        answer["warnings"] = found.warnings
    return answer
