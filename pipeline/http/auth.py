"""The one credential model of the HTTP service.

- **admin token** (`http.admin_token`): every endpoint that changes something
  (re-embed, batch start/cancel). Without one configured these endpoints are off.
- **client token** (`http.client_token`): the read-only query endpoints (the
  Navidrome plugin's `/navidrome/v1/*`, the older `/recommendations/*` and
  `/embed_text`); the admin token is accepted there too. Without a client token
  configured they answer loopback callers only (403 for others), so a default
  `sonicbus up` on 127.0.0.1 works with no setup and opens nothing to the network.
- `/healthz`, `/metrics`, `/docs`, progress reads: open (no track data in them).

Tokens are bearer tokens, compared in constant time, each one every time so the
timing does not tell which matched. A wrong token is 401 whatever the caller.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.config import HttpSettings

BEARER = HTTPBearer(auto_error=False, description="http.admin_token or http.client_token")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _matches(credentials: HTTPAuthorizationCredentials | None, tokens: list[bytes]) -> bool:
    given = credentials.credentials.encode() if credentials is not None else b""
    return any([hmac.compare_digest(given, token) for token in tokens])


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def admin_access(http: HttpSettings) -> Callable[[Credentials], None]:
    """The dependency of the writing endpoints: the admin token, nothing else."""

    def admin(credentials: Credentials) -> None:
        if http.admin_token is None:
            raise HTTPException(403, "admin endpoints are off: set http.admin_token "
                                "(SONICBUS_HTTP__ADMIN_TOKEN)")  # fmt: skip
        if not _matches(credentials, [http.admin_token.get_secret_value().encode()]):
            raise _unauthorised("missing or wrong bearer token")

    return admin


def reader_access(http: HttpSettings) -> Callable[[Request, Credentials], None]:
    """The dependency of the read-only query endpoints (see the module docstring)."""

    def reader(request: Request, credentials: Credentials) -> None:
        tokens = [t.get_secret_value().encode() for t in (http.client_token, http.admin_token) if t]
        if credentials is not None:
            if _matches(credentials, tokens):
                return
            raise _unauthorised("wrong bearer token")
        if http.client_token is not None:
            raise _unauthorised("missing bearer token (http.client_token)")
        if not is_loopback(request.client.host if request.client else None):
            raise HTTPException(
                403,
                "open to loopback callers only: set http.client_token "
                "(SONICBUS_HTTP__CLIENT_TOKEN) and send it as a bearer token",
            )

    return reader
