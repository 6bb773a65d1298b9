"""The web login: `/auth/login`, `/auth/session`, `/auth/logout` (the credential model: auth.py).

Off loopback (or with `http.require_login`) people log in here: with their Navidrome
account when `navidrome.url` is set (the user name and password are checked by a
Subsonic `ping` on that server; nothing is stored), otherwise with `http.password`.
A login sets the signed session cookie and answers the session's CSRF value, which
the page sends back on every write. On loopback with no login asked for,
`/auth/session` hands a browser on this machine a session of its own instead.

Repeated failures from one address are answered 429 for a while, so a password cannot
be guessed at network speed.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, Field

from pipeline.config import NavidromeSettings, Settings
from pipeline.http.auth import (
    LOCAL_USER,
    Session,
    SessionKeys,
    Via,
    browser_session,
    caller,
    host_of,
    is_loopback,
    login_required,
    secret_value,
)
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.subsonic import SubsonicClient

log = logging.getLogger(__name__)

FAILURES_ALLOWED = 5
FAILURE_WINDOW_S = 300.0
# Subsonic error codes that mean "these credentials are refused" (40: wrong user name or
# password, 41: token authentication unsupported for this user, 50: not authorised).
REFUSED_CODES = {"40", "41", "50"}
SUBSONIC_ERROR = re.compile(r"failed: error (\d+):")

LoginMethod = Literal["navidrome", "password"]


class LoginRequest(BaseModel):
    user: str = Field("", max_length=200, description="Navidrome user name (password login: any).")
    password: str = Field(min_length=1, max_length=1000)


class LoginOptions(BaseModel):
    required: bool = Field(description="Whether the pages and the API ask for a login here.")
    method: LoginMethod | None = Field(description="How to log in; None: no login configured.")
    detail: str


class SessionInfo(BaseModel):
    user: str
    via: Via
    csrf: str = Field(description="Send it as X-Sonicbus-CSRF on every write.")
    expires_at: datetime
    login_required: bool


def login_method(settings: Settings) -> LoginMethod | None:
    """Navidrome accounts when a Navidrome URL is configured, else the password, else none."""
    if settings.navidrome.url:
        return "navidrome"
    if secret_value(settings.http.password):
        return "password"
    return None


class FailureThrottle:
    """Counts failed logins per address; too many within the window answer 429."""

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def recent(self, address: str) -> deque[float]:
        times = self.failures[address]
        while times and times[0] < time.monotonic() - FAILURE_WINDOW_S:
            times.popleft()
        return times

    def check(self, address: str) -> None:
        times = self.recent(address)
        if len(times) >= FAILURES_ALLOWED:
            wait = int(times[0] + FAILURE_WINDOW_S - time.monotonic()) + 1
            raise HTTPException(429, f"too many failed logins: try again in {wait} s",
                                headers={"Retry-After": str(wait)})  # fmt: skip

    def failed(self, address: str) -> None:
        self.recent(address).append(time.monotonic())

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)


async def check_navidrome_account(navidrome: NavidromeSettings, user: str, password: str) -> None:
    """The account works on the configured Navidrome (a Subsonic `ping` as that user).

    401 when Navidrome refuses the credentials, 503 when it does not answer.
    """
    if not user:
        raise HTTPException(422, "user: your Navidrome user name is needed")
    client = SubsonicClient(
        navidrome.url or "",
        user,
        password,
        client_name=navidrome.client_name,
        api_version=navidrome.api_version,
        timeout_s=min(navidrome.timeout_s, 10.0),
        retries=0,
    )
    try:
        async with client:
            await client.ping()
    except NavidromeUnavailable as exc:
        code = SUBSONIC_ERROR.search(str(exc))
        if code and code.group(1) in REFUSED_CODES:
            raise HTTPException(401, "wrong user name or password (Navidrome refused it)") from exc
        raise HTTPException(503, f"cannot check the login: {exc}") from exc


def _session_info(
    keys: SessionKeys, session: Session, required: bool, response: Response
) -> SessionInfo:
    response.headers["Cache-Control"] = "no-store"  # it carries the CSRF value
    return SessionInfo(
        user=session.user,
        via=session.via,
        csrf=keys.csrf(session),
        expires_at=datetime.fromtimestamp(session.expires, UTC),
        login_required=required,
    )


def _set_cookie(keys: SessionKeys, request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        keys.cookie,
        value,
        max_age=int(keys.http.session_hours * 3600),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def install_login(app: FastAPI, settings: Settings) -> None:
    """Sessions on `app` (`app.state.sessions`, read by auth.py) and the /auth endpoints."""
    keys = SessionKeys(settings.http, settings.home)
    app.state.sessions = keys
    throttle = FailureThrottle()
    required = login_required(settings.http)
    router = APIRouter(prefix="/auth", tags=["login"])

    @router.get("/login", response_model=LoginOptions)
    async def login_options() -> LoginOptions:
        method = login_method(settings)
        detail = {
            "navidrome": f"log in with your Navidrome account ({settings.navidrome.url})",
            "password": "log in with the password set in http.password",
            None: "no login is configured: set http.password (SONICBUS_HTTP__PASSWORD) or "
            "navidrome.url; programs can still use the bearer tokens",
        }[method]
        return LoginOptions(required=required, method=method, detail=detail)

    @router.post("/login", response_model=SessionInfo)
    async def login(body: LoginRequest, request: Request, response: Response) -> SessionInfo:
        address = caller(request) or "?"
        throttle.check(address)
        method = login_method(settings)
        try:
            if method == "navidrome":
                await check_navidrome_account(settings.navidrome, body.user.strip(), body.password)
                user = body.user.strip()
            elif method == "password":
                expected = (secret_value(settings.http.password) or "").encode()
                if not hmac.compare_digest(body.password.encode(), expected):
                    raise HTTPException(401, "wrong password")
                user = body.user.strip() or "admin"
            else:
                raise HTTPException(403, "no login is configured: set http.password "
                                    "(SONICBUS_HTTP__PASSWORD) or navidrome.url")  # fmt: skip
        except HTTPException as exc:
            if exc.status_code == 401:
                throttle.failed(address)
                log.warning("failed login as %r from %s", body.user[:40], address)
            raise
        throttle.succeeded(address)
        value, session = keys.issue(user, method)
        _set_cookie(keys, request, response, value)
        log.info("%s logged in from %s (%s)", user, address, method)
        return _session_info(keys, session, required, response)

    @router.get("/session", response_model=SessionInfo)
    async def session(request: Request, response: Response) -> SessionInfo:
        """The caller's session; on loopback with no login asked for, a new local one."""
        found = browser_session(request)
        if found is not None:
            return _session_info(keys, found, required, response)
        if required:
            raise HTTPException(401, "not logged in: log in at /login",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not (is_loopback(caller(request)) and is_loopback(host_of(request))):
            raise HTTPException(403, "sessions without a login are for this machine's browsers "
                                "(open http://127.0.0.1:<port>/)")  # fmt: skip
        value, made = keys.issue(LOCAL_USER, "loopback")
        _set_cookie(keys, request, response, value)
        return _session_info(keys, made, required, response)

    @router.post("/logout", status_code=204)
    async def logout(response: Response) -> Response:
        response.delete_cookie(keys.cookie, path="/", httponly=True, samesite="strict")
        response.status_code = 204
        return response

    app.include_router(router)
