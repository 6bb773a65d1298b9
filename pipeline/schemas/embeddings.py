"""The `embeddings` topic: one record after each successful upsert or delete."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from pipeline.schemas.base import Record, utc_now


class StageTimings(BaseModel):
    """Where one track's time went (ms). `embed_ms` and `upsert_ms` are the track's share
    of a batched call; decoding and preparing overlap with the model's work on other
    tracks, so the stages do not add up to wall time."""

    decode_ms: float = 0.0
    prepare_ms: float = Field(0.0, description="The model's preprocessing (MusiCNN: mel patches).")
    analyse_ms: float = Field(0.0, description="Tempo, key, loudness and energy.")
    embed_ms: float = 0.0
    upsert_ms: float = 0.0
    audio_s: float = Field(0.0, description="Seconds of audio decoded.")


class NearDuplicate(BaseModel):
    track_id: str
    similarity: float


class EmbeddingEvent(Record):
    track_id: str = Field(min_length=1, max_length=256)
    model: str
    model_version: str
    status: Literal["embedded", "skipped_unchanged", "deleted"]
    dim: int = Field(0, ge=0)
    collection: str
    timings: StageTimings = Field(default_factory=StageTimings)
    near_duplicates: list[NearDuplicate] = Field(default_factory=list)
    emitted_at: datetime = Field(default_factory=utc_now)
