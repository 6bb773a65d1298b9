"""The web login with a password, and the session rules (pipeline/http/auth.py, login.py).

An operator serves sonicbus on the LAN with `http.password` and no Navidrome: nobody
gets in without it, guessing is cut short, a forged or stale cookie is worth nothing,
changing the password ends every session. The Navidrome login and the browser's side
are in test_dashboard_browser.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from pydantic import SecretStr

from pipeline.config import HttpSettings, Settings
from pipeline.http.app import create_app

LAN = ("192.168.1.20", 50000)  # a phone on the LAN
SESSION_COOKIE = "sonicbus_session_9002"  # the cookie of the service on port 9002


def app_client(settings: Settings, home: Path, **http: object) -> httpx.AsyncClient:
    """The app on 0.0.0.0 (unless `host` says otherwise), called from the LAN."""
    values: dict[str, object] = {"host": "0.0.0.0", **http}
    configured = settings.model_copy(update={"http": HttpSettings(**values), "home": home})
    app = create_app(configured, runtime=SimpleNamespace())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=LAN)
    return httpx.AsyncClient(transport=transport, base_url="http://sonicbus.lan:9002")


@pytest.fixture
async def lan(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, tmp_path, password=SecretStr("hunter2-long")) as client:
        yield client


async def test_the_password_opens_the_pages_and_the_api(lan: httpx.AsyncClient) -> None:
    assert (await lan.get("/api/embedding")).status_code == 401
    options = (await lan.get("/auth/login")).json()
    assert options["required"] is True and options["method"] == "password"
    assert (await lan.post("/auth/login", json={"password": "guess"})).status_code == 401

    answer = await lan.post("/auth/login", json={"password": "hunter2-long"})
    assert answer.status_code == 200, answer.text
    session = answer.json()
    assert session["user"] == "admin" and session["via"] == "password"
    assert (await lan.get("/api/embedding")).status_code == 200
    page = await lan.get("/")
    assert page.status_code == 200 and "<title>sonicbus</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    state = await lan.post("/api/embedding/resume", headers={"X-Sonicbus-CSRF": session["csrf"]})
    assert state.status_code == 200 and state.json()["paused"] is False

    assert (await lan.post("/auth/logout")).status_code == 204
    assert (await lan.get("/api/embedding")).status_code == 401


async def test_guessing_is_cut_short(lan: httpx.AsyncClient) -> None:
    for _ in range(5):
        assert (await lan.post("/auth/login", json={"password": "guess"})).status_code == 401
    blocked = await lan.post("/auth/login", json={"password": "hunter2-long"})
    assert blocked.status_code == 429 and "too many failed logins" in blocked.text
    assert int(blocked.headers["retry-after"]) > 0


async def test_forged_and_old_cookies_are_worth_nothing(settings: Settings, tmp_path: Path) -> None:
    async with app_client(settings, tmp_path, password=SecretStr("first-password")) as lan:
        assert (await lan.post("/auth/login", json={"password": "first-password"})).is_success
        cookie = lan.cookies[SESSION_COOKIE]
        payload, signature = cookie.split(".")
        lan.cookies.set(SESSION_COOKIE, payload + "." + signature[::-1])
        assert (await lan.get("/api/embedding")).status_code == 401
        lan.cookies.set(SESSION_COOKIE, cookie)
        assert (await lan.get("/api/embedding")).status_code == 200
    # The key file stays in the home (a restart keeps sessions); a new password ends them.
    assert (tmp_path / "http-session.key").stat().st_mode & 0o777 == 0o600
    async with app_client(settings, tmp_path, password=SecretStr("first-password")) as again:
        again.cookies.set(SESSION_COOKIE, cookie)
        assert (await again.get("/api/embedding")).status_code == 200
    async with app_client(settings, tmp_path, password=SecretStr("second-password")) as changed:
        changed.cookies.set(SESSION_COOKIE, cookie)
        assert (await changed.get("/api/embedding")).status_code == 401


async def test_without_a_login_configured_only_tokens_get_in(
    settings: Settings, tmp_path: Path
) -> None:
    # Empty values, as docker compose passes unset variables, configure nothing.
    empty = {"admin_token": SecretStr(""), "password": SecretStr("")}
    async with app_client(settings, tmp_path, **empty) as lan:
        assert (await lan.post("/api/embedding/pause")).status_code == 401
        refused = await lan.post("/auth/login", json={"password": "x"})
        assert refused.status_code == 403 and "http.password" in refused.text
        assert (await lan.get("/login")).status_code == 200  # the page says why
    async with app_client(settings, tmp_path, client_token=SecretStr("reader")) as lan:
        token = {"Authorization": "Bearer reader"}
        assert (await lan.get("/api/embedding", headers=token)).status_code == 200
        assert (await lan.get("/api/embedding")).status_code == 401


async def test_the_pages_serve_their_own_files_only(settings: Settings, tmp_path: Path) -> None:
    async with app_client(settings, tmp_path, host="127.0.0.1") as local:
        script = await local.get("/assets/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        for path in ("/assets/..%2Fweb.py", "/assets/web.py", "/assets/index.html"):
            assert (await local.get(path)).status_code == 404, path
