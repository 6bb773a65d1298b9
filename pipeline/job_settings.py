"""Settings of the long jobs (`jobs.*`): the worker, clustering, cleaning and the schedules.

A module of its own beside `pipeline.config` (which only holds the field
`jobs: JobsSettings`), so config.py stays a size a reader can hold in mind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from pipeline.schemas.jobs import Schedule

Algorithm = Literal["kmeans", "gmm", "dbscan", "spectral"]


class ClusteringSettings(BaseModel):
    """The evolutionary search for playlists (`sonicbus cluster`); a job's params override."""

    model: str = Field("musicnn", description="Whose collection is clustered.")
    runs: int = Field(300, ge=1, le=100_000, description="Clustering runs of the search.")
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: ["kmeans", "gmm", "dbscan", "spectral"],
        description="Algorithms the search samples from.",
    )
    space: Literal["auto", "embeddings", "tags"] = Field(
        "auto", description="auto: each run picks embeddings or the tag vector (when rows have it)."
    )
    min_clusters: int = Field(4, ge=2, description="Fewest clusters a run asks for.")
    max_clusters: int = Field(40, ge=2, description="Most clusters a run asks for.")
    max_pca_components: int = Field(
        32, ge=0, description="PCA to a sampled 2..this many components (0: no PCA)."
    )
    sample_size: int = Field(2000, ge=10, description="Tracks in each run's stratified sample.")
    sample_perturbation: float = Field(
        0.1, ge=0, le=1, description="Share of the sample replaced between runs."
    )
    elites: int = Field(10, ge=1, description="Best runs kept to mutate.")
    explore_share: float = Field(
        0.3, ge=0, le=1, description="Share of the runs drawn at random before elites mutate."
    )
    mutation_probability: float = Field(
        0.7, ge=0, le=1, description="After exploring: chance a run mutates an elite."
    )
    top_k_tags: int = Field(3, ge=1, le=10, description="Tags that describe a playlist.")
    weight_purity: float = Field(1.0, ge=0, description="Fitness weight: tag purity.")
    weight_diversity: float = Field(1.0, ge=0, description="Fitness weight: unique dominant tags.")
    weight_silhouette: float = Field(1.0, ge=0, description="Fitness weight: silhouette.")
    weight_davies_bouldin: float = Field(0.5, ge=0, description="Fitness weight: Davies-Bouldin.")
    weight_calinski_harabasz: float = Field(
        0.5, ge=0, description="Fitness weight: Calinski-Harabasz."
    )
    duplicate_similarity: float = Field(
        0.995, ge=0, le=1, description="Cosine above which two songs of a playlist are one."
    )
    min_playlist_size: int = Field(8, ge=1, description="Smaller playlists are dropped.")
    max_playlist_size: int = Field(100, ge=1, description="Songs per playlist at most.")
    playlists: int = Field(20, ge=1, description="Keep this many most different playlists.")
    max_per_artist: int = Field(3, ge=1, description="Songs of one artist per playlist at most.")
    seed: int | None = Field(None, description="Random seed (None: a new one per job).")
    suffix: str = Field(
        " (auto)", min_length=1, description="Marks the automatic playlists on Navidrome."
    )
    m3u_dir: Path | None = Field(
        None, description="Folder of the M3U8 files (unset: <home>/playlists)."
    )
    write_navidrome: bool = Field(
        True, description="Write the playlists to Navidrome when navidrome.url is set."
    )


MixSource = Literal["fingerprint", "recent", "favorites", "all", "discovery"]


class MixSpec(BaseModel):
    """One mix every user gets: its playlist name and which listening it grows from."""

    name: str = Field(min_length=1, max_length=100, description="The playlist's name.")
    source: MixSource = Field(
        "fingerprint",
        description="fingerprint: plays x recency; recent, favorites, all, discovery: the "
        "seed modes (discovery: only tracks the user never played).",
    )


def default_mixes() -> list[MixSpec]:
    return [
        MixSpec(name="Daily Mix", source="fingerprint"),
        MixSpec(name="Favourites Mix", source="favorites"),
        MixSpec(name="Discovery Mix", source="discovery"),
    ]


class DailyMixSettings(BaseModel):
    """Per-user mixes refreshed on a schedule (`daily_mixes` job); a job's params override."""

    users: list[str] = Field(
        default_factory=list, description="Navidrome user names (empty: every user)."
    )
    mixes: list[MixSpec] = Field(
        default_factory=default_mixes,
        min_length=1,
        max_length=10,
        description="Each user's mixes: [{name, source}]; default Daily (fingerprint), "
        "Favourites (favorites) and Discovery (discovery).",
    )
    size: int = Field(25, ge=1, le=500, description="Songs per mix.")
    no_repeat_days: float = Field(
        7.0, ge=0, description="A song is not in the same mix again within this many days."
    )
    models: list[str] = Field(
        default_factory=lambda: ["musicnn"], min_length=1, description="Models the mixes use."
    )
    answer_timeout_s: float = Field(
        60.0, gt=0, description="How long one mix may wait for the query service."
    )


class CleaningSettings(BaseModel):
    """Reconciling the collections with the `tracks` topic (`sonicbus clean`)."""

    max_changes: int = Field(
        500, ge=0, description="Above this many removals or re-publications: report only."
    )
    max_ratio: float = Field(
        0.5, ge=0, le=1, description="Above this share of a collection removed: report only."
    )


class JobsSettings(BaseModel):
    """The jobs worker (group `jobs`), the scheduler, and each job kind's defaults."""

    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="Kafka max.poll.interval.ms of the worker's consumer."
    )
    session_timeout_ms: int = Field(
        10_000, ge=1000, description="Kafka session.timeout.ms: how soon a lost worker is noticed."
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="A running job reports progress at least this often."
    )
    stale_after_s: float = Field(
        30.0,
        gt=0,
        description="A job not heard from for this long is taken as lost (its worker died) "
        "and is taken up again.",
    )
    schedules: list[Schedule] = Field(
        default_factory=list,
        description="Cron schedules, e.g. [{name='nightly', kind='clustering', "
        "cron='0 3 * * *'}]; the HTTP API adds or overrides by name.",
    )
    scheduler_tick_s: float = Field(1.0, gt=0, description="How often the scheduler looks.")
    scheduler_catch_up_s: float = Field(
        120.0,
        ge=0,
        description="A scheduler (re)started this soon after a due time still publishes it "
        "(the job id makes a second copy harmless).",
    )
    clustering: ClusteringSettings = Field(default_factory=ClusteringSettings)
    cleaning: CleaningSettings = Field(default_factory=CleaningSettings)
    daily_mixes: DailyMixSettings = Field(default_factory=DailyMixSettings)
