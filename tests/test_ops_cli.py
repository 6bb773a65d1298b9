"""The operator's commands on the real broker: `sonicbus dlq ...`, `status`, `lag` and their errors.

Dead letters are inspected by stage and reason, shown in full, re-published
to where they failed (after a fix) and purged; `status` gives the one-screen
overview; a broker that is down or an unknown group gets one clear line and
exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.bus import make_consumer, make_producer
from pipeline.cli import app
from pipeline.config import Settings
from pipeline.deadletters import DeadLetterSink, dead_letter_for
from pipeline.schemas import TrackEvent
from pipeline.topics import ensure_topics
from tests.fixtures.bus import drain
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()


def env_for(settings: Settings, home: Path) -> dict[str, str]:
    return {
        "SONICBUS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "SONICBUS_TOPICS__PREFIX": settings.topics.prefix,
        "SONICBUS_TOPICS__GROUP_PREFIX": settings.topics.group_prefix,
        "SONICBUS_HOME": str(home),
        "SONICBUS_MILVUS__URI": str(home / "milvus.db"),
        "COLUMNS": "200",  # tables unwrapped, so lines can be matched
    }


def sonicbus(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


async def write_dead_letters(settings: Settings) -> None:
    """Four failures: two undecodable audio files, one unreadable record, one huge request."""
    await ensure_topics(settings.kafka, settings.topics)
    producer = make_producer(settings.kafka, role="test")
    await producer.start()
    sink = DeadLetterSink(producer, settings.topics.dlq)
    tracks, requests = settings.topics.tracks, settings.topics.requests
    embedder, query = settings.topics.group("embed-musicnn"), settings.topics.group("query")
    try:
        for key, message in (("t1", "NoBackendError: cannot decode t1.flac"),
                             ("t2", "decoding t2.mp3 took over 120 s")):  # fmt: skip
            value = TrackEvent(track_id=key, path=f"/music/{key}.flac").to_bytes()
            await sink.send(dead_letter_for(
                stage="audio", error=RuntimeError(message), key=key, value=value,
                headers=[("origin", b"watcher")], topic=tracks, partition=0, offset=7,
                group=embedder,
            ))  # fmt: skip
        await sink.send(dead_letter_for(
            stage="decode", error=ValueError("TrackEvent: path: Field required"), key="t3",
            value=b'{"track_id": "t3"}', topic=tracks, partition=1, offset=3, group=embedder,
        ))  # fmt: skip
        letter = dead_letter_for(
            stage="query", error=RuntimeError("reply_to missing"), key="r1",
            value=b"{}", topic=requests, partition=0, offset=0, group=query,
        )  # fmt: skip
        letter.value_truncated = True
        await sink.send(letter)
    finally:
        await producer.stop()


def test_dead_letters_are_listed_shown_retried_and_purged(
    kafka_broker: str, tmp_path: Path
) -> None:
    settings = base_settings()
    asyncio.run(write_dead_letters(settings))
    env = env_for(settings, tmp_path)

    code, out = sonicbus(env, "dlq", "list", "--json")
    assert code == 0, out
    assert [(r["offset"], r["letter"]["key"]) for r in json.loads(out)] == [
        (0, "t1"), (1, "t2"), (2, "t3"), (3, "r1"),
    ]  # fmt: skip
    code, out = sonicbus(env, "dlq", "list", "--stage", "audio", "--json")
    assert [r["letter"]["key"] for r in json.loads(out)] == ["t1", "t2"]
    code, out = sonicbus(env, "dlq", "list", "--reason", "nobackend", "--json")
    assert [r["letter"]["key"] for r in json.loads(out)] == ["t1"]
    code, out = sonicbus(env, "dlq", "list", "--group", settings.topics.group("query"))
    assert code == 0 and "1 dead letter(s)" in out and "reply_to missing" in out

    code, out = sonicbus(env, "dlq", "show", "2")
    shown = json.loads(out)
    assert (
        shown["letter"]["stage"] == "decode"
        and shown["letter"]["value_text"] == '{"track_id": "t3"}'
    )
    code, out = sonicbus(env, "dlq", "show", "99")
    assert code == 1 and "no dead letter at offset 99" in out

    code, out = sonicbus(env, "dlq", "retry")
    assert code == 1 and "name offsets or a filter" in out
    code, out = sonicbus(env, "dlq", "retry", "--group", settings.topics.group("query"))
    assert code == 1 and "truncated" in out and "nothing was re-published" in out

    # After a fix (codecs installed, say), the two audio failures go back to `tracks`.
    code, out = sonicbus(env, "dlq", "retry", "--stage", "audio")
    assert code == 0 and "re-published 2 record(s)" in out, out
    records = asyncio.run(drain(settings, settings.topics.tracks, 2))
    assert sorted(r.key for r in records) == [b"t1", b"t2"]
    for record in records:
        event = TrackEvent.from_bytes(record.value)
        assert event.path == f"/music/{record.key.decode()}.flac"
        headers = dict(record.headers)
        assert headers["origin"] == b"watcher" and headers["sonicbus-retry-of"].startswith(b"t")

    code, out = sonicbus(env, "dlq", "purge", "--yes")
    assert code == 1 and "exactly one of --before OFFSET or --all" in out
    code, out = sonicbus(env, "dlq", "purge", "--before", "2", "--yes")
    assert code == 0 and "now starts at offset 2" in out
    code, out = sonicbus(env, "dlq", "list", "--json")
    assert [r["offset"] for r in json.loads(out)] == [2, 3]


def test_status_and_lag_views_and_their_errors(kafka_broker: str, tmp_path: Path) -> None:
    settings = base_settings()
    asyncio.run(write_dead_letters(settings))
    embedder, query = settings.topics.group("embed-musicnn"), settings.topics.group("query")

    async def a_group_that_read_tracks() -> None:
        from aiokafka import TopicPartition

        consumer = make_consumer(settings.kafka, group_id=embedder, role="test")
        await consumer.start()
        consumer.assign([TopicPartition(settings.topics.tracks, 0)])
        await consumer.commit({TopicPartition(settings.topics.tracks, 0): 0})
        await consumer.stop()

    asyncio.run(a_group_that_read_tracks())
    env = env_for(settings, tmp_path)

    code, out = sonicbus(env, "status", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert [s["reachable"] for s in status["services"]] == [True, True]
    assert embedder in [g["group"] for g in status["groups"]]
    assert query in status["missing_groups"]
    assert status["dead_letters"] == 4
    assert status["dead_letters_by"] == {
        f"audio/{embedder}": 2,
        f"decode/{embedder}": 1,
        f"query/{query}": 1,
    }
    musicnn = next(m for m in status["models"] if m["model"] == "musicnn")
    assert musicnn["active_collection"] == "sonicbus_musicnn"
    assert musicnn["load_state"] == "not running"

    code, out = sonicbus(env, "status")
    assert code == 0 and "consumer groups" in out and "dead letters: 4" in out

    code, out = sonicbus(env, "lag", embedder)
    assert code == 0 and "CURRENT-OFFSET" in out and f"{embedder} · Empty" in out
    code, out = sonicbus(env, "lag", "nobody-reads-this")
    assert code == 1 and "consumer group 'nobody-reads-this' does not exist" in out

    down = {**env, "SONICBUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    code, out = sonicbus(down, "lag")
    assert code == 1 and "127.0.0.1:1" in out and "Traceback" not in out
    code, out = sonicbus(down, "status")
    assert code == 1 and "unreachable" in out
    code, out = sonicbus(down, "reembed", "--model", "musicnn")
    assert code == 1 and "127.0.0.1:1" in out and "Traceback" not in out
    code, out = sonicbus(down, "dlq", "list")
    assert code == 1 and "127.0.0.1:1" in out
