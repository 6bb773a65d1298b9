"""Which collection serves each model, and the replay running on it: kept in Milvus itself.

A small `<prefix>state` collection holds one row per model: the active
collection queries read, the target collection the embedder writes, and the
running (or last) replay. Kept in Milvus rather than in a file or in Kafka so a
re-embed into a fresh collection works the same on Milvus Lite (no aliases)
and on a server, and every client of the same Milvus sees one answer.

The replay is typed here (`Replay`), not in `pipeline.ops.replay`, because both
sides read it: the embedders ask `write_target` before every batch (hold while
cancelled, re-embed unchanged tracks while forced) and the ops commands start,
cancel, resume and finish it. The row stores `Replay.model_dump(mode="json")`
(`{}` when there never was one), the format rows of existing installs hold; `reason`
(set by upgrades, `pipeline.ops.upgrade`) only when it is set.

Reads are cached `ttl_s` (embedders ask before every batch); on a server they
use Strong consistency so another process's switch is seen at once. One store is
shared by threads (an embedder's batches and its replay watcher): a read that
began before this process's own write ended must not cache what it saw over
that write, or the embedder writes to the collection the write just replaced.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pymilvus import DataType

from pipeline.schemas.base import describe_validation_error
from pipeline.store.connection import CONSISTENCY, MilvusConnection, StoreUnavailable, quote

ReplayStatus = Literal["running", "cancelled", "completed", "discarded"]


class ReplayPaused(StoreUnavailable):
    """The model's replay was cancelled: writers hold, committing nothing, until it resumes."""


class Replay(BaseModel):
    """One replay, as stored in the model's state row (JSON); see `pipeline.ops.replay`."""

    id: str
    model: str
    group: str
    topic: str
    status: ReplayStatus = "running"
    fresh: bool = False
    force: bool = False
    drop_old: bool = False
    since: datetime | None = None
    previous_collection: str = Field(description="The active collection when it started.")
    collection: str = Field(description="Where the replay writes (fresh: the new one).")
    start: dict[int, int] = Field(description="Partition -> offset the group was reset to.")
    end: dict[int, int] = Field(description="Partition -> log end when the replay started.")
    started_at: datetime
    cancelled_at: datetime | None = None
    finished_at: datetime | None = None
    note: str = ""
    reason: str = Field(
        "",
        description="Why it started: empty for an operator's command; an upgrade "
        "(`pipeline.ops.upgrade`) says what the stored vectors were and what this version writes.",
    )

    @property
    def total(self) -> int:
        return sum(max(0, self.end[p] - self.start.get(p, 0)) for p in self.end)


@dataclass(frozen=True)
class ModelState:
    """Where a model's vectors are read (active) and written (target), and its replay.

    `replay` is shared with the state cache: copy it before changing it.
    """

    model: str
    active: str
    target: str
    replay: Replay | None = None


@dataclass(frozen=True)
class WriteTarget:
    """What one embedder batch does."""

    collection: str
    force: bool  # re-embed even tracks whose fingerprint and model_version are stored


class ModelStates:
    """The rows of the state collection, read through a short cache."""

    def __init__(self, conn: MilvusConnection, ttl_s: float = 2.0) -> None:
        self.conn = conn
        self.ttl_s = ttl_s  # how stale another process's view of the state may be
        # model -> (when the cached view was true, the view): a read's start, a write's end
        self._cache: dict[str, tuple[float, ModelState]] = {}
        self._lock = threading.Lock()

    @property
    def collection(self) -> str:
        return f"{self.conn.settings.collection_prefix}state"

    def get(self, model: str, fresh: bool = False) -> ModelState:
        """The model's collections (default: `collection_name`), cached `ttl_s`."""
        cached = self._cache.get(model)
        if cached and not fresh and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        asked = time.monotonic()
        default = self.conn.collection_name(model)
        state = ModelState(model, default, default)
        if self.conn.has_collection(self.collection):
            self.conn.ensure_loaded(self.collection)
            rows = self.conn.call(
                self.conn.client.query,
                self.collection,
                filter=f"model == {quote(model)}",
                output_fields=["active", "target", "replay"],
                # Another process's switch must be seen at once (Lite: one process anyway).
                consistency_level=CONSISTENCY if self.conn.is_lite else "Strong",
            )
            if rows:
                state = _state_of(model, rows[0])
        return self._remember(model, asked, state)

    def _remember(self, model: str, at: float, state: ModelState) -> ModelState:
        """Cache `state` as true at `at`, unless the cache holds a later view: then that."""
        with self._lock:
            cached = self._cache.get(model)
            if cached and cached[0] > at:
                return cached[1]
            self._cache[model] = (at, state)
            return state

    def write_target(self, model: str) -> WriteTarget:
        """What one embedder batch does; raises ReplayPaused while a replay is cancelled."""
        state = self.get(model)
        status = state.replay.status if state.replay else None
        if status == "cancelled":
            raise ReplayPaused(
                f"the replay of {model} is cancelled: embedding holds until "
                f"`sonicbus reembed --model {model} --resume`"
            )
        force = state.replay is not None and state.replay.force and status == "running"
        return WriteTarget(state.target, force)

    def set_collections(self, model: str, active: str, target: str) -> None:
        """Point the model's reads and writes elsewhere, keeping its replay."""
        state = self.get(model, fresh=True)
        self.put(ModelState(model, active, target, state.replay))

    def put(self, state: ModelState) -> None:
        """Write a model's row (creating the state collection on first use)."""
        name = self.collection
        if not self.conn.has_collection(name):
            self._create(name)
        self.conn.ensure_loaded(name)
        row = {
            "model": state.model,
            "active": state.active,
            "target": state.target,
            "replay": _replay_row(state.replay),
            "vector": [0.0, 0.0],
        }
        self.conn.call(self.conn.client.upsert, name, [row])
        if self.conn.is_lite:
            # Lite: on disk before this process lets go of the file. The server's Strong
            # reads see unflushed rows, and a flush there costs ~2.5 s.
            self.conn.call(self.conn.client.flush, name)
        # Cached as a read would return it, so the caller's later changes stay its own.
        self._remember(state.model, time.monotonic(), _state_of(state.model, row))

    def _create(self, name: str) -> None:
        client = self.conn.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("model", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("active", DataType.VARCHAR, max_length=256)
        schema.add_field("target", DataType.VARCHAR, max_length=256)
        schema.add_field("replay", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs one
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        self.conn.call(
            client.create_collection,
            name,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
        )


def _replay_row(replay: Replay | None) -> dict[str, Any]:
    """The row's JSON: `reason` only when set, so a replay that has none is written in the
    format rows held before the field existed (and that older versions read back)."""
    if replay is None:
        return {}
    return replay.model_dump(mode="json", exclude=None if replay.reason else {"reason"})


def _state_of(model: str, row: dict[str, Any]) -> ModelState:
    """A state row as typed objects; a replay that is not one of ours is named, not a crash."""
    try:
        replay = Replay.model_validate(row["replay"]) if row["replay"] else None
    except ValidationError as exc:
        raise StoreUnavailable(
            f"the state row of {model} holds a replay sonicbus cannot read "
            f"({describe_validation_error(exc)}): `sonicbus reembed -m {model} --discard` "
            "or delete the row"
        ) from exc
    return ModelState(model, row["active"], row["target"], replay)
