"""The wire contract from a client's side: plain Kafka clients, bad input, the dlq, deadlines,
live index updates, the in-process entry point, and a real Milvus server.

The first test is what a Navidrome plugin (or any non-Python client) does:
no sonicbus code on the client side, only aiokafka, JSON and two headers.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.bus import make_admin, make_consumer
from pipeline.client import QueryClient
from pipeline.config import QuerySettings
from pipeline.consumers.query import QueryService, run_query_service
from pipeline.schemas import DeadLetter, EmbeddingEvent
from pipeline.schemas.queries import QueryReply
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.bus import drain, end_offsets
from tests.fixtures.library import Running, fill, musicnn_library
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)


async def test_a_plain_kafka_client_publishes_json_with_headers_and_reads_its_reply(
    running: Running,
) -> None:
    settings = running.settings
    servers = settings.kafka.bootstrap_servers
    reply_topic = f"{settings.topics.replies}.navidrome-plugin"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    await admin.create_topics([NewTopic(reply_topic, 1, 1)])
    await admin.close()
    consumer = AIOKafkaConsumer(
        reply_topic, bootstrap_servers=servers, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await consumer.start()
    await producer.start()
    try:
        request = {"type": "similar", "request_id": "nd-1", "track_id": "jazz3", "limit": 3}
        await producer.send_and_wait(
            settings.topics.requests,
            json.dumps(request).encode(),
            key=b"nd-1",
            headers=[
                ("reply_to", reply_topic.encode()),
                ("correlation_id", b"corr-77"),
                ("content-type", b"application/json"),
            ],
        )
        record = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await producer.stop()
        await consumer.stop()
    headers = dict(record.headers)
    assert headers["correlation_id"] == b"corr-77"
    assert headers["content-type"] == b"application/json"
    assert record.key == b"nd-1"
    reply = json.loads(record.value)
    assert reply["request_id"] == "nd-1" and reply["ok"] is True and reply["type"] == "similar"
    assert len(reply["tracks"]) == 3
    assert {t["track_id"] for t in reply["tracks"]} <= set(running.library.cluster("jazz"))
    assert {"track_id", "score", "artist", "title", "album", "found_by"} <= set(reply["tracks"][0])


async def find_reply(running: Running, request_id: str, timeout: float = 20) -> QueryReply:
    """The reply to `request_id` on the shared replies topic, read from its start."""
    consumer = make_consumer(running.settings.kafka, running.settings.topics.replies,
                             group_id=None, role="test-replies")  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        if record.key == request_id.encode():
                            return QueryReply.from_bytes(record.value)
    finally:
        await consumer.stop()


async def test_bad_input_gets_an_error_reply_and_the_consumer_keeps_answering(
    running: Running,
) -> None:
    client = running.client
    cases = {
        b"{not json": ("invalid_request", "malformed JSON"),
        b"": ("invalid_request", "malformed JSON"),
        b"[1, 2]": ("invalid_request", "JSON object"),
        b'{"type": "teleport", "request_id": "t1"}': ("unknown_type", "teleport"),
        b'{"type": "similar", "request_id": "t2"}': ("invalid_request", "track_id"),
        b'{"type": "path", "request_id": "t3", "start_track_id": "a", "end_track_id": "b",'
        b' "steps": 1000}': ("invalid_request", "steps"),
        b'{"type": "similar", "request_id": "t4", "track_id": "x", "schema_version": "9.0"}': (
            "invalid_request",
            "schema_version",
        ),
    }
    for body, (code, words) in cases.items():
        reply = await client.ask_raw(body, key="bad", timeout=20)
        assert not reply.ok and reply.error.code == code, (body, reply.error)
        assert words in reply.error.message, (body, reply.error.message)
    # Headers a client got wrong (binary, null) do not make a request vanish.
    await running.service.producer.send_and_wait(
        running.settings.topics.requests,
        json.dumps({"type": "similar", "request_id": "odd", "track_id": "rock1"}).encode(),
        headers=[("reply_to", running.settings.topics.replies.encode()),
                 ("correlation_id", b"odd-1"), ("trace", b"\xff\xfe"), ("empty", None)],
    )  # fmt: skip
    assert (await find_reply(running, "odd")).ok
    fine = await client.ask({"type": "similar", "request_id": "after", "track_id": "rock1"})
    assert fine.ok and fine.tracks


async def test_requests_nobody_can_be_answered_go_to_the_dlq(running: Running) -> None:
    settings = running.settings
    producer = running.service.producer
    body = json.dumps({"type": "similar", "request_id": "lost", "track_id": "rock1"}).encode()
    cases = {
        "no-reply-to": [("correlation_id", b"c1")],
        "reply-to-tracks": [("reply_to", settings.topics.tracks.encode())],
        "reply-to-missing": [("reply_to", f"{settings.topics.replies}.nobody".encode())],
    }
    for key, headers in cases.items():
        await producer.send_and_wait(settings.topics.requests, body, key=key.encode(),
                                     headers=headers)  # fmt: skip
    records = await drain(settings, settings.topics.dlq, 3)
    letters = {
        letter.key: letter for letter in map(DeadLetter.from_bytes, (r.value for r in records))
    }
    assert set(letters) == set(cases)
    assert all(
        letter.stage == "query" and letter.consumer_group == settings.topics.group("query")
        for letter in letters.values()
    )
    assert "no reply_to header" in letters["no-reply-to"].message
    assert "not a replies topic" in letters["reply-to-tracks"].message
    assert "does not exist" in letters["reply-to-missing"].message
    assert json.loads(letters["no-reply-to"].original_value())["request_id"] == "lost"
    # Nothing was written into the tracks topic, and the service still answers.
    assert await end_offsets(settings, settings.topics.tracks, settings.topics.partitions) == 0
    still = await running.client.ask({"type": "similar", "request_id": "ok", "track_id": "rock1"})
    assert still.ok


async def test_a_reply_that_cannot_be_published_is_kept_in_the_dlq(running: Running) -> None:
    """The client's reply topic is deleted after the service checked it: the answer cannot
    be delivered, so the request goes to the dlq (stage publish) and the service goes on."""
    settings = running.settings
    gone = f"{settings.topics.replies}.gone"
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(gone, 1, 1)])
        async with QueryClient(settings, reply_topic=gone) as client:
            first = {"type": "similar", "request_id": "first", "track_id": "rock1"}
            assert (await client.ask(first, timeout=20)).ok  # the service now knows the topic
        await admin.delete_topics([gone])
    finally:
        await admin.close()
    body = json.dumps({"type": "similar", "request_id": "undeliverable", "track_id": "rock1"})
    before = await end_offsets(settings, settings.topics.dlq, 1)
    await running.service.producer.send_and_wait(
        settings.topics.requests, body.encode(), key=b"undeliverable",
        headers=[("reply_to", gone.encode()), ("correlation_id", b"c-gone")],
    )  # fmt: skip
    # The producer gives up after kafka.request_timeout_ms (15 s by default).
    records = await drain(settings, settings.topics.dlq, before + 1, timeout=60)
    letter = next(
        d
        for d in map(DeadLetter.from_bytes, (r.value for r in records))
        if d.key == "undeliverable"
    )
    assert letter.stage == "publish" and letter.consumer_group == settings.topics.group("query")
    assert json.loads(letter.original_value())["request_id"] == "undeliverable"
    assert (letter.source_topic, letter.headers.get("reply_to")) == (settings.topics.requests, gone)
    still = await running.client.ask(
        {"type": "similar", "request_id": "after", "track_id": "rock1"}
    )
    assert still.ok


async def test_deadlines_are_honoured(running: Running) -> None:
    past = int((time.time() - 5) * 1000)
    late = await running.client.ask(
        {"type": "similar", "request_id": "late", "track_id": "rock1", "deadline_ms": past}
    )
    assert not late.ok and late.error.code == "timeout" and "deadline passed" in late.error.message
    soon = int((time.time() + 30) * 1000)
    timely = await running.client.ask(
        {"type": "similar", "request_id": "timely", "track_id": "rock1", "deadline_ms": soon}
    )
    assert timely.ok


async def test_the_index_follows_the_embeddings_topic(running: Running) -> None:
    settings, store = running.settings, running.store
    collection = store.collection_name("live")
    rng = np.random.default_rng(5)
    base = rng.standard_normal(8).astype(np.float32)
    store.ensure_collection(collection, dim=8)
    store.upsert(
        collection, [VectorRow(f"old{i}", base + rng.standard_normal(8)) for i in range(5)]
    )

    async def similar() -> QueryReply:
        request = {"type": "similar", "request_id": uuid.uuid4().hex, "track_id": "old0",
                   "models": ["live"]}  # fmt: skip
        return await running.client.ask(request, timeout=20)

    assert "fresh" not in [t.track_id for t in (await similar()).tracks]

    async def announce(track_id: str, status: str) -> None:
        event = EmbeddingEvent(track_id=track_id, model="live", model_version="v", status=status,
                               dim=8, collection=collection)  # fmt: skip
        await running.service.producer.send_and_wait(
            settings.topics.embeddings, event.to_bytes(), key=track_id.encode()
        )

    # The embedder upserts, then announces: the query service picks the row up.
    store.upsert(collection, [VectorRow("fresh", base + 0.01 * rng.standard_normal(8))])
    await announce("fresh", "embedded")
    async with asyncio.timeout(15):
        while "fresh" not in [t.track_id for t in (await similar()).tracks]:
            await asyncio.sleep(0.1)
    # A removal is announced the same way; the track stops coming back.
    store.delete(collection, ["fresh"])
    await announce("fresh", "deleted")
    async with asyncio.timeout(15):
        while "fresh" in [t.track_id for t in (await similar()).tracks]:
            await asyncio.sleep(0.1)
    gone = await running.client.ask(
        {
            "type": "recommend",
            "request_id": "gone",
            "models": ["live"],
            "seeds": [{"track_id": "fresh"}, {"track_id": "old1"}],
        }
    )
    assert gone.ok and any("fresh" in w for w in gone.warnings)


async def test_run_query_service_answers_in_process_until_stopped(
    kafka_broker: str, lite_store: VectorStore
) -> None:
    """How the main job runs it: in-process, sharing its (Milvus Lite) store."""
    settings = base_settings()
    await ensure_topics(settings.kafka, settings.topics)
    fill(lite_store, "musicnn", musicnn_library())
    stop = asyncio.Event()
    task = asyncio.create_task(run_query_service(settings, stop, store=lite_store))
    try:
        async with QueryClient(settings) as client:
            reply = await client.ask({"type": "similar", "request_id": "r", "track_id": "jazz0"})
        assert reply.ok and reply.tracks[0].track_id.startswith("jazz")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert lite_store.count(lite_store.collection_name("musicnn")) > 0  # the store stays open


async def test_answers_from_a_milvus_server_without_caching(
    kafka_broker: str, server_store: VectorStore
) -> None:
    """cache=never: every search goes to the Milvus server (HNSW); answers are the same,
    duplicates included (its background scan reads the pairs through Milvus searches)."""
    settings = base_settings(query=QuerySettings(cache="never"))
    await ensure_topics(settings.kafka, settings.topics)
    lib = musicnn_library()
    fill(server_store, "musicnn", lib)
    service = QueryService(settings, server_store)
    await service.start()
    try:
        async with QueryClient(settings) as client:
            reply = await client.ask(
                {
                    "type": "recommend",
                    "request_id": "srv",
                    "seeds": [{"track_id": "jazz2"}],
                    "limit": 6,
                    "max_per_artist": 2,
                }
            )
            text = await client.ask({"type": "text", "request_id": "srv-t", "prompt": "ambient"})
            copies = await client.ask(
                {"type": "duplicates", "request_id": "srv-d", "threshold": 0.02}
            )
        assert not service.library.index("musicnn").cache_vectors
    finally:
        await service.stop()
    query = lib.vector("jazz2")
    expected = sorted(lib.cluster("jazz"), key=lambda t: -float(lib.vector(t) @ query))
    got = [t.track_id for t in reply.tracks]
    assert "jazz2" not in got and set(got) == set(expected[1:7])
    assert text.ok and set(t.track_id for t in text.tracks[:5]) <= set(lib.cluster("ambient"))
    assert copies.ok and not copies.warnings
    assert [(p.first.track_id, p.second.track_id) for p in copies.pairs] == [
        ("rock0", "rock0-copy")
    ]
