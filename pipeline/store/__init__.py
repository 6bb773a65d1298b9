"""Milvus, the store of record for vectors: the one package that talks to it.

- `vectors`: a collection per model keyed by track_id; upsert, delete, get,
  iterate and search, with typed rows in and out;
- `state`: which collection serves each model and the replay running on it,
  kept in Milvus itself so every process sees one answer.
"""

from pipeline.store.vectors import (
    Hit,
    ModelState,
    ReplayPaused,
    StoreUnavailable,
    VectorRow,
    VectorStore,
    WriteTarget,
    normalise,
)

__all__ = [
    "Hit",
    "ModelState",
    "ReplayPaused",
    "StoreUnavailable",
    "VectorRow",
    "VectorStore",
    "WriteTarget",
    "normalise",
]
