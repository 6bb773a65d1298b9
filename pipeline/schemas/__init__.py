"""Pydantic models of every record on the bus, one module per topic family."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from pipeline.schemas.base import Record, SchemaError
from pipeline.schemas.deadletters import DeadLetter
from pipeline.schemas.embeddings import EmbeddingEvent
from pipeline.schemas.queries import (
    QueryReply,
    QueryRequest,
    parse_query_request,
    query_request_adapter,
)
from pipeline.schemas.tracks import Fingerprint, Segment, TrackEvent, TrackMetadata

__all__ = [
    "DeadLetter",
    "EmbeddingEvent",
    "Fingerprint",
    "QueryReply",
    "QueryRequest",
    "Record",
    "SchemaError",
    "Segment",
    "TrackEvent",
    "TrackMetadata",
    "export_json_schemas",
    "json_schemas",
    "parse_query_request",
]


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every topic's value, keyed by topic family."""
    adapters: dict[str, TypeAdapter[Any]] = {
        "tracks": TypeAdapter(TrackEvent),
        "embeddings": TypeAdapter(EmbeddingEvent),
        "dlq": TypeAdapter(DeadLetter),
        "requests": query_request_adapter,
        "replies": TypeAdapter(QueryReply),
    }
    return {family: adapter.json_schema() for family, adapter in adapters.items()}


def export_json_schemas(folder: Path) -> list[Path]:
    """Write one `<family>.schema.json` per topic family (for non-Python clients)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for family, schema in json_schemas().items():
        path = folder / f"{family}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
