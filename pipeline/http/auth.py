"""The one credential model of the HTTP service: who may call what, decided here only.

Programs send bearer tokens:

- **admin token** (`http.admin_token`): every endpoint that changes something
  (re-embed, batch start/cancel, dead-letter retry, pause/resume).
- **client token** (`http.client_token`): the read-only endpoints (the Navidrome
  plugin's `/navidrome/v1/*`, the older `/recommendations/*` and `/embed_text`, the
  dashboard's `/api/*` reads); the admin token is accepted there too.

People use the web UI with a **session**: a cookie (`sonicbus_session_<port>`) holding the user
and an expiry, signed with HMAC-SHA256 (a key generated once into
`<home>/http-session.key`, owner-only), HttpOnly, SameSite=Strict, Secure when served
over https. How one gets a session depends on where the service listens:

- **off loopback** (`http.host` is not 127.0.0.1 / ::1 / localhost), or with
  `http.require_login`: by logging in at `/login` (login.py), with a Navidrome
  account when `navidrome.url` is set (checked by a Subsonic `ping`), else with
  `http.password`. Anonymous requests to the pages are sent to `/login`; to the API
  they get 401. `/healthz`, `/metrics` and the progress reads stay open (no track data:
  health checks and Prometheus need them).
- **on loopback** with no login asked for: `GET /auth/session` gives any browser on this
  machine a session of the user "local", so the dashboard works, buttons included,
  without a login or an admin token. Only when the request's Host header names a
  loopback address too, so a web page that rebinds its own DNS name to 127.0.0.1 gets
  none; and a session made so is refused once a login is asked for. Whatever runs on
  this machine is trusted like its browsers (a local program can ask for a session
  too); `http.require_login` closes that.

A session reads what the client token reads. It writes only with the header
`X-Sonicbus-CSRF` equal to the session's own CSRF value (an HMAC of the session, which
`/auth/session` and the login return as JSON): another site can neither read that
value (no CORS headers are ever sent) nor send a custom header cross-site without a
preflight that fails, and SameSite=Strict keeps the cookie off its requests anyway.

Without a token or session, the read endpoints still answer loopback callers while no
client token is set and no login is asked for (the Navidrome plugin on the same
machine), and 403 for others; the Host header must name a loopback address too, so a
web page that rebinds its DNS name to 127.0.0.1 cannot read them.
Tokens are compared in constant time, each one every time so the timing does not tell
which matched; an empty token counts as unset. A wrong token is 401 whatever the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, SecretStr, ValidationError

from pipeline.config import HttpSettings

BEARER = HTTPBearer(auto_error=False, description="http.admin_token or http.client_token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
SESSION_COOKIE = "sonicbus_session"  # + "_<port>": a browser sends a host's cookies to every port
CSRF_HEADER = "X-Sonicbus-CSRF"
LOCAL_USER = "local"
Via = Literal["navidrome", "password", "loopback"]


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def login_required(http: HttpSettings) -> bool:
    """A login is asked for off loopback, and on loopback with `http.require_login`."""
    return http.require_login or not is_loopback(http.host)


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret, or None when unset or empty (an empty env variable sets nothing)."""
    value = secret.get_secret_value() if secret is not None else ""
    return value or None


def host_of(request: Request) -> str:
    """The host the browser asked for (Host header, without the port)."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def caller(request: Request) -> str | None:
    return request.client.host if request.client else None


class Session(BaseModel):
    """What a session cookie says: who, how they got in, until when; `nonce` makes it unique."""

    user: str
    via: Via
    expires: int
    nonce: str


class SessionKeys:
    """Signs and checks session cookies. One per app, at `app.state.sessions` (login.py).

    The signing key is derived from the key file and `http.password`, so changing the
    password ends every session; deleting the key file (then restarting) ends them too.
    """

    def __init__(self, http: HttpSettings, home: Path) -> None:
        self.http = http
        self.key_file = home / "http-session.key"
        self.cookie = f"{SESSION_COOKIE}_{http.port}"
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            password = (secret_value(self.http.password) or "").encode()
            secret = self._stored_secret()
            self._key = hmac.new(secret, b"sessions\0" + password, hashlib.sha256).digest()
        return self._key

    def _stored_secret(self) -> bytes:
        """The generated secret, made once (owner-only file) and kept across restarts."""
        if self.key_file.is_file():
            return self.key_file.read_bytes().strip()
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        made = secrets.token_hex(32).encode()
        temporary = self.key_file.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(made)
        try:
            os.link(temporary, self.key_file)  # the first writer wins; the others read its key
        except FileExistsError:
            made = self.key_file.read_bytes().strip()
        finally:
            temporary.unlink()
        return made

    def _sign(self, data: bytes) -> str:
        digest = hmac.new(self.key, data, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, user: str, via: Via) -> tuple[str, Session]:
        """A new session's cookie value, and the session."""
        session = Session(
            user=user,
            via=via,
            expires=int(time.time() + self.http.session_hours * 3600),
            nonce=secrets.token_urlsafe(12),
        )
        payload = base64.urlsafe_b64encode(session.model_dump_json().encode()).decode()
        return f"{payload}.{self._sign(payload.encode())}", session

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None: unsigned, tampered with, expired, or a loopback
        session where a login is asked for now."""
        if not cookie or cookie.count(".") != 1:
            return None
        payload, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(payload.encode())):
            return None
        try:
            session = Session.model_validate(json.loads(base64.urlsafe_b64decode(payload)))
        except (ValueError, ValidationError):
            return None
        if session.expires < time.time():
            return None
        if session.via == "loopback" and login_required(self.http):
            return None
        return session

    def csrf(self, session: Session) -> str:
        """The value writes must send in X-Sonicbus-CSRF (readable by same-origin pages only)."""
        return self._sign(b"csrf\0" + session.nonce.encode())


def browser_session(request: Request) -> Session | None:
    """The request's valid session, if the app has sessions (login.py installs them)."""
    keys: SessionKeys | None = getattr(request.app.state, "sessions", None)
    if keys is None:
        return None
    return keys.read(request.cookies.get(keys.cookie))


def _matches(credentials: HTTPAuthorizationCredentials | None, tokens: list[bytes]) -> bool:
    given = credentials.credentials.encode() if credentials is not None else b""
    return bool(given) and any([hmac.compare_digest(given, token) for token in tokens])


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _tokens(*secrets_: SecretStr | None) -> list[bytes]:
    return [value.encode() for value in map(secret_value, secrets_) if value]


def admin_access(http: HttpSettings) -> Callable[[Request, Credentials], None]:
    """The dependency of the writing endpoints: the admin token, or a session + CSRF header."""

    def admin(request: Request, credentials: Credentials) -> None:
        tokens = _tokens(http.admin_token)
        if credentials is not None:
            if not tokens:
                raise HTTPException(403, "admin endpoints are off for programs: set "
                                    "http.admin_token (SONICBUS_HTTP__ADMIN_TOKEN)")  # fmt: skip
            if not _matches(credentials, tokens):
                raise _unauthorised("missing or wrong bearer token")
            return
        session = browser_session(request)
        if session is not None:
            keys: SessionKeys = request.app.state.sessions
            given = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode(), keys.csrf(session).encode()):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
            return
        if login_required(http):
            raise _unauthorised("log in at /login, or send the admin token as a bearer token")
        if not tokens:
            raise HTTPException(403, "admin endpoints are off for programs: set "
                                "http.admin_token (SONICBUS_HTTP__ADMIN_TOKEN)")  # fmt: skip
        raise _unauthorised("missing or wrong bearer token")

    return admin


def reader_access(http: HttpSettings) -> Callable[[Request, Credentials], None]:
    """The dependency of the read-only endpoints (see the module docstring)."""

    def reader(request: Request, credentials: Credentials) -> None:
        if credentials is not None:
            if _matches(credentials, _tokens(http.client_token, http.admin_token)):
                return
            raise _unauthorised("wrong bearer token")
        if browser_session(request) is not None:
            return
        if login_required(http):
            raise _unauthorised("log in at /login, or send a bearer token (http.client_token)")
        if secret_value(http.client_token) is not None:
            raise _unauthorised("missing bearer token (http.client_token)")
        if not is_loopback(caller(request)):
            raise HTTPException(
                403,
                "open to loopback callers only: set http.client_token "
                "(SONICBUS_HTTP__CLIENT_TOKEN) and send it as a bearer token",
            )
        if not is_loopback(host_of(request)):  # a page that rebound its DNS name to 127.0.0.1
            raise HTTPException(
                403,
                f"asked for host {host_of(request)!r}: without a token, only as 127.0.0.1, "
                "::1 or localhost",
            )

    return reader
