"""The `requests` and `replies` topics: recommendation queries and their answers.

One request schema with a `type` field (a discriminated union), so a client in
any language sends plain JSON and gets a validation error that names the
field. The reply always arrives: with results, or with `error` set.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ReplyCode
from pipeline.schemas.base import Record, SchemaError, describe_validation_error, utc_now
from pipeline.schemas.songs import AlbumRef, ArtistRef, SongRef

MAX_LIMIT = 500
MAX_PROMPT_CHARS = 2000

QueryType = Literal[
    "recommend", "text", "similar", "path", "alchemy", "fingerprint", "duplicates", "instant"
]


class WeightedSeed(BaseModel):
    track_id: str = Field(min_length=1, max_length=256)
    weight: float = Field(1.0, ge=-10, le=10, description="A negative weight makes a dislike.")
    played_at: datetime | None = Field(
        None, description="Last play (fingerprint: the weight decays with this age)."
    )


class DirectEmbedding(BaseModel):
    """A caller-supplied vector for one model (must match that model's dimension)."""

    model: str
    vector: list[float] = Field(min_length=1, max_length=32768)
    weight: float = Field(1.0, ge=-10, le=10)

    @field_validator("vector")
    @classmethod
    def _finite(cls, value: list[float]) -> list[float]:
        if not all(math.isfinite(x) for x in value):
            raise ValueError("vector contains NaN or infinity")
        return value


def _range(name: str, value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and value[0] > value[1]:
        raise ValueError(f"{name}: [{value[0]:g}, {value[1]:g}] is an empty range (low > high)")
    return value


class TrackFilters(BaseModel):
    """Conditions every returned track meets (all of them). Ranges are [low, high],
    inclusive. A track whose figure is unknown (too short for a tempo, no year tag)
    fails a filter on that figure."""

    model_config = ConfigDict(extra="forbid")

    bpm: tuple[float, float] | None = Field(None, description="Tempo, e.g. [120, 140].")
    key: str | None = Field(
        None, max_length=32, description='"A minor", "Eb", "F#m"; a key without a mode: either.'
    )
    energy: tuple[float, float] | None = Field(None, description="0 calm .. 1 energetic.")
    year: tuple[int, int] | None = None
    genre: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        None, max_length=32, description="Any of these genres (case and spacing ignored)."
    )
    duration: tuple[float, float] | None = Field(None, description="Seconds.")

    @model_validator(mode="after")
    def _ranges(self) -> TrackFilters:
        for name in ("bpm", "energy", "year", "duration"):
            _range(name, getattr(self, name))
        return self

    def describe(self) -> str:
        """The filters as a user wrote them, for warnings."""
        return ", ".join(
            f"{n} {list(v) if isinstance(v, tuple) else v}"
            for n, v in self.model_dump(exclude_none=True).items()
        )


class QueryBase(Record):
    request_id: str = Field(min_length=1, max_length=128)
    limit: int = Field(25, ge=1, description=f"Results wanted; clamped to {MAX_LIMIT}.")
    models: list[str] = Field(default_factory=lambda: ["musicnn"], min_length=1, max_length=8)
    exclude_track_ids: list[str] = Field(default_factory=list, max_length=10_000)
    max_per_artist: int | None = Field(None, ge=1)
    deadline_ms: int | None = Field(
        None, ge=1, description="Epoch milliseconds after which the answer is useless."
    )
    user_id: str | None = Field(None, description="Navidrome user, for personal modes.")
    filters: TrackFilters | None = Field(
        None, description="Tempo, key, energy, year, genre and duration every result meets."
    )


class RecommendRequest(QueryBase):
    type: Literal["recommend"] = "recommend"
    seeds: list[WeightedSeed] = Field(default_factory=list, max_length=1000)
    embeddings: list[DirectEmbedding] = Field(default_factory=list, max_length=16)
    seed_mode: Literal["explicit", "recent", "favorites", "all", "discovery"] = "explicit"
    merge: Literal["union", "intersection", "priority"] = "union"
    min_model_agreement: int = Field(1, ge=1, le=8)
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="MMR lambda; 0 = pure similarity.")
    dislike_track_ids: list[str] = Field(default_factory=list, max_length=1000)
    negative_prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] = Field(
        default_factory=list, max_length=16
    )
    penalty: float | None = Field(
        None, ge=0.0, le=1.0, description="Penalty factor; default: the service's (0.85)."
    )
    duplicate_threshold: float | None = Field(0.02, ge=0.0, le=2.0)
    songs: list[SongRef] = Field(
        default_factory=list, max_length=1000, description="Seeds as Navidrome songs (weight 1)."
    )
    albums: list[AlbumRef] = Field(
        default_factory=list, max_length=50, description="Albums' tracks as seeds."
    )
    artists: list[ArtistRef] = Field(
        default_factory=list, max_length=50, description="Artists' tracks as seeds."
    )


class TextRequest(QueryBase):
    type: Literal["text"] = "text"
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    negative_prompts: list[Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]] = Field(
        default_factory=list, max_length=16
    )
    penalty: float | None = Field(
        None, ge=0.0, le=1.0, description="Penalty factor; default: the service's (0.85)."
    )


class SimilarRequest(QueryBase):
    """Exactly one seed: `track_id`, or a Navidrome `song`, `album` or `artist`."""

    type: Literal["similar"] = "similar"
    track_id: str | None = Field(None, min_length=1, max_length=256)
    song: SongRef | None = None
    album: AlbumRef | None = Field(None, description="Its tracks are the seeds (artist cap 2).")
    artist: ArtistRef | None = Field(None, description="Its tracks are the seeds (artist cap 2).")
    ordering: Literal["ranked", "radius_walk"] = "ranked"
    diversity: float = Field(0.0, ge=0.0, le=1.0, description="MMR lambda; 0 = pure similarity.")

    @model_validator(mode="after")
    def _one_seed(self) -> SimilarRequest:
        given = [n for n in ("track_id", "song", "album", "artist") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of track_id, song, album, artist (got {given or 'none'})"
            )
        return self


class PathRequest(QueryBase):
    type: Literal["path"] = "path"
    start_track_id: str | None = Field(None, min_length=1, max_length=256)
    end_track_id: str | None = Field(None, min_length=1, max_length=256)
    start: SongRef | None = Field(None, description="The start as a Navidrome song.")
    end: SongRef | None = Field(None, description="The end as a Navidrome song.")
    steps: int = Field(10, ge=2, le=200)
    interpolation: Literal["linear", "spherical"] = "linear"
    exact_length: bool = False

    @model_validator(mode="after")
    def _both_ends(self) -> PathRequest:
        for name in ("start", "end"):
            if (getattr(self, f"{name}_track_id") is None) == (getattr(self, name) is None):
                raise ValueError(f"give exactly one of {name}_track_id and {name}")
        return self


class AlchemyRequest(QueryBase):
    type: Literal["alchemy"] = "alchemy"
    add_track_ids: list[str] = Field(min_length=1, max_length=1000)
    subtract_track_ids: list[str] = Field(default_factory=list, max_length=1000)
    temperature: float = Field(1.0, ge=0.0, le=10.0)
    subtract_threshold: float = Field(
        0.2,
        ge=0.0,
        le=2.0,
        description="Results keep a cosine distance above this from the subtract centroid.",
    )
    random_seed: int | None = Field(None, description="Makes temperature sampling repeatable.")


class FingerprintRequest(QueryBase):
    type: Literal["fingerprint"] = "fingerprint"
    seeds: list[WeightedSeed] = Field(default_factory=list, max_length=1000)
    half_life_days: float = Field(30.0, gt=0)


class DuplicatesRequest(QueryBase):
    type: Literal["duplicates"] = "duplicates"
    threshold: float = Field(0.02, ge=0.0, le=2.0, description="Cosine distance below = duplicate.")


class InstantPlan(BaseModel):
    """What an `instant` sentence was read as (pipeline/recommender/sentence.py): shown in
    the reply, so the user sees what was understood and what was not."""

    prompt: str | None = Field(None, description="The described sound, for the text search.")
    negative_prompts: list[str] = Field(default_factory=list)
    filters: TrackFilters | None = None
    minutes: float | None = Field(None, gt=0, description="Total length wanted.")
    count: int | None = Field(None, ge=1, description="Tracks wanted.")
    max_per_artist: int | None = Field(None, ge=1)
    understood: list[str] = Field(
        default_factory=list, description='Each phrase read and its meaning ("a -> b").'
    )
    warnings: list[str] = Field(default_factory=list)


class InstantRequest(QueryBase):
    """A playlist from one typed sentence; the reply shows the plan it was read as."""

    type: Literal["instant"] = "instant"
    sentence: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)


QueryRequest = Annotated[
    RecommendRequest
    | TextRequest
    | SimilarRequest
    | PathRequest
    | AlchemyRequest
    | FingerprintRequest
    | DuplicatesRequest
    | InstantRequest,
    Field(discriminator="type"),
]
query_request_adapter: TypeAdapter[QueryRequest] = TypeAdapter(QueryRequest)


class ScoredTrack(BaseModel):
    track_id: str
    score: float
    artist: str | None = None
    title: str | None = None
    album: str | None = None
    found_by: list[str] = Field(default_factory=list)
    mbid: str | None = Field(None, description="MusicBrainz recording id, when tagged.")
    duration: float | None = Field(None, description="Seconds, when known.")
    bpm: float | None = Field(None, description="Tempo, when measured.")
    key: str | None = Field(None, description='e.g. "A minor", when measured.')
    energy: float | None = Field(None, description="0 calm .. 1 energetic, when measured.")
    year: int | None = None
    genre: str | None = None


class DuplicatePair(BaseModel):
    """Two tracks whose vectors are nearly identical (the same recording, twice)."""

    first: ScoredTrack
    second: ScoredTrack
    distance: float = Field(description="Cosine distance, 1 - similarity.")


class ReplyError(BaseModel):
    """Why a request got no answer: the wire form of an error (docs/wire-contract.md).

    A model, not an exception: the exceptions are in `pipeline.errors`, whose
    kinds carry the `code` that ends up here.
    """

    code: ReplyCode
    message: str = Field(max_length=4000)


class QueryReply(Record):
    request_id: str
    type: str | None = None
    ok: bool = True
    tracks: list[ScoredTrack] = Field(default_factory=list)
    extra: dict[str, list[ScoredTrack]] = Field(
        default_factory=dict, description="Secondary lists, e.g. alchemy's filtered tracks."
    )
    pairs: list[DuplicatePair] = Field(
        default_factory=list, description="`duplicates`: the near-identical pairs."
    )
    plan: InstantPlan | None = Field(
        None, description="`instant`: the sentence as read; `text`: its tempo/energy words."
    )
    warnings: list[str] = Field(default_factory=list)
    error: ReplyError | None = None
    elapsed_ms: float = 0.0
    answered_at: datetime = Field(default_factory=utc_now)


def parse_query_request(raw: bytes | str | None) -> QueryRequest:
    """Decode a request; a `SchemaError` names the offending field or unknown type."""
    if raw is None:
        raise SchemaError("QueryRequest: empty value")
    try:
        return query_request_adapter.validate_json(raw)
    except ValidationError as exc:
        raise SchemaError(f"QueryRequest: {describe_validation_error(exc)}") from exc
