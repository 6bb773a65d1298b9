"""The one place that talks to Milvus: a collection per model, keyed by track_id.

Vectors are L2-normalised on the way in and searched with the inner product,
so every score is a cosine similarity. Measured on Milvus Lite (20k x 600,
2 cores): IP over normalised vectors answers in ~30-45 ms where the COSINE
metric takes ~80 ms, and a search over unflushed (growing) rows took ~1 s,
so writers flush after each batch (`upsert(..., flush=True)`).

Reads use Session consistency: a client always sees its own writes, and others'
within the server's staleness bound. Strong consistency made every search on
the Milvus server wait for the next 200 ms time tick (measured: ~200 ms per
search with Strong, ~3.5 ms with Session, 20k x 600 HNSW).

Milvus Lite (a local `.db` file) and a Milvus server (http URI) behave the
same through this class; Lite only supports a FLAT index.

Which collection serves a model is kept in Milvus itself, in a small
`<prefix>state` collection (one row per model: the active collection queries
read, the target collection the embedder writes, and the running replay), so a
re-embed into a fresh collection works the same on Milvus Lite (no aliases)
and on a server, and every client of the same Milvus sees one answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from pipeline.config import MilvusSettings
from pipeline.errors import Unavailable

log = logging.getLogger(__name__)

MAX_VECTOR_DIM = 32_768
CONSISTENCY = "Session"
INDEX_WAIT_S = 10.0  # how long a reader waits for another process to finish creating a collection
STRING_FIELDS = {
    "artist": 512,
    "title": 512,
    "album": 512,
    "fingerprint": 256,
    "model_version": 128,
}
SCALAR_FIELDS = (
    "artist",
    "title",
    "album",
    "duration",
    "fingerprint",
    "model_version",
    "embedded_at",
)


class StoreUnavailable(Unavailable):
    """Milvus could not be reached or refused the call; callers retry later."""


class ReplayPaused(StoreUnavailable):
    """The model's replay was cancelled: writers hold, committing nothing, until it resumes."""


@dataclass(frozen=True)
class ModelState:
    """Where a model's vectors are read (active) and written (target), and its replay.

    `replay` is the JSON of the running or last replay (see pipeline.ops.replay);
    the store itself only reads its `status` and `force` keys.
    """

    model: str
    active: str
    target: str
    replay: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WriteTarget:
    collection: str
    force: bool  # re-embed even tracks whose fingerprint and model_version are stored


@dataclass
class VectorRow:
    """One track's vector and the metadata stored beside it."""

    track_id: str
    vector: Sequence[float] | np.ndarray
    artist: str = ""
    title: str = ""
    album: str = ""
    duration: float = 0.0
    fingerprint: str = ""
    model_version: str = ""
    embedded_at: int = field(default_factory=lambda: int(time.time()))
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    track_id: str
    score: float
    fields: dict[str, Any]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero) so IP equals cosine."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


def _clip(text: str, limit: int) -> str:
    """Milvus rejects VARCHARs over max_length (counted in bytes): cut on a char boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


class VectorStore:
    """Collections, upserts, deletes, lookups and searches for every model."""

    def __init__(self, settings: MilvusSettings, uri: str) -> None:
        self.settings = settings
        self.uri = uri
        self.is_lite = not uri.startswith(("http://", "https://", "tcp://", "unix:"))
        self._client: MilvusClient | None = None
        self._loaded: set[str] = set()
        self._lock = threading.Lock()
        self.state_ttl_s = 2.0  # how stale another process's view of the state may be
        self._states: dict[str, tuple[float, ModelState]] = {}

    # -- connection -------------------------------------------------------

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
        return self._call(self.client.list_collections)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MilvusException as exc:
            # A restarted server may have released collections: load them again next time.
            self._loaded.clear()
            raise StoreUnavailable(f"Milvus at {self.uri}: {exc}") from exc

    # -- collections ------------------------------------------------------

    def collection_name(self, model: str) -> str:
        return f"{self.settings.collection_prefix}{model}".replace("-", "_")

    # -- which collection serves a model ----------------------------------

    @property
    def state_collection(self) -> str:
        return f"{self.settings.collection_prefix}state"

    def model_state(self, model: str, fresh: bool = False) -> ModelState:
        """The model's collections (default: `collection_name`), cached `state_ttl_s`."""
        cached = self._states.get(model)
        if cached and not fresh and time.monotonic() - cached[0] < self.state_ttl_s:
            return cached[1]
        default = self.collection_name(model)
        state = ModelState(model, default, default)
        if self.has_collection(self.state_collection):
            self._ensure_loaded(self.state_collection)
            rows = self._call(
                self.client.query,
                self.state_collection,
                filter=f"model == {_quote(model)}",
                output_fields=["active", "target", "replay"],
                # Another process's switch must be seen at once (Lite: one process anyway).
                consistency_level=CONSISTENCY if self.is_lite else "Strong",
            )
            if rows:
                row = rows[0]
                state = ModelState(model, row["active"], row["target"], row["replay"] or {})
        self._states[model] = (time.monotonic(), state)
        return state

    def active_collection(self, model: str) -> str:
        """The collection queries read for `model`."""
        return self.model_state(model).active

    def target_collection(self, model: str) -> str:
        """The collection the embedder writes: a fresh one during a replay, else the active."""
        return self.model_state(model).target

    def write_target(self, model: str) -> WriteTarget:
        """What one embedder batch does; raises ReplayPaused while a replay is cancelled."""
        state = self.model_state(model)
        status = state.replay.get("status")
        if status == "cancelled":
            raise ReplayPaused(
                f"the replay of {model} is cancelled: embedding holds until "
                f"`sonicbus reembed --model {model} --resume`"
            )
        return WriteTarget(state.target, bool(state.replay.get("force")) and status == "running")

    def set_collections(self, model: str, active: str, target: str) -> None:
        state = self.model_state(model, fresh=True)
        self.set_model_state(ModelState(model, active, target, state.replay))

    def set_model_state(self, state: ModelState) -> None:
        """Write a model's row (creating the state collection on first use)."""
        name = self.state_collection
        if not self.has_collection(name):
            schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("model", DataType.VARCHAR, is_primary=True, max_length=128)
            schema.add_field("active", DataType.VARCHAR, max_length=256)
            schema.add_field("target", DataType.VARCHAR, max_length=256)
            schema.add_field("replay", DataType.JSON)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
            index = self.client.prepare_index_params()
            index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
            self._call(
                self.client.create_collection,
                name,
                schema=schema,
                index_params=index,
                consistency_level="Strong",
            )
        self._ensure_loaded(name)
        row = {
            "model": state.model,
            "active": state.active,
            "target": state.target,
            "replay": state.replay,
            "vector": [0.0, 0.0],
        }
        self._call(self.client.upsert, name, [row])
        if self.is_lite:
            # Lite: on disk before this process lets go of the file. The server's Strong
            # reads see unflushed rows, and a flush there costs ~2.5 s.
            self._call(self.client.flush, name)
        self._states[state.model] = (time.monotonic(), state)

    def ensure_collection(self, collection: str, dim: int) -> None:
        """Create the collection with its schema and index if missing, and load it."""
        if not 1 <= dim <= MAX_VECTOR_DIM:
            raise ValueError(f"vector dim {dim} outside Milvus' 1..{MAX_VECTOR_DIM}")
        client = self.client
        if not self._call(client.has_collection, collection):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("track_id", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
            for name, length in STRING_FIELDS.items():
                schema.add_field(name, DataType.VARCHAR, max_length=length)
            schema.add_field("duration", DataType.FLOAT)
            schema.add_field("embedded_at", DataType.INT64)
            schema.add_field("extra", DataType.JSON)
            index = client.prepare_index_params()
            index.add_index(field_name="embedding", **self._index_spec())
            self._call(
                client.create_collection,
                collection,
                schema=schema,
                index_params=index,
                consistency_level=CONSISTENCY,
            )
            log.info("created collection %s (dim %d, %s)", collection, dim, self.index_type)
        else:
            existing = self.dimension(collection)
            if existing != dim:
                raise ValueError(
                    f"collection {collection} holds {existing}-d vectors, not {dim}-d: "
                    "re-embed into a fresh collection"
                )
        self._ensure_loaded(collection)

    @property
    def index_type(self) -> str:
        return "FLAT" if self.is_lite else self.settings.index_type

    def _index_spec(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.index_type == "HNSW":
            params = {
                "M": self.settings.hnsw_m,
                "efConstruction": self.settings.hnsw_ef_construction,
            }
        elif self.index_type == "IVF_FLAT":
            params = {"nlist": 1024}
        return {"index_type": self.index_type, "metric_type": "IP", "params": params}

    def _ensure_loaded(self, collection: str) -> None:
        if collection in self._loaded:
            return
        # Milvus creates a collection, then its index, then loads it: another process
        # reading in between (`status`, a query service, an embedder starting beside
        # another) is told "index not found". The creator is moments from done: wait.
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:
            try:
                self._call(self.client.load_collection, collection)
                break
            except StoreUnavailable as exc:
                if "index not found" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._loaded.add(collection)

    def has_collection(self, collection: str) -> bool:
        return bool(self._call(self.client.has_collection, collection))

    def dimension(self, collection: str) -> int:
        info = self._call(self.client.describe_collection, collection)
        for spec in info["fields"]:
            if spec["name"] == "embedding":
                return int(spec["params"]["dim"])
        raise ValueError(f"collection {collection} has no embedding field")

    def drop_collection(self, collection: str) -> None:
        self._loaded.discard(collection)
        if self.has_collection(collection):
            self._call(self.client.drop_collection, collection)

    def list_collections(self) -> list[str]:
        return sorted(self.ping())

    def count(self, collection: str) -> int:
        self._ensure_loaded(collection)
        rows = self._call(
            self.client.query,
            collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"])

    # -- rows -------------------------------------------------------------

    def upsert(self, collection: str, rows: Sequence[VectorRow], flush: bool = True) -> None:
        """Insert or replace rows by track_id; flushing makes them fast to search."""
        if not rows:
            return
        vectors = normalise(np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows]))
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to store a vector with NaN or infinity")
        data = []
        for row, vector in zip(rows, vectors, strict=True):
            record: dict[str, Any] = {"track_id": row.track_id, "embedding": vector.tolist()}
            for name, length in STRING_FIELDS.items():
                record[name] = _clip(str(getattr(row, name) or ""), length)
            record["duration"] = float(row.duration or 0.0)
            record["embedded_at"] = int(row.embedded_at)
            record["extra"] = row.extra
            data.append(record)
        self._ensure_loaded(collection)
        self._call(self.client.upsert, collection, data)
        if flush:
            self.flush(collection)

    def flush(self, collection: str) -> None:
        """Seal what was written, so the next search does not scan growing rows.

        On Milvus Lite the first search after a flush also builds the sealed
        segment's in-memory index (measured 60-250 ms at 20k x 600, then ~30 ms):
        one tiny search here pays that cost at ingestion time instead of making
        the next user query pay it.
        """
        self._call(self.client.flush, collection)
        if self.is_lite:
            dim = self.dimension(collection)
            self.search(collection, [[1.0] * dim], limit=1)

    def delete(self, collection: str, track_ids: Iterable[str], flush: bool = True) -> None:
        ids = list(track_ids)
        if not ids:
            return
        self._ensure_loaded(collection)
        self._call(self.client.delete, collection, ids=ids)
        if flush:
            self.flush(collection)

    def get(
        self, collection: str, track_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, dict[str, Any]]:
        """Rows by id (missing ids are simply absent from the result)."""
        if not track_ids:
            return {}
        self._ensure_loaded(collection)
        fields = ["track_id", *SCALAR_FIELDS, "extra"]
        if with_vectors:
            fields.append("embedding")
        rows = self._call(
            self.client.get,
            collection,
            ids=list(track_ids),
            output_fields=fields,
            consistency_level=CONSISTENCY,
        )
        result = {}
        for row in rows:
            row = dict(row)
            if with_vectors:
                row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
            result[str(row["track_id"])] = row
        return result

    def iterate(
        self, collection: str, with_vectors: bool = False, batch_size: int = 2000
    ) -> Iterator[list[dict[str, Any]]]:
        """Every row, one page at a time: for in-memory caches and library-wide scans.

        `query` caps offset + limit at 16,384 rows; Milvus' query iterator has no
        such cap. Vectors come back as float32 arrays, like `get`.
        """
        self._ensure_loaded(collection)
        fields = ["track_id", *SCALAR_FIELDS, "extra"]
        if with_vectors:
            fields.append("embedding")
        iterator = self._call(
            self.client.query_iterator, collection, batch_size=batch_size, output_fields=fields
        )
        try:
            while True:
                page = self._call(iterator.next)
                if not page:
                    return
                rows = [dict(row) for row in page]
                if with_vectors:
                    for row in rows:
                        row["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
                yield rows
        finally:
            iterator.close()

    def search(
        self,
        collection: str,
        vectors: np.ndarray | Sequence[Sequence[float]],
        limit: int,
        filter_expr: str = "",
        output_fields: Sequence[str] = ("artist", "title", "album"),
    ) -> list[list[Hit]]:
        """Nearest rows per query vector, best first; scores are cosine similarities."""
        self._ensure_loaded(collection)
        queries = normalise(np.asarray(vectors, dtype=np.float32))
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.settings.search_ef, limit)}
        results = self._call(
            self.client.search,
            collection,
            data=queries.tolist(),
            limit=limit,
            filter=filter_expr,
            output_fields=list(output_fields),
            search_params=params,
            anns_field="embedding",
            consistency_level=CONSISTENCY,
        )
        return [[_to_hit(raw) for raw in hits] for hits in results]


def _quote(text: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _to_hit(raw: Any) -> Hit:
    """Milvus Lite names the key by the primary field, the server calls it `id`."""
    data = dict(raw)
    entity = dict(data.get("entity") or {})
    track_id = data.get("id", data.get("track_id", entity.get("track_id")))
    return Hit(track_id=str(track_id), score=float(data["distance"]), fields=entity)
