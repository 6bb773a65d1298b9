"""The dashboard in a real browser: Debian's chromium, driven by Playwright, on the real stack.

An operator's afternoon, one story after the other on one running stack (the real
broker, the real Milvus server, MusiCNN embedding generated songs, the HTTP service
on loopback): a broken file is dead-lettered, fixed, and retried from the page; the
page pauses embedding, new tracks wait (no new rows for 10 s) while the page shows the
same lag as `sonicbus lag --json`, and resuming finishes the backlog to 100 %. Then the
credentials: on loopback the page needs no login while other sites cannot act; bound
off loopback, anonymous requests get 401 and a Navidrome user (of the real Navidrome)
logs in. Screenshots at desktop and phone width go to $SONICBUS_TEST_HOME/screenshots.

The browser and the HTTP service come from tests/fixtures/browser.py (Debian's chromium,
never Playwright's own download, run with --no-sandbox as the tests run as root).
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipeline import infra
from pipeline.bus import make_producer
from pipeline.config import (
    EmbedSettings,
    HttpSettings,
    KafkaSettings,
    MilvusSettings,
    OpsSettings,
    Settings,
)
from pipeline.consumers.embedder import run_embedder
from pipeline.http.app import create_app
from pipeline.http.runtime import OpsRuntime
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.browser import DESKTOP, PHONE, SCREENSHOTS, WAIT_MS, expect, serve
from tests.fixtures.bus import drain, end_offsets, publish
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome import NavidromeServer, free_port_pair
from tests.fixtures.services import MILVUS_PORT, base_settings, wait_for

pytestmark = pytest.mark.timeout(300)


@dataclass
class Stack:
    settings: Settings
    store: VectorStore
    url: str
    music: Path
    producer: Any

    @property
    def collection(self) -> str:
        return self.store.collection_name("musicnn")

    def rows(self) -> int:
        has = self.store.has_collection(self.collection)
        return self.store.count(self.collection) if has else 0

    async def add_songs(self, names: list[str], seed: int) -> None:
        events = []
        for i, name in enumerate(names):
            path = self.music / f"{name}.flac"
            write_song(path, seconds=3, seed=seed + i)
            events.append(track_event(path, name))
        await publish(self.producer, self.settings, events)


@pytest.fixture(scope="module")
async def stack(
    kafka_broker: str, milvus_server: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """MusiCNN embedding into the Milvus server and the HTTP service on loopback."""
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    settings = base_settings(
        milvus=MilvusSettings(local_port=MILVUS_PORT, collection_prefix=prefix),
        embed=EmbedSettings(batch_tracks=2, idle_unload_s=0, device="cpu"),
        ops=OpsSettings(sample_interval_s=1.0),
    )
    await ensure_topics(settings.kafka, settings.topics)
    store = VectorStore(settings.milvus, milvus_server)
    producer = make_producer(settings.kafka, role="test")
    await producer.start()
    stop = asyncio.Event()
    embedder = asyncio.create_task(run_embedder(settings, "musicnn", stop, store=store))
    try:
        async with serve(settings, store, "127.0.0.1") as url:
            yield Stack(settings, store, url, tmp_path_factory.mktemp("music"), producer)
    finally:
        stop.set()
        await asyncio.wait_for(embedder, 60)
        await producer.stop()
        for name in store.list_collections():
            if name.startswith(settings.milvus.collection_prefix):
                store.drop_collection(name)
        store.close()


async def test_a_dead_letter_retried_from_the_page_is_republished(stack: Stack, page) -> None:
    broken = stack.music / "broken.flac"
    broken.write_bytes(b"fLaC" + os.urandom(3000))  # no audio in it
    await stack.add_songs(["intro", "verse", "chorus"], seed=10)
    await publish(stack.producer, stack.settings, [track_event(broken, "broken")])

    await page.goto(stack.url + "/")
    stage = page.locator('[data-testid="dlq-stage"][data-stage="audio"]')
    await expect(stage.locator(".count")).to_have_text("1", timeout=WAIT_MS)
    await expect(page.get_by_test_id("dlq-letter").first).to_contain_text("broken")
    await expect(page.get_by_test_id("dlq-total")).to_have_text("1")

    write_song(broken, seconds=3, seed=99)  # the user puts a good copy in its place
    tracks = stack.settings.topics.tracks
    before = await end_offsets(stack.settings, tracks, stack.settings.topics.partitions)
    await stage.get_by_role("button", name="Retry the audio dead letters").click()
    await expect(page.get_by_test_id("toast")).to_have_text("Re-published 1 dead letter of audio.")

    records = await drain(stack.settings, tracks, before + 1)
    again = [r for r in records if r.key == b"broken"]
    assert len(again) == 2 and again[1].value == again[0].value  # the original, re-published
    await wait_for(lambda: "broken" in stack.store.get(stack.collection, ["broken"]), timeout=90)


async def test_pause_holds_new_rows_and_resume_finishes_the_backlog(stack: Stack, page) -> None:
    await page.goto(stack.url + "/")
    backlog = page.locator('[data-testid="backlog"][data-model="musicnn"]')
    bar = backlog.get_by_test_id("backlog-bar")
    await expect(bar).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)
    await expect(backlog.get_by_test_id("backlog-figures")).to_have_text("4 / 4")

    await page.get_by_test_id("pause").click()
    await expect(page.get_by_test_id("embedding-state")).to_contain_text("paused")
    await expect(page.get_by_test_id("resume")).to_be_enabled()
    await asyncio.sleep(3)  # the embedder follows the control topic, then holds
    rows = stack.rows()
    await stack.add_songs(["bridge", "solo", "outro", "coda"], seed=20)
    await expect(backlog.get_by_test_id("backlog-figures")).to_have_text("4 / 8", timeout=WAIT_MS)
    await expect(bar).to_have_attribute("aria-valuenow", "50")
    await asyncio.sleep(10)
    assert stack.rows() == rows == 4

    # While nothing moves, the page's lag of embed-musicnn is what `sonicbus lag --json` says.
    group = stack.settings.topics.group("embed-musicnn")
    line = page.locator(f'[data-testid="group-row"][data-group="{group}"]')
    await expect(line.get_by_test_id("group-pending")).to_have_text("4", timeout=WAIT_MS)
    cli = await sonicbus(stack.settings, "lag", group, "--json")
    assert cli.returncode == 0, cli.stderr
    (report,) = json.loads(cli.stdout)["groups"]
    assert report["group"] == group and report["pending"] == 4
    await expect(line.get_by_test_id("group-lag")).to_have_text(str(report["lag"]))
    assert await line.get_by_test_id("group-lag").get_attribute("data-value") == str(report["lag"])
    await expect(line.get_by_test_id("group-pending")).to_have_text(str(report["pending"]))

    await page.get_by_test_id("resume").click()
    await expect(page.get_by_test_id("embedding-state")).to_contain_text("running")
    await expect(bar).to_have_attribute("aria-valuenow", "100", timeout=WAIT_MS)
    await expect(backlog.get_by_test_id("backlog-percent")).to_have_text("100 %")
    await expect(backlog.get_by_test_id("backlog-figures")).to_have_text("8 / 8")
    assert stack.rows() == 8
    await expect(line.get_by_test_id("group-pending")).to_have_text("0", timeout=WAIT_MS)
    await screenshots(page)


async def screenshots(page) -> None:
    """The dashboard at desktop and phone width (and in dark mode), for people to look at;
    this page's chart holds the samples of the whole story."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, width, height, scheme in (("desktop", 1280, 800, "light"),
                                        ("phone", 375, 812, "light"),
                                        ("desktop-dark", 1280, 800, "dark")):  # fmt: skip
        await page.set_viewport_size({"width": width, "height": height})
        await page.emulate_media(color_scheme=scheme)
        await page.wait_for_timeout(300)  # the chart redraws at the new width
        # Nothing wider than the screen: a phone scrolls up and down only.
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than the screen"
        await page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)


async def test_on_loopback_no_login_is_needed_and_other_sites_cannot_act(stack: Stack) -> None:
    port = stack.url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as local:
        me = await local.get("/auth/session")
        assert me.status_code == 200 and me.json()["user"] == "local", me.text
        cookie = me.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        forged = await local.post("/api/embedding/pause")  # the cookie alone: refused
        assert forged.status_code == 403 and "X-Sonicbus-CSRF" in forged.text
        wrong = await local.post("/api/embedding/pause", headers={"X-Sonicbus-CSRF": "guess"})
        assert wrong.status_code == 403
        # The page's own writes: the session cookie plus its CSRF header (no admin token set).
        csrf = {"X-Sonicbus-CSRF": me.json()["csrf"]}
        assert (await local.post("/api/embedding/pause", headers=csrf)).json()["paused"] is True
        assert (await local.post("/api/embedding/resume", headers=csrf)).json()["paused"] is False

    # Another site's page: the browser sends no cookie (SameSite=Strict), gets no CORS
    # headers, and one that rebinds its DNS name to 127.0.0.1 gets no session.
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as other:
        origin = {"Origin": "https://evil.example"}
        posted = await other.post("/api/embedding/pause", headers=origin, content="{}")
        assert posted.status_code == 403 and "admin_token" in posted.text
        assert "access-control-allow-origin" not in posted.headers
        preflight = await other.options("/api/embedding/pause", headers={
            **origin, "Access-Control-Request-Method": "POST"})  # fmt: skip
        assert "access-control-allow-origin" not in preflight.headers
        rebound = await other.get("/auth/session", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 403
    assert (await _state(stack))["paused"] is False  # nothing above paused anything

    # --no-web: the pages go, the API stays.
    app = create_app(stack.settings, OpsRuntime(stack.settings, store=stack.store), web=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=stack.url) as c:
        assert (await c.get("/")).status_code == 404
        assert (await c.get("/assets/app.js")).status_code == 404
        assert (await c.get("/auth/login")).status_code == 200


async def _state(stack: Stack) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        return (await client.get("/api/embedding")).json()


async def test_off_loopback_anonymous_gets_401_and_a_navidrome_user_logs_in(
    stack: Stack, browser, navidrome_server: NavidromeServer
) -> None:
    user = navidrome_server.create_user()
    settings = navidrome_server.settings(stack.settings, api=True)
    http = HttpSettings(host="0.0.0.0", admin_token=SecretStr("program-token"))
    settings = settings.model_copy(update={"http": http})
    async with serve(settings, stack.store, "0.0.0.0") as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as anonymous:
            for path in ("/api/overview", "/api/lag", "/api/embedding", "/auth/session"):
                answer = await anonymous.get(path)
                assert answer.status_code == 401, (path, answer.text)
            retry = await anonymous.post("/api/dead-letters/retry", json={"stage": "audio"},
                                         headers={"Origin": "https://evil.example"})  # fmt: skip
            assert retry.status_code == 401 and "log in" in retry.json()["detail"]
            assert "access-control-allow-origin" not in retry.headers
            page = await anonymous.get("/")
            assert page.status_code == 303 and page.headers["location"] == "/login"
            # Programs keep their tokens.
            token = {"Authorization": "Bearer program-token"}
            assert (await anonymous.get("/api/lag", headers=token)).status_code == 200
            wrong = await anonymous.post("/auth/login", json={"user": user, "password": "nope"})
            assert wrong.status_code == 401 and "wrong user name or password" in wrong.text

        context = await browser.new_context(viewport=PHONE)
        try:
            page = await context.new_page()
            await page.goto(url + "/")
            await expect(page).to_have_url(url + "/login")
            await expect(page.get_by_test_id("login-how")).to_contain_text("Navidrome account")
            await page.get_by_label("User name").fill(user)
            await page.get_by_label("Password").fill(navidrome_server.users[user])
            await page.get_by_test_id("login-submit").click()
            await expect(page).to_have_url(url + "/")
            await expect(page.get_by_test_id("user")).to_have_text(user)
            services = page.get_by_test_id("services")
            await expect(services).to_contain_text("Kafka bus", timeout=WAIT_MS)
            (cookie,) = await context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            # The session reads; a write needs the page's CSRF header too.
            assert (await context.request.get(url + "/api/embedding")).status == 200
            forged = await context.request.post(url + "/api/embedding/pause")
            assert forged.status == 403

            await page.get_by_test_id("logout").click()
            await expect(page).to_have_url(url + "/login")
            assert (await context.request.get(url + "/api/embedding")).status == 401
        finally:
            await context.close()


async def test_the_page_says_when_the_bus_is_down_and_recovers_by_itself(
    milvus_server: str, browser: Any, tmp_path: Path
) -> None:
    """The broker stops while the page is open: a banner says so; it starts again: the
    banner goes away by itself (no reload)."""
    port = free_port_pair()
    settings = base_settings(
        home=tmp_path / "home",
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{port}", local_port=port, local_heap="512m"
        ),
        milvus=MilvusSettings(local_port=MILVUS_PORT, collection_prefix="bus_down_"),
        http=HttpSettings(dashboard_refresh_s=1.0),
    )
    store = VectorStore(settings.milvus, milvus_server)
    try:
        await asyncio.to_thread(infra.start_kafka, settings)
        await ensure_topics(settings.kafka, settings.topics)
        async with serve(settings, store, "127.0.0.1") as url:
            context = await browser.new_context(viewport=DESKTOP)
            try:  # closed before the server stops: its event stream holds a connection
                page = await context.new_page()
                await page.goto(url)
                banner = page.get_by_test_id("banner-bus")
                services = page.get_by_test_id("services")
                await expect(services).to_contain_text("Kafka", timeout=WAIT_MS)
                await expect(banner).to_be_hidden()
                await asyncio.to_thread(infra.stop_kafka, settings)
                await expect(banner).to_be_visible(timeout=WAIT_MS)
                await expect(banner).to_contain_text("Kafka")
                await expect(page.get_by_test_id("banner-milvus")).to_be_hidden()
                await asyncio.to_thread(infra.start_kafka, settings)
                await expect(banner).to_be_hidden(timeout=WAIT_MS)  # by itself, same page
            finally:
                await context.close()
    finally:
        store.close()
        if infra.port_open(port):
            await asyncio.to_thread(infra.stop_kafka, settings)
