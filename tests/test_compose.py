"""docker-compose.yml is a valid Compose file with a service per sonicbus process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from models.registry import available_models
from pipeline.cli import app

REPO = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    """Docker Compose v2, as a docker plugin or a standalone binary, if installed."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    # The standalone v2 binary; the old Python `docker-compose` (v1) predates the spec.
    path = shutil.which("docker-compose-v2")
    return [path] if path else None


def test_compose_file_is_accepted_by_docker_compose() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed on this machine")
    result = subprocess.run(
        [*command, "-f", str(REPO / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {"kafka", "milvus", "etcd", "minio", "topics", "watcher", "embed-musicnn"} <= services


def sonicbus_services() -> dict[str, list[str]]:
    """Each service that runs the sonicbus image, with its command (anchors merged)."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if service.get("image") == "sonicbus:latest"
    }


def test_every_sonicbus_process_has_a_service_with_a_real_command() -> None:
    """Without Docker: the commands are sonicbus commands and options that exist."""
    services = sonicbus_services()
    expected = {"topics", "watcher", "navidrome-scan", "query", "http", "jobs", "scheduler"}
    expected |= {f"embed-{model}" for model in available_models()}
    assert expected <= set(services)
    runner = CliRunner()
    for name, command in services.items():
        assert command[0] == "sonicbus", name
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, (name, result.output)
        if "--model" in command:
            assert command[command.index("--model") + 1] in available_models(), name
