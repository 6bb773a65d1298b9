"""The Milvus client under both halves of the store, and the error every store call raises.

`vectors` (the track collections) and `state` (which collection serves each
model) share one client per `VectorStore`: this base holds it, so `state`
needs nothing from `vectors` and `vectors` builds on both without an import
circle.

`CONSISTENCY` is Session: a client always sees its own writes, and others'
within the server's staleness bound; Strong costs a search on the server ~200 ms
(measured, see `vectors`).

Milvus Lite (a local `.db` file) and a Milvus server (http URI) behave the
same through this class.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pymilvus import MilvusClient, MilvusException

from pipeline.config import MilvusSettings
from pipeline.errors import Unavailable
from pipeline.logs import store_noise, take_over_logs

CONSISTENCY = "Session"
INDEX_WAIT_S = 10.0  # how long a reader waits for another process to finish creating a collection

take_over_logs("pymilvus")  # pymilvus' own stderr handler would bypass ours (pipeline.logs)


class StoreUnavailable(Unavailable):
    """Milvus could not be reached or refused the call; callers retry later."""


class MilvusConnection:
    """One lazily opened client, the collections it loaded, and the calls that wrap it."""

    def __init__(self, settings: MilvusSettings, uri: str) -> None:
        self.settings = settings
        self.uri = uri
        self.is_lite = not uri.startswith(("http://", "https://", "tcp://", "unix:"))
        self._client: MilvusClient | None = None
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    @property
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                try:
                    token = self.settings.token.get_secret_value() if self.settings.token else ""
                    kwargs: dict[str, Any] = {"uri": self.uri, "token": token}
                    if self.settings.db_name and not self.is_lite:
                        kwargs["db_name"] = self.settings.db_name
                    self._client = MilvusClient(**kwargs)
                except MilvusException as exc:
                    raise StoreUnavailable(f"cannot open Milvus at {self.uri}: {exc}") from exc
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                self._loaded.clear()

    def ping(self) -> list[str]:
        """The collection names; raises StoreUnavailable when Milvus does not answer."""
        return self.call(self.client.list_collections)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, with Milvus' errors raised as StoreUnavailable."""
        try:
            result = fn(*args, **kwargs)
        except MilvusException as exc:
            # A restarted server may have released collections: load them again next time.
            self._loaded.clear()
            raise StoreUnavailable(f"Milvus at {self.uri}: {exc}") from exc
        store_noise.reachable(self.uri)  # ends a folded outage (pipeline.logs), if one
        return result

    def collection_name(self, model: str) -> str:
        """The model's default collection (the active one until a fresh re-embed switches)."""
        return f"{self.settings.collection_prefix}{model}".replace("-", "_")

    def has_collection(self, collection: str) -> bool:
        return bool(self.call(self.client.has_collection, collection))

    def ensure_loaded(self, collection: str) -> None:
        """Load the collection into memory once per client (Milvus serves loaded ones only)."""
        if collection in self._loaded:
            return
        # Milvus creates a collection, then its index, then loads it: another process
        # reading in between (`status`, a query service, an embedder starting beside
        # another) is told "index not found". The creator is moments from done: wait.
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:
            try:
                self.call(self.client.load_collection, collection)
                break
            except StoreUnavailable as exc:
                if "index not found" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._loaded.add(collection)


def quote(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
