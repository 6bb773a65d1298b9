"""`sonicbus navidrome install-plugin` without a Navidrome: the package for one sonicbus
address (requiredHosts, reproducible bytes), the plugin config checked against the
manifest's schema, and the Agents line. Enabling through a real Navidrome's API is part
of the plugin's end-to-end tests."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from pipeline.config import Settings
from pipeline.errors import InvalidInput
from pipeline.navidrome.plugin import (
    DEFAULT_MANIFEST,
    agents_line,
    manifest_for,
    package_bytes,
    plugin_config,
    sonicbus_host,
)
from tests.fixtures.cli import sonicbus

WASM = b"\x00asm\x01\x00\x00\x00 not a real module"
TEMPLATE = {
    "name": "sonicbus",
    "author": "sonicbus",
    "version": "0.1.0",
    "permissions": {"http": {"reason": "asks sonicbus", "requiredHosts": []}},
    "config": {"schema": {"type": "object", "properties": {
        "sonicbus_url": {"type": "string"}, "token": {"type": "string"},
        "timeout_ms": {"type": "integer"}}}},
}  # fmt: skip


def test_hosts_are_host_names_without_port() -> None:
    assert sonicbus_host("http://127.0.0.1:9002") == "127.0.0.1"
    assert sonicbus_host("https://Music.Example.org/sonicbus/") == "music.example.org"
    assert sonicbus_host("http://[::1]:9002") == "::1"
    for bad in ("127.0.0.1:9002", "ftp://host", "http://"):
        with pytest.raises(InvalidInput):
            sonicbus_host(bad)


def test_the_package_is_reproducible_and_lists_the_host() -> None:
    manifest = manifest_for(TEMPLATE, ["10.0.0.5"])
    assert TEMPLATE["permissions"]["http"]["requiredHosts"] == []  # type: ignore[index]
    first, second = package_bytes(manifest, WASM), package_bytes(manifest, WASM)
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as z:
        assert z.namelist() == ["manifest.json", "plugin.wasm"]
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        written = json.loads(z.read("manifest.json"))
        assert written["permissions"]["http"]["requiredHosts"] == ["10.0.0.5"]
        assert z.read("plugin.wasm") == WASM


def test_config_keys_follow_the_manifest_schema() -> None:
    schema = TEMPLATE["config"]
    values = plugin_config(schema, "http://127.0.0.1:9002/", "tok", {"timeout_ms": 3000})  # type: ignore[arg-type]
    assert values == {"sonicbus_url": "http://127.0.0.1:9002", "token": "tok", "timeout_ms": 3000}
    assert "token" not in plugin_config(schema, "http://h:1", None, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="no colour"):
        plugin_config(schema, "http://h:1", None, {"colour": "red"})  # type: ignore[arg-type]
    if DEFAULT_MANIFEST.is_file():  # the plugin's own template has the keys the CLI sets
        real = json.loads(DEFAULT_MANIFEST.read_text())["config"]
        assert set(plugin_config(real, "http://h:1", "t", {})) == {"sonicbus_url", "token"}


def test_agents_line_puts_sonicbus_first() -> None:
    assert agents_line(None) == "sonicbus,lastfm,spotify,deezer"
    assert agents_line("deezer, sonicbus ,lastfm") == "sonicbus,deezer,lastfm"


async def test_install_plugin_without_navidrome_writes_the_package(
    settings: Settings, tmp_path: Path
) -> None:
    built = tmp_path / "built.ndp"
    built.write_bytes(package_bytes(TEMPLATE, WASM))
    folder = tmp_path / "plugins"
    args = ("navidrome", "install-plugin", "--sonicbus-url", "http://192.168.1.20:9002",
            "--package", str(built), "--plugin-folder", str(folder), "--client-token", "s3cret",
            "--config", "timeout_ms=2500", "--agents", "lastfm")  # fmt: skip
    done = await sonicbus(settings, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(folder / "sonicbus.ndp") as z:
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["permissions"]["http"]["requiredHosts"] == ["192.168.1.20"]
    assert 'Agents = "sonicbus,lastfm"' in done.stdout and "restart" in done.stdout
    assert '"timeout_ms": 2500' in done.stdout and "s3cret" not in done.stdout
    again = await sonicbus(settings, *args[:-6], "--config", "colour=red")
    assert again.returncode != 0 and "colour" in again.stdout
