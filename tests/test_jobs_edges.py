"""Jobs from the edges and through a crash: the HTTP API (start, refuse, follow, cancel,
schedules), the `sonicbus` commands, and a worker process killed mid-job (the job is taken
up by the next worker and completes once)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from pipeline.config import HttpSettings, Settings
from pipeline.http.app import create_app
from pipeline.job_settings import JobsSettings
from pipeline.jobs.client import JobFollow, make_request, publish_request
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.cli import cli_env, sonicbus, sonicbus_command
from tests.fixtures.jobs import all_job_events, fill_store, planted_library, running_worker
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(240)
TOKEN = "jobs-admin-token"


def api(settings: Settings) -> httpx.AsyncClient:
    settings = settings.model_copy(update={"http": HttpSettings(admin_token=TOKEN)})
    app = create_app(settings, runtime=SimpleNamespace())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60,
                             headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip


async def test_jobs_over_http_and_the_command_line(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = base_settings(home=tmp_path, jobs=JobsSettings())
    settings.jobs.clustering.m3u_dir = tmp_path / "playlists"
    await ensure_topics(settings.kafka, settings.topics)
    fill_store(lite_store, planted_library(groups=3, per_group=10).rows)
    async with api(settings) as client:
        anonymous = await client.post("/api/jobs", json={"kind": "cleaning"},
                                      headers={"Authorization": ""})  # fmt: skip
        assert anonymous.status_code in (401, 403)
        queued = await client.post("/api/jobs", json={"kind": "cleaning", "wait_s": 1})
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        bad = await client.post("/api/jobs", json={"kind": "clustering", "params": {"runz": 1}})
        assert bad.status_code == 422 and "unknown clustering params" in bad.json()["detail"]
        cron = await client.put("/api/schedules", json=[{"name": "n", "kind": "scan",
                                                         "cron": "99 * * * *"}])  # fmt: skip
        assert cron.status_code == 422 and "invalid cron expression" in cron.text
        put = await client.put("/api/schedules", json=[
            {"name": "nightly", "kind": "clustering", "cron": "0 3 * * *", "params": {"runs": 50}}
        ])  # fmt: skip
        assert put.status_code == 200, put.text
        assert [(v["schedule"]["name"], v["source"]) for v in put.json()] == [("nightly", "api")]

        async with running_worker(settings, lite_store):
            params = {"runs": 5000, "min_playlist_size": 3}
            started = await client.post("/api/jobs", json={"kind": "clustering", "params": params})
            assert started.status_code == 202 and started.json()["status"] == "accepted"
            job_id = started.json()["job_id"]
            refused = await client.post("/api/jobs", json={"kind": "clustering"})
            assert refused.status_code == 409 and job_id in refused.json()["detail"]
            listed = await client.get("/api/jobs")
            assert job_id in [j["job_id"] for j in listed.json()]
            cancel = await client.post(f"/api/jobs/{job_id}/cancel")
            assert cancel.status_code == 202
            for _ in range(60):
                state = (await client.get(f"/api/jobs/{job_id}")).json()
                if state["status"] == "cancelled":
                    break
                await asyncio.sleep(0.5)
            assert state["status"] == "cancelled"
            again = await client.post(f"/api/jobs/{job_id}/cancel")
            assert again.status_code == 409 and "already ended: cancelled" in again.json()["detail"]
            assert (await client.get("/api/jobs/nope")).status_code == 404

            # The command line: a job followed to its end (no track published yet, so every
            # row looks orphaned: the safety limit holds); bad params exit 2.
            cleaned = await sonicbus(settings, "clean", "--wait")
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            assert "done" in cleaned.stdout and "over the safety limit" in cleaned.stdout
            assert "musicnn: 30 rows to remove of 30" in cleaned.stdout
            wrong = await sonicbus(settings, "cluster", "--param", "runz=3")
            assert wrong.returncode == 2 and "unknown clustering params" in wrong.stdout
            listing = await sonicbus(settings, "jobs", "list")
            assert listing.returncode == 0 and job_id in listing.stdout


async def test_a_worker_killed_mid_job_leaves_the_job_to_the_next_one_which_completes_it_once(
    kafka_broker: str, milvus_server: str, server_store: VectorStore, tmp_path: Path
) -> None:
    jobs = JobsSettings(stale_after_s=3, heartbeat_s=1, session_timeout_ms=6000)
    settings = base_settings(home=tmp_path, jobs=jobs)
    settings.jobs.clustering.m3u_dir = tmp_path / "playlists"
    settings.milvus.uri = milvus_server
    settings.milvus.collection_prefix = server_store.settings.collection_prefix
    await ensure_topics(settings.kafka, settings.topics)
    fill_store(server_store, planted_library(groups=3, per_group=10).rows)
    env = cli_env(settings, SONICBUS_MILVUS__URI=milvus_server,
                  SONICBUS_MILVUS__COLLECTION_PREFIX=settings.milvus.collection_prefix,
                  SONICBUS_JOBS__STALE_AFTER_S="3", SONICBUS_JOBS__HEARTBEAT_S="1",
                  SONICBUS_JOBS__SESSION_TIMEOUT_MS="6000",
                  SONICBUS_JOBS__CLUSTERING__M3U_DIR=str(tmp_path / "playlists"))  # fmt: skip
    process = subprocess.Popen(sonicbus_command("jobs", "worker"), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    request = make_request(settings, "clustering", {"runs": 120, "min_playlist_size": 3}, "test")
    try:
        async with JobFollow(settings, request.job_id) as follow:
            await publish_request(settings, request)
            while True:  # until the job is well under way in the worker process
                event = await follow.next(90)
                assert event is not None and not event.final, event
                if event.progress is not None and event.progress.done >= 3:
                    break
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            async with running_worker(settings, server_store):
                final = await follow.until_end(lambda e: None, timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert final is not None and final.status == "done", final
    assert final.attempt == 2 and "taken up" not in final.message
    events = [e for e in await all_job_events(settings) if e.job_id == request.job_id]
    assert [e.status for e in events].count("done") == 1
    assert [(e.status, e.attempt) for e in events if e.status == "accepted"] == [
        ("accepted", 1), ("accepted", 2)
    ]
    assert len({e.worker for e in events if e.status == "accepted"}) == 2
