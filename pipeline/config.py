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
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


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

    def name(self, family: str) -> str:
        return f"{self.prefix}{family}"

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


class Settings(BaseSettings):
    """Every setting of sonicbus. See `sonicbus config` for the effective values."""

    model_config = SettingsConfigDict(
        env_prefix="SONICBUS_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    home: Path = Field(default_factory=default_home, description="Local state folder.")
    cache_dir: Path = Field(default_factory=default_cache, description="Download cache folder.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["console", "json"] = Field(
        "console", description="Logs as readable lines or as one JSON object per line."
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)

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
