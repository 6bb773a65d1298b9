"""`sonicbus ask`, `sonicbus playlist` and `sonicbus schemas asyncapi`, run as a user runs
them, against a live query service (playlists written to a real Navidrome:
tests/test_navidrome_playlists.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import cli
from tests.fixtures.library import Running

pytestmark = pytest.mark.timeout(120)


async def sonicbus(running: Running, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`sonicbus ARGS` against the running query service's broker and topics."""
    return await cli.sonicbus(running.settings, *args, timeout=90, **env)


async def test_ask_prints_a_table_or_json(running: Running) -> None:
    table = await sonicbus(running, "ask", "recommend", "--seed", "rock0", "--seed", "rock1:2",
                           "--max-per-artist", "1", "-n", "3")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "Rock Song" in table.stdout and "The Amps" in table.stdout
    assert table.stdout.count("rock album") == 3

    as_json = await sonicbus(running, "ask", "similar", "jazz0", "--walk", "-n", "4", "--json")
    assert as_json.returncode == 0, as_json.stderr
    reply = json.loads(as_json.stdout)
    assert reply["ok"] and len(reply["tracks"]) == 4
    assert all(t["track_id"].startswith("jazz") for t in reply["tracks"])

    failed = await sonicbus(running, "ask", "path", "arc0", "no-such-track", "--json")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "not_found"


async def test_ask_raw_sends_any_json_as_it_is(running: Running, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"type": "duplicates", "request_id": "cli-raw", "threshold": 0.02}')
    done = await sonicbus(running, "ask", "raw", str(request))
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["request_id"] == "cli-raw" and len(reply["pairs"]) == 1
    request.write_text('{"type": "similar", "request_id": "cli-bad"')
    bad = json.loads((await sonicbus(running, "ask", "raw", str(request))).stdout)
    assert bad["ok"] is False and "malformed JSON" in bad["error"]["message"]
    missing = await sonicbus(running, "ask", "raw", str(tmp_path / "no-such.json"))
    assert missing.returncode == 2 and "no such file" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout


async def test_playlist_needs_a_playlist_name(running: Running) -> None:
    """Writing to Navidrome against the real server: tests/test_navidrome_playlists.py."""
    unnamed = await sonicbus(running, "playlist", "similar", "jazz0")
    assert unnamed.returncode != 0 and "--to-navidrome" in unnamed.stderr + unnamed.stdout


async def test_the_asyncapi_document_comes_from_the_faststream_app(
    running: Running,
    tmp_path: Path,
) -> None:
    out = tmp_path / "asyncapi.json"
    done = await sonicbus(running, "schemas", "asyncapi", "--output", str(out))
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["asyncapi"].startswith("3.")
    channels = {c["address"] for c in document["channels"].values()}
    prefix = running.settings.topics.prefix
    assert channels == {f"{prefix}requests", f"{prefix}replies"}
    schemas = document["components"]["schemas"]
    assert {"RecommendRequest", "TextRequest", "PathRequest", "QueryReply", "ScoredTrack"} <= set(
        schemas
    )
    messages = document["components"]["messages"]
    assert all(m["correlationId"]["location"] == "$message.header#/correlation_id"
               for m in messages.values())  # fmt: skip


async def test_ask_without_a_reachable_broker_says_so(running: Running) -> None:
    down = await sonicbus(
        running, "ask", "similar", "rock1", "--timeout", "2",
        SONICBUS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:1",
    )  # fmt: skip
    assert down.returncode == 1, down.stdout + down.stderr
    assert "cannot reach Kafka at 127.0.0.1:1" in down.stdout
    assert "Traceback" not in down.stdout + down.stderr
