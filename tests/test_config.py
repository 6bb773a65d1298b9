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


def test_every_setting_is_documented() -> None:
    from pipeline.config import describe_settings

    rows = describe_settings()
    names = {name for name, *_ in rows}
    assert {"kafka.bootstrap_servers", "milvus.uri", "embed.models", "watcher.settle_s"} <= names
    undocumented = [name for name, _, _, meaning in rows if not meaning]
    assert undocumented == []
    env = dict((name, var) for name, var, _, _ in rows)
    assert env["kafka.bootstrap_servers"] == "SONICBUS_KAFKA__BOOTSTRAP_SERVERS"
