"""Milvus, the store of record for vectors: the one package that talks to it.

- `vectors`: a collection per model keyed by track_id; upsert, delete, get,
  iterate and search, with typed rows in (`VectorRow`) and out (`StoredTrack`,
  `Hit`);
- `state`: which collection serves each model and the replay running on it
  (`ModelState`, `Replay`), kept in Milvus itself so every process sees one answer;
- `connection`: the client both share, and `StoreUnavailable`.
"""

from pipeline.store.connection import StoreUnavailable
from pipeline.store.state import (
    ModelState,
    ModelStates,
    Replay,
    ReplayPaused,
    ReplayStatus,
    WriteTarget,
)
from pipeline.store.vectors import (
    ANALYSIS_FIELDS,
    Hit,
    StoredTrack,
    VectorRow,
    VectorStore,
    analysis_fields,
    normalise,
)

__all__ = [
    "ANALYSIS_FIELDS",
    "Hit",
    "ModelState",
    "ModelStates",
    "Replay",
    "ReplayPaused",
    "ReplayStatus",
    "StoreUnavailable",
    "StoredTrack",
    "VectorRow",
    "VectorStore",
    "WriteTarget",
    "analysis_fields",
    "normalise",
]
