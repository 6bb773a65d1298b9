"""A small Python client of the query service: publish a request, await its reply.

    async with QueryClient(settings) as client:
        reply = await client.ask(SimilarRequest(request_id="r1", track_id="..."), timeout=5)

The client reads its reply topic from the end (no consumer group, so every
client sees every reply on it and keeps only its own, matched by the
`correlation_id` header). It is positioned before the first request is sent,
so no reply can slip past. Several clients may share the default `replies`
topic; a busy one is better off with its own (`reply_topic=` a topic under
the replies topic, created beforehand).

A request may be answered twice (a query replica died after replying and
before committing; its successor answers again): the first reply settles the
request, a later one with the same `correlation_id` is dropped and counted in
`duplicate_replies`. The reader outlives broker errors (a broker restarting,
a leader moving): it logs once and goes on reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from aiokafka.errors import KafkaError

from pipeline.bus import make_broker, make_consumer
from pipeline.config import Settings
from pipeline.errors import Timeout
from pipeline.schemas import SchemaError
from pipeline.schemas.queries import QueryReply, query_request_adapter
from pipeline.topics import read_from_end

log = logging.getLogger(__name__)

# Correlation ids answered recently, to tell a duplicate reply from a stranger's reply.
ANSWERED_MEMORY = 10_000


class QueryTimeout(Timeout):
    """No reply arrived in time (is `sonicbus query` running?)."""


class QueryClient:
    """Request/reply over Kafka (see the module docstring)."""

    def __init__(self, settings: Settings, reply_topic: str | None = None) -> None:
        self.settings = settings
        self.reply_topic = reply_topic or settings.topics.replies
        self._broker: Any = None
        self._consumer: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[QueryReply]] = {}
        self._answered: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self.duplicate_replies = 0

    async def __aenter__(self) -> QueryClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and position on the reply topic; on failure nothing is left open."""
        try:
            self._broker = make_broker(self.settings.kafka)
            await self._broker.connect()
            self._consumer = make_consumer(
                self.settings.kafka, group_id=None, role="query-client", fetch_max_wait_ms=25
            )
            await self._consumer.start()
            await read_from_end(self._consumer, self.settings, self.reply_topic)
        except BaseException:
            await self.stop()
            raise
        self._reader = asyncio.create_task(self._read_replies(), name="query-client-replies")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._broker is not None:
            await self._broker.stop()
            self._broker = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def ask(self, request: Any, timeout: float | None = None) -> QueryReply:
        """Send one request (a request model or a dict) and wait for its reply.

        Without a `deadline_ms` the request gets one of now + timeout, so the
        service does not work on an answer nobody waits for any more.
        """
        timeout = timeout if timeout is not None else self.settings.query.default_timeout_s
        if isinstance(request, dict):
            request = query_request_adapter.validate_python(request)
        if request.deadline_ms is None:
            request = request.model_copy(
                update={"deadline_ms": int((time.time() + timeout) * 1000)}
            )
        body = request.model_dump_json(exclude_none=True).encode()
        return await self.ask_raw(body, key=request.request_id, timeout=timeout)

    async def ask_raw(
        self, body: bytes, key: str | None = None, timeout: float = 10.0
    ) -> QueryReply:
        """Send any bytes as a request (e.g. to see the service's answer to bad input)."""
        if self._broker is None:
            raise RuntimeError("use `async with QueryClient(settings) as client`")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[QueryReply] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await self._broker.publish(
                body,
                self.settings.topics.requests,
                key=key.encode() if key else None,
                headers={"content-type": "application/json"},
                correlation_id=correlation_id,
                reply_to=self.reply_topic,
            )
            return await asyncio.wait_for(future, timeout=timeout)
        except TimeoutError:
            raise QueryTimeout(
                f"no reply to {key or correlation_id} within {timeout:g} s on {self.reply_topic} "
                f"(is `sonicbus query` running against {self.settings.kafka.bootstrap_servers}?)"
            ) from None
        finally:
            self._waiting.pop(correlation_id, None)

    async def _read_replies(self) -> None:
        failing = False
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except KafkaError as exc:
                if not failing:
                    log.warning("reading replies failed (%s); retrying", exc)
                failing = True
                await asyncio.sleep(0.5)
                continue
            failing = False
            for record in (r for rs in batches.values() for r in rs):
                headers = dict(record.headers or [])
                correlation_id = (headers.get("correlation_id") or b"").decode(errors="replace")
                self._settle(correlation_id, record.value)

    def _settle(self, correlation_id: str, value: bytes | None) -> None:
        """The first reply to a request settles it; a later one is a duplicate, dropped."""
        future = self._waiting.get(correlation_id)
        if future is None or future.done():
            if correlation_id in self._answered:
                self.duplicate_replies += 1
            return  # a duplicate, or another client's reply on a shared topic
        self._answered[correlation_id] = None
        if len(self._answered) > ANSWERED_MEMORY:
            del self._answered[next(iter(self._answered))]
        try:
            future.set_result(QueryReply.from_bytes(value or b""))
        except SchemaError as exc:
            future.set_exception(exc)
