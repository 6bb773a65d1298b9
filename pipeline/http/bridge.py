"""The older HTTP recommendation API, translated onto the bus.

The older design was a set of FastAPI services beside a Navidrome fork: a
recommender (`POST /playlist/{mode}`, surfaced to clients as
`/recommendations/{mode}`) with multi-model merging and negative prompts, a
text-embedding service (`POST /embed_text`) and a batch re-embedding job
(`/batch/start|progress|cancel`). Its request and response shapes are kept
here field for field, so a client written for it works unchanged: requests
become `QueryRequest`s answered by the query service over Kafka; the batch
job becomes a replay (see `replay.py`).

Field mapping of a recommendation request:
- mode recent/favorites/all/discovery -> `recommend` with that seed_mode (the
  query service derives the seeds from Navidrome); custom -> explicit seeds;
  text -> a `text` request (`text` field, as the Navidrome fork sent it);
- seeds -> weighted seeds; a seed's own `embedding` -> a direct embedding of
  the first requested model; negative_embeddings -> direct embeddings with a
  negative weight; negative_prompt_penalty -> penalty;
- merge_strategy, min_model_agreement, diversity, exclude_track_ids, limit as is;
  model_priorities orders `models` (what the `priority` merge falls back by).
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from pipeline.errors import InvalidInput
from pipeline.schemas.queries import QueryReply

MODES = ("recent", "favorites", "all", "discovery", "custom", "text")
SEED_MODES = {"recent", "favorites", "all", "discovery"}
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

# Query reply error code -> HTTP status of the bridged call.
class RecommendationSeed(BaseModel):
    track_id: str = Field(min_length=1, max_length=256)
    weight: float = Field(1.0, ge=0.0, le=10.0)
    source: str = Field("", max_length=64, description="recent, favorite, playlist, ...")
    played_at: datetime | None = None
    embedding: list[float] | None = Field(None, min_length=1, max_length=32768)

    @field_validator("track_id")
    @classmethod
    def _strip(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("track_id cannot be blank")
        return value.strip()

    @field_validator("embedding")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(x) for x in value):
            raise ValueError("embedding contains NaN or infinity")
        return value


class RecommendationRequest(BaseModel):
    """The older recommender's request body (the path's mode wins over `mode`)."""

    user_id: str | None = Field(None, max_length=256)
    user_name: str | None = Field(None, max_length=256)
    limit: int = Field(25, ge=1, le=500)
    mode: str | None = None
    seeds: list[RecommendationSeed] = Field(default_factory=list, max_length=1000)
    diversity: float = Field(0.0, ge=0.0, le=1.0)
    exclude_track_ids: list[str] = Field(default_factory=list, max_length=10_000)
    library_ids: list[int] = Field(default_factory=list, max_length=1000)
    models: list[str] = Field(default_factory=lambda: ["musicnn"], min_length=1, max_length=8)
    merge_strategy: Literal["union", "intersection", "priority"] = "union"
    model_priorities: dict[str, int] = Field(default_factory=dict)
    min_model_agreement: int = Field(1, ge=1, le=8)
    negative_prompts: list[str] = Field(default_factory=list, max_length=16)
    negative_prompt_penalty: float = Field(0.85, ge=0.3, le=1.0)
    negative_embeddings: dict[str, list[list[float]]] | None = None
    text: str | None = Field(None, min_length=1, max_length=2000, description="mode text")

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not re.match(MODEL_NAME, m)]
        if bad:
            raise ValueError(f"not model names: {bad}")
        return list(dict.fromkeys(value))


class RecommendationItem(BaseModel):
    track_id: str
    score: float
    reason: str | None = None
    models: list[str] | None = None
    negative_similarity: float | None = None
    artist: str | None = None
    title: str | None = None
    album: str | None = None


class RecommendationResponse(BaseModel):
    tracks: list[RecommendationItem] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    request_id: str = Field(description="The request's id on the bus (for tracing).")

    @property
    def track_ids(self) -> list[str]:
        return [t.track_id for t in self.tracks]


class BridgeError(InvalidInput):
    """The older request cannot be expressed on the bus; 422 with this message."""


def to_query(mode: str, body: RecommendationRequest) -> dict[str, Any]:
    """The QueryRequest (as a dict, validated by the client) for an older-API call."""
    mode = mode.strip().lower()
    if mode not in MODES:
        raise BridgeError(f"unknown mode {mode!r}; one of: {', '.join(MODES)}")
    models = sorted(body.models, key=lambda m: body.model_priorities.get(m, 1_000_000))
    common: dict[str, Any] = {
        "request_id": f"http-{uuid.uuid4().hex[:16]}",
        "limit": body.limit,
        "models": models,
        "exclude_track_ids": body.exclude_track_ids,
        "user_id": body.user_id,
    }
    if mode == "text":
        if not body.text:
            raise BridgeError("mode text needs `text` (the prompt)")
        return {
            **common,
            "type": "text",
            "prompt": body.text,
            "negative_prompts": body.negative_prompts,
            "penalty": body.negative_prompt_penalty,
        }
    if mode == "custom" and not body.seeds:
        raise BridgeError("mode custom needs seeds (the tracks to start from)")
    if mode in SEED_MODES and not body.user_id and not body.seeds:
        raise BridgeError(f"mode {mode} needs user_id (whose plays, stars and ratings to use)")
    seeds = [
        {"track_id": s.track_id, "weight": s.weight, "played_at": s.played_at}
        for s in body.seeds
        if s.embedding is None
    ]
    embeddings = [
        {"model": models[0], "vector": s.embedding, "weight": s.weight or 1.0}
        for s in body.seeds
        if s.embedding is not None
    ]
    for model, vectors in (body.negative_embeddings or {}).items():
        embeddings += [{"model": model, "vector": v, "weight": -1.0} for v in vectors]
    return {
        **common,
        "type": "recommend",
        "seed_mode": mode if mode in SEED_MODES and not seeds else "explicit",
        "seeds": seeds,
        "embeddings": embeddings,
        "merge": body.merge_strategy,
        "min_model_agreement": body.min_model_agreement,
        "diversity": body.diversity,
        "negative_prompts": body.negative_prompts,
        "penalty": body.negative_prompt_penalty,
    }


def from_reply(reply: QueryReply, body: RecommendationRequest) -> RecommendationResponse:
    warnings = list(reply.warnings)
    if body.library_ids:
        warnings.append("library_ids is not supported by the bus; results span every library")
    return RecommendationResponse(
        request_id=reply.request_id,
        warnings=warnings,
        tracks=[
            RecommendationItem(
                track_id=t.track_id,
                score=t.score,
                reason=f"similar by {', '.join(t.found_by)}" if t.found_by else None,
                models=t.found_by or None,
                artist=t.artist,
                title=t.title,
                album=t.album,
            )
            for t in reply.tracks
        ],
    )


class TextEmbeddingRequest(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    model: str = Field("musicnn", pattern=MODEL_NAME)


class TextEmbeddingResponse(BaseModel):
    embedding: list[float]
    model: str
    dimension: int
    is_stub: bool = Field(False, description="Always false: sonicbus has no stub encoders.")
    space: Literal["audio", "tags"] = Field(
        description="audio: a vector in the model's audio space (its own text tower); "
        "tags: weights over the model's tag vocabulary (MusiCNN's 50 MSD tags)."
    )
    tags: list[tuple[str, float]] = Field(default_factory=list, description="Top tags (tags).")


class BatchEmbeddingRequest(BaseModel):
    """The older batch job's body: re-embed these models (clearExisting -> a fresh collection)."""

    models: list[str] = Field(default_factory=lambda: ["musicnn"], min_length=1, max_length=8)
    clearExisting: bool = True  # the older API's field name
    force: bool = False
    wait_s: float | None = Field(None, ge=0, le=600, description="Wait for members to stop.")


class BatchProgress(BaseModel):
    """The older `/batch/progress` answer, computed from the replay of each model."""

    status: str
    total_tracks: int = 0
    total_operations: int = 0
    processed_tracks: int = 0
    processed_operations: int = 0
    failed_tracks: int = 0
    current_track: str | None = None
    current_model: str | None = None
    progress_percent: float = 0.0
    estimated_completion: float | None = Field(None, description="Epoch seconds.")
    last_error: str | None = None
    job_id: str | None = None
