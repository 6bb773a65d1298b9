"""The wire contract: records round-trip, tolerate the future, reject the incompatible."""

from __future__ import annotations

import json

import pytest

from pipeline.schemas import (
    DeadLetter,
    EmbeddingEvent,
    QueryReply,
    SchemaError,
    TrackEvent,
    export_json_schemas,
    parse_query_request,
)
from pipeline.schemas.queries import SimilarRequest


def test_track_event_round_trip() -> None:
    event = TrackEvent(
        track_id="abc",
        path="/music/a.flac",
        metadata={"title": "Song", "artist": "Band", "year": 1999},
        fingerprint={"size": 10, "mtime_ns": 5, "fast_hash": "ff"},
    )
    again = TrackEvent.from_bytes(event.to_bytes())
    assert again == event
    assert again.fingerprint is not None and again.fingerprint.token() == "10:5:ff"


def test_unknown_fields_from_a_newer_minor_version_are_tolerated() -> None:
    raw = json.dumps(
        {"schema_version": "1.7", "track_id": "a", "path": "/x.mp3", "brand_new": {"x": 1}}
    )
    assert TrackEvent.from_bytes(raw).track_id == "a"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "Invalid JSON"),
        (b'{"schema_version": "2.0", "track_id": "a", "path": "/x"}', "unsupported schema_version"),
        (b'{"track_id": "", "path": "/x"}', "track_id"),
        (b'{"path": "/x"}', "track_id: Field required"),
        (None, "tombstone"),
    ],
)
def test_invalid_track_events_give_a_clear_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(SchemaError, match=reason):
        TrackEvent.from_bytes(raw)


def test_query_requests_are_a_union_on_type() -> None:
    request = parse_query_request(b'{"type": "similar", "request_id": "r1", "track_id": "t"}')
    assert isinstance(request, SimilarRequest)
    with pytest.raises(SchemaError, match="does not match any of the expected tags"):
        parse_query_request(b'{"type": "horoscope", "request_id": "r1"}')
    with pytest.raises(SchemaError, match="NaN or infinity"):
        parse_query_request(
            b'{"type": "recommend", "request_id": "r", '
            b'"embeddings": [{"model": "musicnn", "vector": [1.0, NaN]}]}'
        )
    with pytest.raises(SchemaError, match="prompt"):
        parse_query_request(
            json.dumps({"type": "text", "request_id": "r", "prompt": "x" * 100_000}).encode()
        )


def test_every_record_carries_a_schema_version() -> None:
    records = [
        EmbeddingEvent(
            track_id="a", model="m", model_version="1", status="embedded", collection="c"
        ),
        DeadLetter(stage="decode", error_class="E", message="m"),
        QueryReply(request_id="r"),
    ]
    for record in records:
        assert json.loads(record.to_bytes())["schema_version"] == "1.0"


def test_json_schemas_are_exported_per_topic(tmp_path) -> None:
    paths = export_json_schemas(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == [
        "dlq.schema.json",
        "embeddings.schema.json",
        "replies.schema.json",
        "requests.schema.json",
        "tracks.schema.json",
    ]
    requests = json.loads((tmp_path / "requests.schema.json").read_text())
    assert requests["discriminator"]["propertyName"] == "type"
    tracks = json.loads((tmp_path / "tracks.schema.json").read_text())
    assert "track_id" in tracks["required"]
