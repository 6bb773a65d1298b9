"""A second terminal while `sonicbus up` runs: asking the running process over its HTTP API.

Milvus Lite is one file that one process opens at a time. While `sonicbus up` (or
`serve`) holds it, another `sonicbus status` or `reembed --status` cannot open it;
Milvus Lite then refuses with "Open local milvus failed". The running process serves
the same views (`/api/status` is exactly `status --json`, `/reembed/{model}` exactly
`reembed --status --json`) on `http.port`, on loopback, so the commands ask it
instead and say that they did. The answer is used only when it describes the same
Milvus Lite file, so another install's service on that port is never taken for ours.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.config import Settings
from pipeline.http.auth import is_loopback

LITE_HELD = ("Open local milvus failed", "another process holds the lock")
WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def lite_held(settings: Settings, message: str) -> bool:
    """Is `message` Milvus Lite's refusal to open a file another process holds?"""
    uri = settings.milvus_uri
    lite = not uri.startswith(("http://", "https://", "tcp://", "unix:"))
    return lite and any(words in message for words in LITE_HELD)


@contextlib.contextmanager
def quiet_lite() -> Iterator[None]:
    """Milvus Lite logs a long traceback when its file is held; the commands say it in a line."""
    logger = logging.getLogger("milvus_lite.server_manager")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def api_url(settings: Settings, path: str) -> str:
    """The running service's URL for `path`: loopback unless it listens on one address."""
    host = settings.http.host
    if host in WILDCARDS or is_loopback(host):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.http.port}{path}"


@dataclass
class Answer:
    url: str
    status: int
    body: Any

    @property
    def detail(self) -> str:
        if isinstance(self.body, dict) and "detail" in self.body:
            return str(self.body["detail"])
        return f"HTTP {self.status}"


def ask_running(settings: Settings, path: str, timeout_s: float = 30.0) -> Answer | None:
    """GET `path` of the running service (with the configured token); None when none answers."""
    url = api_url(settings, path)
    token = settings.http.admin_token or settings.http.client_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError:
        return None
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return Answer(url=url, status=response.status_code, body=body)


def other_store(settings: Settings) -> str | None:
    """Why the running service cannot speak for our Milvus Lite file (None: it can)."""
    health = ask_running(settings, "/healthz")
    if health is None:
        return not_answering(settings)
    milvus = health.body.get("milvus") if isinstance(health.body, dict) else None
    address = milvus.get("address") if isinstance(milvus, dict) else None
    if address != settings.milvus_uri:
        return f"{health.url} serves another database ({address}); {not_answering(settings)}"
    return None


def held_note(settings: Settings, answer: Answer) -> str:
    return (
        f"Milvus Lite ({settings.milvus_uri}) is held by a running sonicbus: "
        f"figures from its HTTP API, {answer.url}"
    )


def not_answering(settings: Settings) -> str:
    return (
        f"Milvus Lite ({settings.milvus_uri}) is held by another process, and no sonicbus "
        f"HTTP API answers at {api_url(settings, '/api/status')}: run `sonicbus up` with its "
        "HTTP service (the default) to see collections from here, or stop the process "
        "holding the file"
    )
