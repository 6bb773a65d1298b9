"""A second terminal while the pipeline runs and holds Milvus Lite.

The user's story: `sonicbus serve` (as `sonicbus up` does) holds the Milvus Lite
file and serves the HTTP API; from another terminal `sonicbus status` and
`reembed --status` still show collections, row counts and progress, by asking the
running process, and say so; one-shot `lag` shows a throughput and an ETA; `lag
--watch` into a pipe prints plain lines; everything fits an 80-column terminal.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.config import MilvusSettings
from pipeline.store import VectorStore
from tests.fixtures.cli import cli_env, sonicbus, sonicbus_command
from tests.fixtures.navidrome import free_port
from tests.fixtures.operations import embedded_recently, halfway
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)
TOKEN = "second-terminal-admin"


@pytest.fixture(scope="module")
def held(kafka_broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The halfway pipeline, its Milvus Lite file held by a running `sonicbus serve`."""
    folder = tmp_path_factory.mktemp("second-terminal")
    told = asyncio.run(halfway(base_settings(), folder / "milvus.db"))
    env = {
        "SONICBUS_MILVUS__URI": str(told.lite),
        "SONICBUS_HTTP__PORT": str(free_port(39640)),
        "SONICBUS_HTTP__ADMIN_TOKEN": TOKEN,
        "SONICBUS_OPS__RATE_WINDOW_S": "600",
        "SONICBUS_LOG_LEVEL": "WARNING",
    }
    log = folder / "serve.log"  # a file, not a pipe nobody reads: a full pipe blocks the server
    with log.open("w") as output:
        server = subprocess.Popen(
            sonicbus_command("serve"), env=cli_env(told.settings, **env),
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_serving(server, int(env["SONICBUS_HTTP__PORT"]), log)
        yield told, env
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_serving(server: subprocess.Popen, port: int, log: Path) -> None:
    """Until /healthz answers with Milvus open (the service then holds the Lite file)."""
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log.read_text()[-3000:]
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json()
            if health["milvus"]["reachable"]:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)


def narrow(output: str) -> list[str]:
    """Lines longer than an 80-column terminal."""
    return [line for line in output.splitlines() if len(line) > 80]


async def test_status_asks_the_running_process_for_collections_and_rows(held) -> None:
    told, env = held
    result = await sonicbus(told.settings, "status", **env, COLUMNS="80")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    flat = re.sub(r"\s+", " ", out)  # the note wraps at 80 columns
    assert "is held by a running sonicbus" in flat and "/api/status" in flat
    row = next(line for line in out.splitlines() if "active: musicnn" in line)
    assert re.search(rf"{told.collection}\s*│\s*{told.rows}\s*│\s*active: musicnn", row), row
    assert "unreachable" not in out
    group = next(line for line in out.splitlines() if "│ Empty" in line)  # the embedder's
    rate, eta = [cell.strip() for cell in group.split("│")[-3:-1]]
    assert re.fullmatch(r"[\d.]+/s", rate) and float(rate[:-2]) > 0, group
    assert re.fullmatch(r"\d+ s|\d+:\d\d:\d\d", eta), group
    assert narrow(out) == []

    as_json = await sonicbus(told.settings, "status", "--json", **env)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)  # stdout stays JSON; the note goes to stderr
    assert {c["name"]: c["rows"] for c in report["collections"]}[told.collection] == told.rows
    assert "held by a running sonicbus" in as_json.stderr


async def test_lag_shows_throughput_and_eta_in_one_look(held) -> None:
    told, env = held
    await embedded_recently(told.settings)
    result = await sonicbus(told.settings, "lag", **env, COLUMNS="80")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    title = re.sub(r"\s+", " ", out[out.index(told.embedder) :].split("┏")[0])
    rate = re.search(r"pending 3 · oldest [^·]+ · ([\d.]+)/s · ETA (\d[\d:]*)", title)
    assert rate, title
    assert float(rate[1]) > 0 and rate[2] != "0"
    assert "CURRENT" in out and "PENDING" in out
    assert narrow(out) == []


def test_lag_watch_into_a_pipe_prints_plain_lines(held) -> None:
    told, env = held
    watch = subprocess.Popen(
        sonicbus_command("lag", "--watch", "--interval", "0.5"),
        env=cli_env(told.settings, **env, COLUMNS="80"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = [watch.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
    finally:
        watch.terminate()
        watch.wait(timeout=30)
    for line in lines:
        assert "\x1b" not in line and line.endswith("\n"), repr(line)
        assert f" {told.embedder} state=Empty members=0 lag=3 pending=3 " in line, line
        assert re.search(r"throughput=[\d.]+/s eta=\d+s$", line.strip()), line


async def test_reembed_status_asks_the_running_process(held) -> None:
    told, env = held
    result = await sonicbus(told.settings, "reembed", "--model", "musicnn", "--status", **env)
    flat = re.sub(r"\s+", " ", result.stdout)
    assert result.returncode == 1 and "no replay of musicnn was ever started" in flat
    assert "answered by the running sonicbus" in flat

    port = env["SONICBUS_HTTP__PORT"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        started = await client.post(
            "/reembed", json={"model": "musicnn", "fresh": True},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip
    assert started.status_code == 202, started.text
    result = await sonicbus(
        told.settings, "reembed", "--model", "musicnn", "--status", **env, COLUMNS="80"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    flat = re.sub(r"\s+", " ", out)
    assert "is held by a running sonicbus" in flat and "/reembed/musicnn" in flat
    assert f"replay {started.json()['id']} of musicnn: running" in out
    assert re.search(r"processed\s*│\s*0/\d+ \(0\.0%\)", out), out
    assert f"active collection │ {told.collection}" in flat
    assert narrow(out) == []


def test_a_service_of_another_database_is_not_taken_for_ours(held, tmp_path: Path) -> None:
    told, env = held
    mine = VectorStore(MilvusSettings(), str(tmp_path / "mine.db"))
    mine.ping()  # this process holds another Lite file; the service on the port has its own
    try:
        result = subprocess.run(
            sonicbus_command("status"),
            env=cli_env(told.settings, **{**env, "SONICBUS_MILVUS__URI": mine.uri}),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        mine.close()
    assert result.returncode == 1, result.stdout
    out = re.sub(r"\s+", " ", result.stdout)
    assert "serves another database" in out and str(told.lite) in out
    assert "unreachable" in out and "Traceback" not in out
