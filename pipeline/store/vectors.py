"""The track collections: a collection per model, keyed by track_id, typed rows in and out.

Vectors are L2-normalised on the way in and searched with the inner product,
so every score is a cosine similarity. Measured on Milvus Lite (20k x 600,
2 cores): IP over normalised vectors answers in ~30-45 ms where the COSINE
metric takes ~80 ms, and a search over unflushed (growing) rows took ~1 s,
so writers flush after each batch (`upsert(..., flush=True)`).

Reads use Session consistency: a client always sees its own writes, and others'
within the server's staleness bound. Strong consistency made every search on
the Milvus server wait for the next 200 ms time tick (measured: ~200 ms per
search with Strong, ~3.5 ms with Session, 20k x 600 HNSW); see `connection`.

Milvus Lite (a local `.db` file) and a Milvus server (http URI) behave the
same through this class; Lite only supports a FLAT index.

Rows come out as `StoredTrack`s, never as Milvus' dicts, so the field names and
types of the schema below are known in this one module. Which collection serves
a model (and its replay) lives in `state`; `VectorStore` hands those calls on
to its `states`, so one client and one state cache serve both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymilvus import DataType

from pipeline.config import MilvusSettings
from pipeline.store.connection import CONSISTENCY, MilvusConnection, quote
from pipeline.store.state import ModelState, ModelStates, WriteTarget

log = logging.getLogger(__name__)

MAX_VECTOR_DIM = 32_768
STRING_FIELDS = {
    "artist": 512,
    "title": 512,
    "album": 512,
    "fingerprint": 256,
    "model_version": 128,
    "musical_key": 16,
    "genre": 256,
}
# Tempo, key, loudness and energy (models/analysis) as typed fields, for filters such as
# `bpm >= 120 and bpm <= 140`. Milvus 2.3 (the embedded server) has no NULL, so a figure
# that could not be measured (a short or silent track) is stored as `UNMEASURED[name]`.
ANALYSIS_FIELDS = ("bpm", "musical_key", "loudness_db", "energy")
UNMEASURED: dict[str, Any] = {"bpm": 0.0, "musical_key": "", "loudness_db": 0.0, "energy": -1.0}
SCALAR_FIELDS = (
    "artist",
    "title",
    "album",
    "duration",
    "fingerprint",
    "model_version",
    "embedded_at",
    "year",
    "genre",
    *ANALYSIS_FIELDS,
)
# Every field `ensure_collection` creates. A collection without one of them was made by an
# older version: `pipeline.ops.upgrade` re-embeds it into a fresh collection, so a field
# added here reaches existing installs with no manual step.
COLLECTION_FIELDS = frozenset(("track_id", "embedding", *SCALAR_FIELDS, "extra"))


@dataclass(kw_only=True)
class TrackFields:
    """The metadata stored beside every vector (a scalar field each, `extra` as JSON)."""

    artist: str = ""
    title: str = ""
    album: str = ""
    duration: float = 0.0
    fingerprint: str = ""
    model_version: str = ""
    embedded_at: int = 0
    year: int = 0  # 0: unknown
    genre: str = ""
    bpm: float = UNMEASURED["bpm"]
    musical_key: str = UNMEASURED["musical_key"]  # "A minor"
    loudness_db: float = UNMEASURED["loudness_db"]  # integrated LUFS
    energy: float = UNMEASURED["energy"]  # 0 calm .. 1 energetic
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VectorRow(TrackFields):
    """One track's vector and its metadata, as it goes in (stamped with the time now)."""

    track_id: str
    vector: Sequence[float] | np.ndarray
    embedded_at: int = field(default_factory=lambda: int(time.time()), kw_only=True)


@dataclass
class StoredTrack(TrackFields):
    """One stored row, as `get` and `iterate` return it.

    `vector` is the stored (unit, float32) vector when it was asked for, else None.
    """

    track_id: str
    vector: np.ndarray | None = None


@dataclass
class Hit:
    """One search result: `fields` holds the `output_fields` asked for, by name."""

    track_id: str
    score: float
    fields: dict[str, Any]


def analysis_fields(analysis: dict[str, Any] | None) -> dict[str, Any]:
    """The typed fields of a track's analysis (`AudioFeatures` as stored in `extra`)."""
    analysis = analysis or {}
    key, mode = analysis.get("key"), analysis.get("mode")
    measured = {
        "bpm": analysis.get("bpm"),
        "musical_key": f"{key} {mode}" if key and mode else None,
        "loudness_db": analysis.get("loudness_db"),
        "energy": analysis.get("energy"),
    }
    return {n: UNMEASURED[n] if v is None else v for n, v in measured.items()}


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


class VectorStore(MilvusConnection):
    """Collections, upserts, deletes, lookups and searches for every model."""

    def __init__(self, settings: MilvusSettings, uri: str) -> None:
        super().__init__(settings, uri)
        self.states = ModelStates(self)

    # -- which collection serves a model: see `state` ----------------------

    @property
    def state_collection(self) -> str:
        return self.states.collection

    @property
    def state_ttl_s(self) -> float:
        """How stale another process's view of the state may be."""
        return self.states.ttl_s

    @state_ttl_s.setter
    def state_ttl_s(self, seconds: float) -> None:
        self.states.ttl_s = seconds

    def model_state(self, model: str, fresh: bool = False) -> ModelState:
        """The model's collections (default: `collection_name`) and replay, cached."""
        return self.states.get(model, fresh)

    def active_collection(self, model: str) -> str:
        """The collection queries read for `model`."""
        return self.states.get(model).active

    def target_collection(self, model: str) -> str:
        """The collection the embedder writes: a fresh one during a replay, else the active."""
        return self.states.get(model).target

    def write_target(self, model: str) -> WriteTarget:
        """What one embedder batch does; raises ReplayPaused while a replay is cancelled."""
        return self.states.write_target(model)

    def set_collections(self, model: str, active: str, target: str) -> None:
        self.states.set_collections(model, active, target)

    def set_model_state(self, state: ModelState) -> None:
        """Write a model's row (creating the state collection on first use)."""
        self.states.put(state)

    # -- collections ------------------------------------------------------

    def ensure_collection(self, collection: str, dim: int) -> None:
        """Create the collection with its schema and index if missing, and load it."""
        if not 1 <= dim <= MAX_VECTOR_DIM:
            raise ValueError(f"vector dim {dim} outside Milvus' 1..{MAX_VECTOR_DIM}")
        client = self.client
        if not self.call(client.has_collection, collection):
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("track_id", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
            for name, length in STRING_FIELDS.items():
                schema.add_field(name, DataType.VARCHAR, max_length=length)
            schema.add_field("duration", DataType.FLOAT)
            schema.add_field("embedded_at", DataType.INT64)
            schema.add_field("year", DataType.INT64)
            for name in ("bpm", "loudness_db", "energy"):
                schema.add_field(name, DataType.FLOAT)
            schema.add_field("extra", DataType.JSON)
            index = client.prepare_index_params()
            index.add_index(field_name="embedding", **self._index_spec())
            self.call(
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
        self.ensure_loaded(collection)

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

    def dimension(self, collection: str) -> int:
        info = self.call(self.client.describe_collection, collection)
        for spec in info["fields"]:
            if spec["name"] == "embedding":
                return int(spec["params"]["dim"])
        raise ValueError(f"collection {collection} has no embedding field")

    def field_names(self, collection: str) -> set[str]:
        """The fields an existing collection has (compared with `COLLECTION_FIELDS`)."""
        info = self.call(self.client.describe_collection, collection)
        return {str(spec["name"]) for spec in info["fields"]}

    def versions_other_than(
        self, collection: str, model_version: str, limit: int = 100
    ) -> set[str]:
        """The model_versions of stored rows that `model_version` did not write (from up to
        `limit` such rows; rows without a version are left out). Empty: all are current."""
        self.ensure_loaded(collection)
        rows = self.call(
            self.client.query,
            collection,
            filter=f'model_version != {quote(model_version)} and model_version != ""',
            output_fields=["model_version"],
            limit=limit,
            consistency_level=CONSISTENCY,
        )
        return {str(row["model_version"]) for row in rows}

    def drop_collection(self, collection: str) -> None:
        self._loaded.discard(collection)
        if self.has_collection(collection):
            self.call(self.client.drop_collection, collection)

    def list_collections(self) -> list[str]:
        return sorted(self.ping())

    def count(self, collection: str) -> int:
        self.ensure_loaded(collection)
        rows = self.call(
            self.client.query,
            collection,
            filter="",
            output_fields=["count(*)"],
            consistency_level=CONSISTENCY,
        )
        return int(rows[0]["count(*)"])

    # -- rows -------------------------------------------------------------

    def upsert(
        self,
        collection: str,
        rows: Sequence[VectorRow],
        flush: bool = True,
        as_stored: bool = False,
    ) -> None:
        """Insert or replace rows by track_id; flushing makes them fast to search.

        `as_stored`: the vectors are unit length already (rows read back from a
        store, as an export holds them) and are written bit for bit; normalising
        them again moves the last bit of about a quarter of them.
        """
        if not rows:
            return
        stacked = np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
        vectors = stacked if as_stored else normalise(stacked)
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to store a vector with NaN or infinity")
        data = []
        for row, vector in zip(rows, vectors, strict=True):
            record: dict[str, Any] = {"track_id": row.track_id, "embedding": vector.tolist()}
            for name, length in STRING_FIELDS.items():
                record[name] = _clip(str(getattr(row, name) or ""), length)
            record["duration"] = float(row.duration or 0.0)
            record["embedded_at"] = int(row.embedded_at)
            record["year"] = int(row.year or 0)
            for name in ("bpm", "loudness_db", "energy"):
                record[name] = float(getattr(row, name))
            record["extra"] = row.extra
            data.append(record)
        self.ensure_loaded(collection)
        self.call(self.client.upsert, collection, data)
        if flush:
            self.flush(collection)

    def flush(self, collection: str) -> None:
        """Seal what was written, so the next search does not scan growing rows.

        On Milvus Lite the first search after a flush also builds the sealed
        segment's in-memory index (measured 60-250 ms at 20k x 600, then ~30 ms):
        one tiny search here pays that cost at ingestion time instead of making
        the next user query pay it.
        """
        self.call(self.client.flush, collection)
        if self.is_lite:
            dim = self.dimension(collection)
            self.search(collection, [[1.0] * dim], limit=1)

    def delete(self, collection: str, track_ids: Iterable[str], flush: bool = True) -> None:
        ids = list(track_ids)
        if not ids:
            return
        self.ensure_loaded(collection)
        self.call(self.client.delete, collection, ids=ids)
        if flush:
            self.flush(collection)

    def get(
        self, collection: str, track_ids: Sequence[str], with_vectors: bool = False
    ) -> dict[str, StoredTrack]:
        """Rows by id (missing ids are simply absent from the result)."""
        if not track_ids:
            return {}
        self.ensure_loaded(collection)
        rows = self.call(
            self.client.get,
            collection,
            ids=list(track_ids),
            output_fields=_output_fields(with_vectors),
            consistency_level=CONSISTENCY,
        )
        tracks = (_track(dict(row)) for row in rows)
        return {track.track_id: track for track in tracks}

    def iterate(
        self, collection: str, with_vectors: bool = False, batch_size: int = 2000
    ) -> Iterator[list[StoredTrack]]:
        """Every row, one page at a time: for in-memory caches and library-wide scans.

        `query` caps offset + limit at 16,384 rows; Milvus' query iterator has no
        such cap. Vectors come back as float32 arrays, like `get`.
        """
        self.ensure_loaded(collection)
        iterator = self.call(
            self.client.query_iterator,
            collection,
            batch_size=batch_size,
            output_fields=_output_fields(with_vectors),
        )
        try:
            while True:
                page = self.call(iterator.next)
                if not page:
                    return
                yield [_track(dict(row)) for row in page]
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
        self.ensure_loaded(collection)
        queries = normalise(np.asarray(vectors, dtype=np.float32))
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.settings.search_ef, limit)}
        results = self.call(
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


def _track(row: dict[str, Any]) -> StoredTrack:
    """A Milvus row of `_output_fields` as a StoredTrack (the one place that parses one)."""
    vector = row.get("embedding")
    return StoredTrack(
        track_id=str(row["track_id"]),
        artist=str(row.get("artist") or ""),
        title=str(row.get("title") or ""),
        album=str(row.get("album") or ""),
        duration=float(row.get("duration") or 0.0),
        fingerprint=str(row.get("fingerprint") or ""),
        model_version=str(row.get("model_version") or ""),
        embedded_at=int(row.get("embedded_at") or 0),
        year=int(row.get("year") or 0),
        genre=str(row.get("genre") or ""),
        **{name: row.get(name, UNMEASURED[name]) for name in ANALYSIS_FIELDS},
        extra=dict(row.get("extra") or {}),
        vector=None if vector is None else np.asarray(vector, dtype=np.float32),
    )


def _output_fields(with_vectors: bool) -> list[str]:
    return ["track_id", *SCALAR_FIELDS, "extra", *(["embedding"] if with_vectors else [])]


def _to_hit(raw: Any) -> Hit:
    """Milvus Lite names the key by the primary field, the server calls it `id`."""
    data = dict(raw)
    entity = dict(data.get("entity") or {})
    track_id = data.get("id", data.get("track_id", entity.get("track_id")))
    return Hit(track_id=str(track_id), score=float(data["distance"]), fields=entity)
