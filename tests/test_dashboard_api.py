"""The dashboard's API (/api/*), on the real broker and a Milvus Lite file held by the service.

The operator's story: halfway through a library (tests/fixtures/operations.py) the
overview shows the groups exactly as `sonicbus lag --json` does, the backlog as rows
of tracks known with a rate and an ETA, the collections, the dead letters by stage;
the live stream keeps sending it; a dead letter retried from the page goes back to
where it failed; bad input and a broker that is down get clear answers, never a
broken page.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from pipeline.config import HttpSettings, KafkaSettings, OpsSettings, Settings
from pipeline.http.app import create_app
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.overview import OverviewBuilder
from pipeline.schemas import TrackEvent
from pipeline.store import VectorStore
from pipeline.supervisor import ComponentState
from tests.fixtures.bus import drain
from tests.fixtures.cli import sonicbus
from tests.fixtures.operations import Halfway, embedded_recently, halfway
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(120)
TOKEN = "dashboard-admin"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def story_settings() -> Settings:
    return base_settings(
        http=HttpSettings(admin_token=TOKEN, max_body_bytes=64_000),
        ops=OpsSettings(sample_interval_s=1.0, rate_window_s=600),
    )


@pytest.fixture(scope="module")
async def story(
    kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Halfway, httpx.AsyncClient, str]]:
    """The halfway pipeline, served over real HTTP (uvicorn) by the app `sonicbus up` runs."""
    folder = tmp_path_factory.mktemp("dashboard")
    told = await halfway(story_settings(), folder / "milvus.db")
    store = VectorStore(told.settings.milvus, str(told.lite))
    runtime = OpsRuntime(told.settings, store=store)
    await runtime.start()
    port = free_port()
    app = create_app(told.settings, runtime, web=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.05)
        try:
            yield told, client, base
        finally:
            server.should_exit = True
            await serving
            await runtime.stop()
            store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PARTITION_FIGURES = ("topic", "partition", "committed", "log_start", "log_end", "lag", "pending")


def figures(group: dict) -> dict:
    """What must be equal between two looks a moment apart (ages and rates move on)."""
    return {
        "group": group["group"], "state": group["state"], "lag": group["lag"],
        "pending": group["pending"], "members": group["members"],
        "partitions": [{k: p[k] for k in PARTITION_FIGURES} for p in group["partitions"]],
    }  # fmt: skip


async def test_the_overview_shows_the_pipeline_as_the_cli_does(story) -> None:
    told, client, _ = story
    await embedded_recently(told.settings)
    answer = await client.get("/api/overview")
    assert answer.status_code == 200, answer.text
    overview = answer.json()
    assert set(overview) >= {"at", "bus", "milvus", "services", "groups", "backlog", "collections",
                             "models", "dead_letters", "replays", "embedding"}  # fmt: skip
    assert overview["bus"]["ok"] and overview["milvus"]["ok"], overview

    # The embedder's group, as `sonicbus lag --json` prints it from another process.
    cli = await sonicbus(told.settings, "lag", "--json", SONICBUS_OPS__RATE_WINDOW_S="600")
    assert cli.returncode == 0, cli.stderr
    printed = {g["group"]: g for g in json.loads(cli.stdout)["groups"]}
    shown = {g["group"]: g for g in overview["groups"]}
    assert figures(shown[told.embedder]) == figures(printed[told.embedder])
    assert shown[told.embedder]["pending"] == told.pending
    for view in (shown, printed):  # five embeddings over 24 s: about 0.17 tracks/s
        assert 0.05 < view[told.embedder]["throughput"] < 0.5
        assert view[told.embedder]["eta_s"] > 0
    api = (await client.get("/api/lag")).json()
    assert figures(api["groups"][0]) == figures(printed[told.embedder])
    one = (await client.get(f"/api/lag/{told.embedder}")).json()
    assert [g["group"] for g in one["groups"]] == [told.embedder]

    backlog = {b["model"]: b for b in overview["backlog"]}["musicnn"]
    assert (backlog["done"], backlog["total"]) == (told.rows, told.live_tracks)
    assert backlog["percent"] == round(100 * told.rows / told.live_tracks, 1)
    assert backlog["rate_per_s"] > 0 and backlog["eta_s"] > 0
    collection = {c["collection"]: c for c in overview["collections"]}[told.collection]
    assert collection == {"model": "musicnn", "collection": told.collection, "rows": told.rows,
                          "dim": 8, "role": "active"}  # fmt: skip
    assert overview["models"] == [
        {"name": "musicnn", "state": "not loaded", "detail": "no embedder running"}
    ]
    services = {s["name"]: s for s in overview["services"]}
    assert services["embed-musicnn"]["state"] == "stopped"
    assert services["http"]["state"] == "running"

    letters = overview["dead_letters"]
    assert letters["total"] == 3 and letters["by_stage"] == told.letters_by_stage
    newest = letters["latest"][0]
    assert (newest["stage"], newest["track_id"], newest["dlq_offset"]) == ("query", "r1", 2)
    assert "NoBackendError: cannot decode t6" in letters["latest"][1]["error"]
    assert letters["latest"][1]["topic"] == told.settings.topics.tracks
    assert overview["replays"] == [] and overview["embedding"]["paused"] is False

    status = (await client.get("/api/status")).json()
    assert {c["name"]: c["rows"] for c in status["collections"]}[told.collection] == told.rows


async def test_the_event_stream_keeps_sending_the_overview(story) -> None:
    _, client, _ = story
    seen: list[dict] = []
    async with client.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "overview":
                seen.append(json.loads(line.removeprefix("data: ")))
                if len(seen) == 2:
                    break
    assert [o["bus"]["ok"] for o in seen] == [True, True]
    assert seen[0]["at"] < seen[1]["at"]
    assert seen[1]["backlog"][0]["model"] == "musicnn"


async def test_a_dead_letter_retried_from_the_page_is_republished(story) -> None:
    told, client, _ = story
    letters = (await client.get("/api/dead-letters", params={"stage": "audio"})).json()
    assert letters["total"] == 2 and [d["track_id"] for d in letters["latest"]] == ["t6", "t5"]

    refused = await client.post("/api/dead-letters/retry", json={"stage": "audio"})
    assert refused.status_code == 401  # writing needs the admin token (or a page session)
    cut = await client.post("/api/dead-letters/retry", json={"stage": "query"}, headers=AUTH)
    assert cut.status_code == 422 and "truncated" in cut.text

    answer = await client.post(
        "/api/dead-letters/retry", json={"stage": "audio", "limit": 1}, headers=AUTH
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"retried": 1, "skipped": []}
    tracks = await drain(told.settings, told.settings.topics.tracks, 11)  # 10 written, 1 back
    back = [r for r in tracks if dict(r.headers or []).get("sonicbus-retry-of")]
    assert [r.key for r in back] == [b"t6"]
    assert TrackEvent.from_bytes(back[0].value).path == "/music/t6.flac"


async def test_bad_input_gets_clear_answers(story) -> None:
    _, client, _ = story
    cases = [
        ("GET", "/api/lag/nobody-reads-this", None, 404, "does not exist"),
        ("GET", "/api/dead-letters?stage=teleport", None, 404, "unknown stage"),
        ("GET", "/api/dead-letters?limit=-1", None, 422, "limit"),
        ("GET", "/reembed/no-such-model", None, 404, "unknown model"),
        ("POST", "/api/dead-letters/retry", b"{not json", 422, "JSON"),
        ("POST", "/api/dead-letters/retry", b'{"stage": "audio", "offsets": [1]}', 422, "offsets"),
        ("POST", "/api/dead-letters/retry", b'{"limit": 0}', 422, "limit"),
        ("POST", "/api/dead-letters/retry", b'{"stage": "teleport"}', 404, "unknown stage"),
        ("POST", "/api/dead-letters/retry", b"x" * 10_000_000, 413, "too large"),
    ]
    for method, path, body, status, words in cases:
        headers = {**AUTH, "content-type": "application/json"}
        answer = await client.request(method, path, content=body, headers=headers)
        assert answer.status_code == status, (path, answer.text)
        assert words in answer.text, (path, answer.text)


async def test_with_the_bus_down_the_overview_still_answers_and_says_why(tmp_path: Path) -> None:
    settings = base_settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    store = VectorStore(settings.milvus, str(tmp_path / "milvus.db"))
    runtime = OpsRuntime(settings, store=store)  # not started: the bus is not there
    app = create_app(settings, runtime, web=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as client:
            answer = await client.get("/api/overview")
    finally:
        store.close()
    assert answer.status_code == 200, answer.text
    overview = answer.json()
    assert overview["bus"]["ok"] is False and "127.0.0.1:1" in overview["bus"]["detail"]
    assert overview["milvus"]["ok"] is True and overview["groups"] == []
    assert overview["dead_letters"]["ok"] is False
    assert {s["state"] for s in overview["services"] if s["name"] != "http"} == {"unknown"}


async def test_under_up_the_services_are_the_supervised_components(tmp_path: Path) -> None:
    settings = base_settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"))
    states = {
        "watcher": ComponentState("watcher", state="running"),
        "embed-musicnn": ComponentState(
            "embed-musicnn", state="restarting", restarts=2, last_error="RuntimeError: no audio"
        ),
        "http": ComponentState("http", state="starting"),
    }
    store = VectorStore(settings.milvus, str(tmp_path / "milvus.db"))
    try:
        overview = await OverviewBuilder(settings, store, components=lambda: states).build()
    finally:
        store.close()
    assert [s.model_dump() for s in overview.services] == [
        {"name": "watcher", "state": "running", "detail": ""},
        {"name": "embed-musicnn", "state": "restarting",
         "detail": "2 restart(s): RuntimeError: no audio"},
        {"name": "http", "state": "running", "detail": "starting"},
    ]  # fmt: skip
    assert overview.models[0].model_dump() == {
        "name": "musicnn", "state": "failed", "detail": "RuntimeError: no audio"
    }  # fmt: skip
