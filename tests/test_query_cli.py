"""`sonicbus ask`, `sonicbus playlist --to-navidrome` and `sonicbus schemas asyncapi`, run as a
user runs them, against a live query service and a Subsonic server that records playlists."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures import cli
from tests.fixtures.library import Running
from tests.fixtures.navidrome_fake import PlaylistServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def navidrome() -> Iterator[PlaylistServer]:
    server = PlaylistServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


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


async def test_playlist_to_navidrome_creates_then_refills_the_playlist(
    running: Running,
    navidrome: PlaylistServer,
) -> None:
    env = {"SONICBUS_NAVIDROME__URL": navidrome.url, "SONICBUS_NAVIDROME__USER": "alice",
           "SONICBUS_NAVIDROME__PASSWORD": "secret"}  # fmt: skip
    first = await sonicbus(running, "playlist", "similar", "jazz0", "-n", "5",
                           "--to-navidrome", "Like jazz0", **env)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created Navidrome playlist 'Like jazz0'" in first.stdout
    created = [c for c in navidrome.calls if c["endpoint"] == ["createPlaylist"]]
    assert created[0]["name"] == ["Like jazz0"] and len(created[0]["songId"]) == 5
    assert all(song.startswith("jazz") for song in created[0]["songId"])

    again = await sonicbus(running, "playlist", "text", "calm ambient drones", "-n", "3",
                           "--to-navidrome", "Like jazz0", **env)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "replaced the songs of Navidrome playlist 'Like jazz0' (pl1): 3 songs" in again.stdout
    refill = [c for c in navidrome.calls if c["endpoint"] == ["createPlaylist"]][-1]
    assert refill["playlistId"] == ["pl1"] and len(refill["songId"]) == 3
    assert len(navidrome.playlists) == 1

    unnamed = await sonicbus(running, "playlist", "similar", "jazz0", **env)
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
