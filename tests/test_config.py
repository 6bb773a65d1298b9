"""Settings come from env vars and a TOML file, env winning."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import Settings


def test_defaults_are_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.topics.tracks == "sonicbus.tracks"
    assert settings.milvus_uri.endswith("milvus.db")


def test_toml_file_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "sonicbus.toml"
    config.write_text(
        '[kafka]\nbootstrap_servers = "kafka.lan:9092"\n'
        '[topics]\nprefix = "home."\npartitions = 12\n'
    )
    monkeypatch.setenv("SONICBUS_CONFIG", str(config))
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "kafka.lan:9092"
    assert settings.topics.tracks == "home.tracks"
    assert settings.topics.partitions == 12
    monkeypatch.setenv("SONICBUS_TOPICS__PARTITIONS", "3")
    assert Settings().topics.partitions == 3


def test_missing_explicit_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONICBUS_CONFIG", "/nonexistent/sonicbus.toml")
    with pytest.raises(FileNotFoundError, match="SONICBUS_CONFIG"):
        Settings()
