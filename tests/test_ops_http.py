"""`sonicbus serve`: every endpoint, on the real broker with a running query service.

The operator's and the older client's stories: health says what is up and
which consumers run; /metrics has lag, throughput, dead letters and query
latencies; a client written for the older recommender API gets its answer
through Kafka; re-embeds are started, followed, cancelled, resumed and
discarded only with the admin token; bad bodies get clear 4xx answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pipeline.config import HttpSettings, OpsSettings
from pipeline.http.app import create_app
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.lag import LagReader
from pipeline.schemas import DeadLetter, EmbeddingEvent, TrackEvent
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.library import Running

pytestmark = pytest.mark.timeout(180)
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 120  # seconds a replay start waits for the group to be empty


@pytest.fixture(scope="module")
async def http(running: Running) -> AsyncIterator[tuple[httpx.AsyncClient, OpsRuntime]]:
    settings = running.settings.model_copy(
        update={
            "http": HttpSettings(admin_token=TOKEN, reply_timeout_s=20, max_body_bytes=64_000),
            "ops": OpsSettings(sample_interval_s=0.5, replay_check_s=0.5),
        }
    )
    runtime = OpsRuntime(settings, store=running.store)
    await runtime.start()
    await asyncio.wait_for(runtime.follower.ready.wait(), 30)
    app = create_app(settings, runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client, runtime
    await runtime.stop()


async def test_health_names_broker_milvus_and_the_consumers(http, running) -> None:
    client, runtime = http
    await asyncio.wait_for(runtime.sampled.wait(), 30)
    answer = await client.get("/healthz")
    assert answer.status_code == 200
    health = answer.json()
    assert health["broker"]["reachable"] and health["milvus"]["reachable"]
    consumers = {c["group"]: c for c in health["consumers"]}
    group = running.settings.topics.group
    assert consumers[group("query")]["members"] == 1  # the query service runs
    assert consumers[group("embed-musicnn")]["members"] == 0  # no embedder in this story
    assert health["status"] == "degraded"


async def test_the_older_recommendation_api_is_answered_through_kafka(http, running) -> None:
    client, _ = http
    body = {"user_id": "u1", "user_name": "alice", "limit": 5,
            "seeds": [{"track_id": "rock1", "weight": 1.0, "source": "recent"}],
            "models": ["musicnn"], "exclude_track_ids": ["rock2"]}  # fmt: skip
    answer = await client.post("/recommendations/custom", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    ids = [t["track_id"] for t in result["tracks"]]
    assert len(ids) == 5 and "rock2" not in ids and "rock1" not in ids
    assert set(ids) <= set(running.library.cluster("rock")) | {"rock0-copy"}
    assert result["request_id"].startswith("http-")
    assert result["tracks"][0]["models"] == ["musicnn"] and result["tracks"][0]["artist"]
    # The older service's own path answers the same way.
    again = await client.post("/playlist/custom", json=body)
    assert again.status_code == 200 and len(again.json()["tracks"]) == 5

    text = await client.post("/recommendations/text", json={"text": "heavy metal", "limit": 3})
    assert text.status_code == 200, text.text
    assert {t["track_id"] for t in text.json()["tracks"]} <= set(running.library.cluster("metal"))

    # The query service measured each answer; the bridge's requests show in /metrics (the
    # runtime reads the replies as they come: wait for both series, in whatever order).
    wanted = [f'sonicbus_query_latency_seconds_count{{ok="true",type="{kind}"}}'
              for kind in ("recommend", "text")]  # fmt: skip
    async with asyncio.timeout(20):
        while True:
            metrics = (await client.get("/metrics")).text
            if all(series in metrics for series in wanted):
                break
            await asyncio.sleep(0.2)


async def test_bad_requests_get_clear_4xx_answers(http) -> None:
    client, _ = http
    cases = [
        ("/recommendations/custom", b"{not json", 422, "JSON"),
        ("/recommendations/teleport", b'{"seeds": [{"track_id": "rock1"}]}', 422, "unknown mode"),
        ("/recommendations/custom", b"{}", 422, "needs seeds"),
        ("/recommendations/recent", b"{}", 422, "needs user_id"),
        ("/recommendations/custom", b'{"limit": 0, "seeds": [{"track_id": "a"}]}', 422, "limit"),
        ("/recommendations/text", b"{}", 422, "needs `text`"),
        ("/recommendations/custom", b'{"seeds": [{"track_id": "nope"}]}', 404, "not_found"),
        ("/embed_text", b'{"text": ""}', 422, "text"),
        ("/embed_text", b'{"text": "calm", "model": "mert"}', 422, "no text encoder"),
        ("/embed_text", b'{"text": "x", "model": "../etc"}', 422, "model"),
        ("/recommendations/custom", b"[" + b"1," * 40_000 + b"1]", 413, "too large"),
    ]
    for path, body, status, words in cases:
        answer = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, (path, body[:60], answer.text)
        assert words in answer.text, (path, answer.text)


async def test_embed_text_gives_musicnn_tag_weights(http) -> None:
    client, _ = http
    answer = await client.post("/embed_text", json={"text": "heavy metal guitar riffs"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["model"] == "musicnn" and result["space"] == "tags"
    assert result["dimension"] == 100 == len(result["embedding"])  # MSD + MTT tags
    assert abs(sum(result["embedding"]) - 1.0) < 1e-3 and result["is_stub"] is False
    assert (
        "metal" in [tag for tag, _ in result["tags"]][:3]
        or "heavy metal" in [tag for tag, _ in result["tags"]][:3]
    )


async def publish_tracks(running: Running, count: int) -> None:
    producer = running.service.producer
    for i in range(count):
        event = TrackEvent(track_id=f"h{i}", path=f"/music/h{i}.flac")
        await producer.send_and_wait(
            running.settings.topics.tracks, event.to_bytes(), key=event.track_id.encode()
        )


async def test_reembed_endpoints_need_the_token_and_follow_a_replay(http, running) -> None:
    client, _ = http
    await publish_tracks(running, 6)
    for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                            ({"Authorization": "Basic czNjcmV0"}, 401)):  # fmt: skip
        answer = await client.post("/reembed", json={"model": "musicnn"}, headers=headers)
        assert answer.status_code == status and "bearer token" in answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/reembed/musicnn")).status_code == 404  # none started yet

    start = {"model": "musicnn", "fresh": True, "wait_s": WAIT}
    answer = await client.post("/reembed", json=start, headers=AUTH)
    assert answer.status_code == 202, answer.text
    replay = answer.json()
    assert replay["status"] == "running" and replay["collection"].startswith("sonicbus_musicnn_")
    assert sum(replay["end"].values()) - sum(replay["start"].values()) == 6

    progress = (await client.get("/reembed/musicnn")).json()
    assert (progress["processed"], progress["total"], progress["members"]) == (0, 6, 0)
    assert progress["active_collection"] == "sonicbus_musicnn"  # queries keep the old one

    again = await client.post("/reembed", json={"model": "musicnn"}, headers=AUTH)
    assert again.status_code == 409 and "already running" in again.text
    assert (await client.post("/reembed", json={"model": "nope"}, headers=AUTH)).status_code == 404
    bad = await client.post("/reembed", json={"model": "musicnn", "wait_s": -1}, headers=AUTH)
    assert bad.status_code == 422

    cancelled = await client.post("/reembed/musicnn/cancel", headers=AUTH)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await client.post("/reembed/musicnn/cancel", headers=AUTH)).status_code == 409
    resumed = await client.post("/reembed/musicnn/resume", headers=AUTH)
    assert resumed.json()["status"] == "running"
    assert (await client.post("/reembed/musicnn/discard", headers=AUTH)).status_code == 409
    await client.post("/reembed/musicnn/cancel", headers=AUTH)
    discarded = await client.post("/reembed/musicnn/discard", headers=AUTH)
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"

    # Discarding skipped the rest of the replay: the group is back where the log ended.
    async with LagReader(running.settings.kafka) as reader:
        embedder = running.settings.topics.group("embed-musicnn")
        report = await reader.describe(embedder, prefix=running.settings.topics.tracks)
    assert report.pending_on(running.settings.topics.tracks) == 0
    state = running.store.model_state("musicnn", fresh=True)
    assert state.active == state.target == "sonicbus_musicnn"

    # The older batch job is the same replay under its old names.
    assert (
        await client.post("/batch/start", json={"models": ["nope"]}, headers=AUTH)
    ).status_code == 404
    assert (await client.post("/batch/start", json={})).status_code == 401
    await publish_tracks(running, 2)
    job = {"models": ["musicnn"], "clearExisting": False, "wait_s": WAIT}
    started = await client.post("/batch/start", json=job, headers=AUTH)
    assert started.status_code == 200 and started.json()["status"] == "started"
    progress = (await client.get("/batch/progress")).json()
    assert progress["status"] == "running" and progress["total_tracks"] == 8
    assert (await client.post("/batch/cancel", headers=AUTH)).json()["status"] == "cancelling"
    assert (await client.get("/batch/progress")).json()["status"] == "cancelled"
    assert (await client.post("/batch/cancel", headers=AUTH)).status_code == 404
    assert (await client.post("/reembed/musicnn/discard", headers=AUTH)).status_code == 200


async def test_metrics_export_lag_throughput_and_dead_letters(http, running) -> None:
    client, runtime = http
    await runtime.sample()
    text = (await client.get("/metrics")).text
    tracks, group = running.settings.topics.tracks, running.settings.topics.group
    embedder, query = group("embed-musicnn"), group("query")
    assert (
        f'sonicbus_consumer_lag_records{{group="{embedder}",partition="0",topic="{tracks}"}}'
        in text
    )
    assert f'sonicbus_consumer_group_members{{group="{query}",state="Stable"}} 1.0' in text
    assert "sonicbus_dlq_records" in text and "sonicbus_collection_rows" in text
    assert 'sonicbus_model_loaded{model="musicnn",state="not running"} 0.0' in text

    # Every series the sample Grafana dashboard plots is exported (once something happened).
    runtime.metrics.observe_embedding(
        EmbeddingEvent(track_id="x", model="musicnn", model_version="v", status="embedded",
                       collection="c", timings={"decode_ms": 12, "embed_ms": 80, "upsert_ms": 3})
    )  # fmt: skip
    runtime.metrics.observe_dead_letter(
        DeadLetter(key="x", stage="audio", error_class="E", message="m", consumer_group="g")
    )
    text = (await client.get("/metrics")).text
    assert 'sonicbus_embed_stage_seconds_bucket{le="0.1",model="musicnn",stage="embed"} 1.0' in text
    dashboard = Path(__file__).parent.parent / "infra" / "grafana" / "sonicbus-dashboard.json"
    exprs = [t["expr"] for p in json.loads(dashboard.read_text())["panels"] for t in p["targets"]]
    names = {name for expr in exprs for name in re.findall(r"sonicbus_[a-z_]+", expr)}
    assert len(names) >= 12
    assert sorted(n for n in names if n not in text) == []


async def test_openapi_is_published_and_admin_is_off_without_a_token(running) -> None:
    settings = running.settings.model_copy(update={"http": HttpSettings(admin_token=None)})
    runtime = OpsRuntime(settings, store=running.store)  # not started: no call needs it here
    app = create_app(settings, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        off = await c.post("/reembed", json={"model": "musicnn"}, headers=AUTH)
        assert off.status_code == 403 and "admin_token" in off.text
        schema = (await c.get("/openapi.json")).json()
    paths = set(schema["paths"])
    assert {"/healthz", "/metrics", "/reembed", "/reembed/{model}", "/reembed/{model}/cancel",
            "/recommendations/{mode}", "/embed_text", "/batch/start", "/batch/progress",
            "/batch/cancel"} <= paths  # fmt: skip
    assert schema["paths"]["/reembed"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "RecommendationRequest" in schema["components"]["schemas"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_sonicbus_serve_runs_the_service(running, tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(running.settings, SONICBUS_HOME=str(tmp_path), SONICBUS_LOG_LEVEL="WARNING")
    server = subprocess.Popen(
        sonicbus_command("serve", "--port", str(port)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    health = await client.get("/healthz")
                    break
                except httpx.ConnectError:
                    assert server.poll() is None, server.stdout.read().decode()[-2000:]
                    assert time.monotonic() < deadline, "sonicbus serve did not start"
                    await asyncio.sleep(0.3)
            assert health.status_code == 200 and health.json()["broker"]["reachable"]
            schema = (await client.get("/openapi.json")).json()
            assert schema["info"]["title"] == "sonicbus"
            assert json.loads(json.dumps(schema))["paths"]["/healthz"]
    finally:
        server.terminate()
        server.wait(timeout=30)
