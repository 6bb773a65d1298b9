"""Scaling the query service out: replicas in the `query` group share the requests.

The story an operator lives through: two `sonicbus query` processes answer
from one Milvus server; one of them is stopped (a rolling restart, a
scale-down) while clients keep asking. Every request must still get exactly
one reply: what the stopping replica had already taken from Kafka it answers
before it leaves, and the rest is answered by the replica that stays.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import time
from typing import Any

import pytest

from pipeline.client import QueryClient
from pipeline.config import QuerySettings
from pipeline.consumers import query
from pipeline.consumers.query import QueryService
from pipeline.schemas.queries import QueryReply
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.library import fill, musicnn_library
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(240)

SLOW_S = 0.05  # the replica that will be stopped is busy: requests pile up in its hands


def slowed(service: QueryService) -> None:
    """Make `service` take SLOW_S per request, so it holds several when it is stopped."""
    answer = service.engine.answer

    def slow_answer(request: Any, deadline: float | None = None) -> QueryReply:
        time.sleep(SLOW_S)
        return answer(request, deadline)

    service.engine.answer = slow_answer  # type: ignore[method-assign]


@pytest.mark.parametrize("workers", [1, 4])  # FastStream reads differently with one worker
async def test_a_replica_stopped_mid_stream_loses_no_request(
    kafka_broker: str, server_store: VectorStore, workers: int
) -> None:
    settings = base_settings(query=QuerySettings(workers=workers, threads=workers))
    await ensure_topics(settings.kafka, settings.topics)
    library = musicnn_library()
    fill(server_store, "musicnn", library)
    leaving, staying = QueryService(settings, server_store), QueryService(settings, server_store)
    slowed(leaving)
    await leaving.start()
    await staying.start()
    try:
        async with QueryClient(settings) as client:
            # Both replicas are in the group and answering before the test proper.
            warm = [
                await client.ask({"type": "similar", "request_id": f"w{i}", "track_id": "jazz1"})
                for i in range(12)
            ]
            assert all(r.ok for r in warm)
            deadline = time.monotonic() + 60
            while not (leaving.stats.answered and staying.stats.answered):
                assert time.monotonic() < deadline, "one replica never got a partition"
                await client.ask({"type": "similar", "request_id": "probe", "track_id": "rock1"})

            async def ask(i: int) -> QueryReply:
                request = {"type": "similar", "request_id": f"r{i}", "track_id": "jazz2"}
                return await client.ask(request, timeout=60)

            asked: list[asyncio.Task[QueryReply]] = []
            for i in range(240):
                asked.append(asyncio.create_task(ask(i)))
                if i == 120:
                    stopping = asyncio.create_task(leaving.stop())
                await asyncio.sleep(0.01)
            await stopping
            replies = await asyncio.gather(*asked)
    finally:
        await staying.stop()
    assert [r.request_id for r in replies] == [f"r{i}" for i in range(240)]
    failed = [(r.request_id, r.error) for r in replies if not r.ok]
    assert not failed
    assert all(r.tracks and "jazz2" not in {t.track_id for t in r.tracks} for r in replies)
    assert leaving.stats.answered > 0 and staying.stats.answered > 0
    assert leaving.in_hand == 0 and staying.in_hand == 0  # every on_receive had its reply
    answered = leaving.stats.answered + staying.stats.answered
    # warm-up + probes + the 240: each answered once, by one replica
    assert answered >= 12 + 240


def test_the_drain_uses_faststream_through_its_public_api_only() -> None:
    """FastStream is not pinned: a private name (a `_`-module or attribute) could move in any
    release and silently break the drain, so the query service must not use one."""
    tree = ast.parse(inspect.getsource(query))
    private = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("faststream")
        and any(part.startswith("_") for part in (node.module or "").split("."))
    ]
    private += [
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in {"limiter", "receive_stream", "send_stream", "lock", "max_workers"}
    ]
    assert not private, f"pipeline/consumers/query.py uses FastStream internals: {private}"
