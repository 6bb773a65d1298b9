"""Settings: one typed object, loaded once at the edge and passed in.

Sources, highest priority first: keyword arguments, environment variables
(``SONICBUS_*``, nested with ``__``, e.g. ``SONICBUS_KAFKA__BOOTSTRAP_SERVERS``),
a TOML file (``SONICBUS_CONFIG`` or ``./sonicbus.toml`` or
``~/.config/sonicbus/config.toml``), then the defaults below. Nothing deep in
the code reads the environment itself: that keeps tests free to build any
settings they want.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pipeline.job_settings import JobsSettings
from pipeline.service_settings import HttpSettings, OpsSettings, QuerySettings

__all__ = [
    "EmbedSettings", "HttpSettings", "KafkaSettings", "MilvusSettings", "NavidromeSettings",
    "OpsSettings", "QuerySettings", "Settings", "TopicSettings", "WatcherSettings",
    "describe_settings", "find_config_file", "load_settings",
]  # fmt: skip


def default_home() -> Path:
    """Where sonicbus keeps its local state (broker data, Milvus Lite file, caches)."""
    return Path(os.environ.get("SONICBUS_HOME", Path.home() / ".local" / "share" / "sonicbus"))


def default_cache() -> Path:
    """Downloaded artefacts (Kafka jars, model wheels) live outside the repo."""
    return Path(os.environ.get("SONICBUS_CACHE_DIR", Path.home() / ".cache" / "sonicbus"))


class KafkaSettings(BaseModel):
    """How to reach the broker, and how the local broker is started."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Comma-separated host:port list of the Kafka cluster."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when a SASL protocol is used."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA bundle for TLS connections.")
    client_id: str = Field("sonicbus", description="Client id prefix reported to the broker.")
    request_timeout_ms: int = Field(15_000, ge=1000, description="Client request timeout.")
    max_message_bytes: int = Field(
        1_048_576, ge=1024, description="Largest record sonicbus accepts or produces."
    )
    local_port: int = Field(9092, description="Port of the broker `sonicbus infra up` starts.")
    local_heap: str = Field("512m", description="Java heap of the local broker.")


class TopicSettings(BaseModel):
    """Topic names and layout; the prefix lets several installs share one cluster."""

    prefix: str = Field("sonicbus.", description="Prefix of every topic name.")
    partitions: int = Field(6, ge=1, description="Partitions of tracks/embeddings/requests.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of new topics.")
    reply_partitions: int = Field(3, ge=1, description="Partitions of the replies topic.")
    dlq_retention_ms: int = Field(
        30 * 24 * 3600 * 1000, description="How long dead letters are kept (default 30 days)."
    )
    group_prefix: str = Field(
        "",
        description="Prefix of every consumer-group id (`embed-<model>`, `query`); group ids "
        "are global to a cluster, so two installs sharing one set it apart.",
    )

    def name(self, family: str) -> str:
        return f"{self.prefix}{family}"

    def group(self, name: str) -> str:
        """The consumer-group id for a group named in the architecture (e.g. `query`)."""
        return f"{self.group_prefix}{name}"

    @property
    def tracks(self) -> str:
        return self.name("tracks")

    @property
    def embeddings(self) -> str:
        return self.name("embeddings")

    @property
    def dlq(self) -> str:
        return self.name("dlq")

    @property
    def requests(self) -> str:
        return self.name("requests")

    @property
    def replies(self) -> str:
        return self.name("replies")

    @property
    def control(self) -> str:
        """Compacted: operator commands every consumer follows (pause/resume embedding)."""
        return self.name("control")


class MilvusSettings(BaseModel):
    """Where vectors live. A path means Milvus Lite; an http(s) URI means a server."""

    uri: str = Field(
        "",
        description="Milvus URI: a local .db path (Milvus Lite) or http://host:19530. "
        "Empty means <home>/milvus.db.",
    )
    token: SecretStr | None = Field(None, description="Milvus token (user:password).")
    db_name: str = Field("", description="Milvus database name (server only).")
    collection_prefix: str = Field("sonicbus_", description="Prefix of every collection name.")
    index_type: Literal["HNSW", "FLAT", "IVF_FLAT", "AUTOINDEX"] = Field(
        "HNSW", description="Vector index on a server (Milvus Lite always uses FLAT)."
    )
    metric_type: Literal["COSINE", "IP", "L2"] = Field("COSINE", description="Similarity metric.")
    hnsw_m: int = Field(50, ge=4, le=128, description="HNSW graph degree M.")
    hnsw_ef_construction: int = Field(250, ge=8, description="HNSW efConstruction.")
    search_ef: int = Field(128, ge=8, description="HNSW ef at search time.")
    local_port: int = Field(19530, description="Port of the Milvus server `infra` starts.")


class EmbedSettings(BaseModel):
    """The embedding consumers (`embed-<model>` groups) and the models they run."""

    models: list[str] = Field(
        default_factory=lambda: ["musicnn"], description="Models `sonicbus up` embeds with."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Inference device.")
    weights_dir: Path | None = Field(
        None, description="Folder with one sub-folder of weights per model (muq, mert, ...)."
    )
    batch_tracks: int = Field(8, ge=1, le=256, description="Tracks per consumed batch.")
    idle_unload_s: float = Field(300.0, ge=0, description="Unload a model after idle seconds.")
    decode_timeout_s: float = Field(120.0, gt=0, description="Give up decoding a file after.")
    max_duration_s: float = Field(1800.0, gt=0, description="Embed at most this much of a file.")
    duplicate_similarity: float = Field(
        0.995,
        ge=0,
        le=1,
        description="Cosine similarity above which a new track is reported "
        "as a near-duplicate of a stored one.",
    )
    max_attempts: int = Field(5, ge=1, description="Handler retries before dead-lettering.")
    audio_features: bool = Field(
        True,
        description="Measure tempo, key, loudness and energy of each track from the samples "
        "decoded for the model (~8 % of MusiCNN's work), for query filters and `instant`.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU cap of the embedders: torch and BLAS threads and the decode pool "
        "(unset: all cores); process-wide, so under `sonicbus up` the query service's too.",
    )
    params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-model options, keyed by model name "
        '(e.g. {"mert": {"layers": [4, 8, 12]}})',
    )


DEFAULT_AUDIO_EXTENSIONS = (
    "mp3",
    "flac",
    "ogg",
    "oga",
    "opus",
    "m4a",
    "aac",
    "wav",
    "aif",
    "aiff",
    "wma",
)


class WatcherSettings(BaseModel):
    """The filesystem watcher: which folders it reads, and when a changed file counts as done."""

    roots: list[Path] = Field(
        default_factory=list,
        description="Music folders to scan and watch (the DIR arguments of `sonicbus watch` "
        "replace them).",
    )
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_AUDIO_EXTENSIONS),
        description="Audio file extensions, lower case, without the dot.",
    )
    settle_s: float = Field(
        0.5,
        ge=0,
        description="A changed file is read once its size and mtime stayed the same this long: "
        "a copy in progress is not a track yet.",
    )
    debounce_ms: int = Field(
        200, ge=10, description="File system notifications are grouped over this window."
    )
    force_polling: bool = Field(
        False, description="Poll instead of inotify (network shares that send no events)."
    )
    poll_delay_ms: int = Field(500, ge=50, description="Polling interval when polling.")
    workers: int = Field(4, ge=1, description="Threads that read tags and hash files.")
    batch_size: int = Field(256, ge=1, description="Files inspected and published per batch.")
    max_deletions: int = Field(
        500,
        ge=0,
        description="Most tombstones one scan or one burst of deletions may publish; above "
        "this (or above max_deletion_ratio) nothing is removed and the refusal is logged.",
    )
    max_deletion_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Largest share of the known tracks under the watched folders that one "
        "scan may remove (an unmounted disk looks like an empty library).",
    )


class NavidromeSettings(BaseModel):
    """Where the Navidrome library is read from: its SQLite file or its Subsonic API."""

    db_path: Path | None = Field(
        None,
        description="navidrome.db, opened read-only. Also lets the watcher use Navidrome's "
        "track ids.",
    )
    url: str | None = Field(None, description="Base URL of the Navidrome server (Subsonic API).")
    local_port: int = Field(4533, description="Port of infra/navidrome-start.sh's Navidrome.")
    music_folder: Path | None = Field(None, description="Its music folder (unset: ~/Music).")
    user: str | None = Field(None, description="Subsonic user name.")
    password: SecretStr | None = Field(
        None, description="Subsonic password (SONICBUS_NAVIDROME__PASSWORD)."
    )
    client_name: str = Field("sonicbus", description="Subsonic client name (the `c` parameter).")
    api_version: str = Field("1.16.1", description="Subsonic API version sent to the server.")
    page_size: int = Field(500, ge=1, le=500, description="Songs per search3 page.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one Subsonic request.")
    retries: int = Field(2, ge=0, description="Retries of a Subsonic request that failed.")
    busy_timeout_s: float = Field(
        10.0, ge=0, description="How long to wait for a locked Navidrome database."
    )
    download_fallback: bool = Field(
        True,
        description="Embedders fetch a Navidrome track's original through Subsonic `download` "
        "when its path cannot be read on their machine (needs url, user, password).",
    )
    download_max_mb: int = Field(1024, ge=1, description="Largest download allowed (MiB).")
    download_timeout_s: float = Field(300.0, gt=0, description="Longest one download may take.")
    path_map: dict[str, str] = Field(
        default_factory=dict,
        description="Navidrome path prefix -> the same folder on this machine, e.g. "
        '{"/music": "/srv/music"} when Navidrome runs in a container.',
    )
    schedule: str | None = Field(
        None, description="Cron expression of scheduled scans (e.g. '*/15 * * * *')."
    )
    max_deletions: int = Field(
        500,
        ge=0,
        description="Most tombstones one scan may publish; a scan above this (or above "
        "max_deletion_ratio) publishes nothing and reports why.",
    )
    max_deletion_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Largest share of the known Navidrome tracks one scan may remove.",
    )


class Settings(BaseSettings):
    """Every setting of sonicbus. See `sonicbus config` for the effective values."""

    model_config = SettingsConfigDict(
        env_prefix="SONICBUS_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    home: Path = Field(
        default_factory=default_home,
        description="Local state: broker data, Milvus Lite file (~/.local/share/sonicbus).",
    )
    cache_dir: Path = Field(
        default_factory=default_cache,
        description="Kafka jars and model wheels (~/.cache/sonicbus).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["console", "json"] = Field(
        "console", description="Logs as readable lines or as one JSON object per line."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    watcher: WatcherSettings = Field(default_factory=WatcherSettings)
    navidrome: NavidromeSettings = Field(default_factory=NavidromeSettings)
    embed: EmbedSettings = Field(default_factory=EmbedSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = find_config_file()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def milvus_uri(self) -> str:
        return self.milvus.uri or str(self.home / "milvus.db")


def find_config_file() -> Path | None:
    """The TOML file to read, if any; an explicit SONICBUS_CONFIG must exist."""
    explicit = os.environ.get("SONICBUS_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"SONICBUS_CONFIG points to {path}, which is not a file")
        return path
    for candidate in (Path("sonicbus.toml"), Path.home() / ".config" / "sonicbus" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_settings(**overrides: object) -> Settings:
    """Build the settings once at a program's edge (CLI, service entry point)."""
    return Settings(**overrides)  # type: ignore[arg-type]


def describe_settings(
    model: type[BaseModel] = Settings, prefix: str = ""
) -> list[tuple[str, str, str, str]]:
    """(dotted name, env var, default, description) of every setting, nested ones flattened.

    `sonicbus config --describe` prints this, so the documentation of a setting
    is its `Field(description=...)` and can never drift from the code.
    """
    rows: list[tuple[str, str, str, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(describe_settings(annotation, prefix=f"{dotted}."))
            continue
        env = "SONICBUS_" + dotted.replace(".", "__").upper()
        if field.default_factory is not None:
            default = repr(field.default_factory())  # type: ignore[call-arg]
        else:
            default = repr(field.default)
        rows.append((dotted, env, default, field.description or ""))
    return rows
