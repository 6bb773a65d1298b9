"""The `query` consumer group: QueryRequests in on `requests`, QueryReplies out.

FastStream request/reply over Kafka, so any client that can set two record
headers takes part (docs/wire-contract.md): it publishes a JSON request with
`reply_to` (the topic to answer on) and `correlation_id`; the reply goes to
that topic with the same `correlation_id` header and the request id as key.

Guarantees:
- every request gets exactly one reply: results, or `ok=false` with an error
  code (malformed JSON, unknown type, invalid field, unknown track, model not
  embedded, deadline passed, internal error);
- a request whose `reply_to` is missing, is not a replies topic, or does not
  exist has nobody to answer: it goes to `dlq` (stage `query`), so a reply is
  never written into another family's topic;
- the deadline (`deadline_ms`, else the default timeout) is honoured: a late
  request is answered with a `timeout` error instead of being worked on;
- the consumer never dies of a request: errors become replies.
Requests are committed after they are answered: after the broker acknowledged
the reply (or the dead letter), never when read, so a replica that is killed
loses nothing: its partitions go to another replica, which answers again what
the dead one held (pipeline.consumers.answered_offsets). A client may then see
a second reply to one request; it keeps the first and drops the other by its
`correlation_id`. The deadline still applies: a request replayed after its
client gave up is answered with a `timeout` error, not worked on. The service
also follows `embeddings` (no group: every replica sees
every event) to keep its in-memory indexes current.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker, KafkaResponse
from faststream.kafka.annotations import KafkaMessage
from threadpoolctl import threadpool_limits

from models.registry import available_models
from pipeline.bus import make_admin, make_broker, make_consumer, make_producer
from pipeline.config import Settings
from pipeline.consumers.answered_offsets import AnswerCommits
from pipeline.deadletters import DeadLetterSink, dead_letter_for_record
from pipeline.errors import InvalidInput
from pipeline.recommender.engine import QueryEngine, invalid_request_reply
from pipeline.recommender.library import Library
from pipeline.recommender.seeds import SeedSource
from pipeline.schemas import EmbeddingEvent, SchemaError
from pipeline.schemas.queries import QueryReply, QueryRequest, ReplyError, query_request_adapter
from pipeline.store import VectorStore
from pipeline.topics import query_group, read_from_end
from pipeline.wiring import text_support, vector_store

log = logging.getLogger(__name__)

JSON = "application/json"


# While a fetch waits at the broker for partitions without data, a partition whose records
# were still being handled is not fetched again: a new request there waits for that fetch
# (aiokafka's default 500 ms was the p99 of every bench run). 25 ms keeps idle polling cheap.
FETCH_MAX_WAIT_MS = 25
# FastStream's concurrent subscriber (the one that answers requests in parallel on one
# consumer) auto-commits what it has read; set so far apart it never does on a timer:
# the service commits what it answered itself (answered_offsets).
NO_TIMED_AUTO_COMMIT_MS = 24 * 3600 * 1000


class ReplyTopicError(InvalidInput):
    """A request's reply_to names no topic this service may answer on."""


class ReplyTopics:
    """Which `reply_to` topics get answers: the replies topic and its sub-topics, if they exist."""

    def __init__(self, settings: Settings) -> None:
        replies = settings.topics.replies
        self.kafka = settings.kafka
        self.prefixes = (f"{replies}.", *settings.query.reply_topic_prefixes)
        self.replies = replies
        self._known: set[str] = set()
        self._refreshed = 0.0
        self._lock = asyncio.Lock()

    def allowed(self, topic: str) -> bool:
        return topic == self.replies or topic.startswith(self.prefixes)

    async def refresh(self) -> None:
        admin = make_admin(self.kafka)
        await admin.start()
        try:
            self._known = set(await admin.list_topics())
        finally:
            await admin.close()
        self._refreshed = time.monotonic()

    async def problem(self, topic: str) -> str | None:
        """Why no reply can go to `topic`, or None when it can."""
        if not topic:
            return "no reply_to header: nobody to answer"
        if not self.allowed(topic):
            allowed = ", ".join([self.replies, *(f"{p}*" for p in self.prefixes)])
            return f"reply_to topic {topic!r} is not a replies topic (allowed: {allowed})"
        if topic not in self._known:
            # A client may have created its reply topic a moment ago: look again, once
            # per miss (callers waiting on the lock share a refresh made after they asked).
            asked_at = time.monotonic()
            async with self._lock:
                if self._refreshed < asked_at:
                    await self.refresh()
            if topic not in self._known:
                return f"reply_to topic {topic!r} does not exist (create it before asking)"
        return None


@dataclass
class ServiceStats:
    answered: int = 0
    errors: int = 0
    dead_lettered: int = 0


class QueryService:
    """The engine behind the `requests` subscriber, with its library, encoders and threads."""

    def __init__(self, settings: Settings, store: VectorStore) -> None:
        self.settings = settings
        self.library = Library(store, settings.query)
        self.text = text_support(settings)
        seeds = SeedSource.from_settings(settings.navidrome)
        self.engine = QueryEngine(settings.query, self.library, self.text, seeds)
        self.executor = ThreadPoolExecutor(settings.query.threads, thread_name_prefix="query")
        self.reply_topics = ReplyTopics(settings)
        self.producer = make_producer(settings.kafka, role="query")
        self.dlq = DeadLetterSink(self.producer, settings.topics.dlq)
        self.broker = build_broker(settings, self)
        self.stats = ServiceStats()
        # Requests handed to our middleware and not yet replied to (see request_guard).
        self.in_hand = 0
        # Answered requests are committed together every 100 ms, not one commit per reply.
        self.commits = AnswerCommits(lambda: self.broker.subscribers[0].consumer, 0.1)
        self.ready = asyncio.Event()  # indexes and text encoder warmed up
        self.following = asyncio.Event()  # positioned on `embeddings`
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.settings.query.blas_threads is not None:
            # Process-wide: the query process's numpy runs single-threaded per call.
            threadpool_limits(limits=self.settings.query.blas_threads, user_api="blas")
        await self.producer.start()
        await self.reply_topics.refresh()
        self._tasks = [
            asyncio.create_task(self._warm(), name="query-warm"),
            asyncio.create_task(self._follow_embeddings(), name="query-embeddings"),
        ]
        await self.broker.start()
        self._tasks.append(asyncio.create_task(self.commits.run(), name="query-commits"))
        log.info(
            "query service answering on %s (group %s)",
            self.settings.topics.requests,
            query_group(self.settings),
        )

    async def stop(self) -> None:
        self._stopping.set()
        await self._drain()
        await self.commits.commit()
        await self.broker.stop()
        for model, index in self.library.loaded().items():
            batcher = index.batcher
            if batcher.batches:
                log.info(
                    "%s: %d searches in %d matrix products (%.1f per product)",
                    model,
                    batcher.items,
                    batcher.batches,
                    batcher.items / batcher.batches,
                )
        log.info("query service stopped: %s", self.stats)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.producer.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.text.close()

    # -- answering ----------------------------------------------------------

    async def answer(self, request: Any, message: Any) -> KafkaResponse:
        deadline, late = self._deadline(request, message)
        if late:
            reply = _error_reply(request.request_id, request.type, "timeout", late)
        else:
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self.executor, self.engine.answer, request, deadline)
            try:
                reply = await asyncio.wait_for(work, timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                reply = _error_reply(
                    request.request_id,
                    request.type,
                    "timeout",
                    "the deadline passed while the request was answered",
                )
        return self.response(reply)

    def _deadline(self, request: Any, message: Any) -> tuple[float, str | None]:
        """(deadline as time.monotonic(), why it is already too late or None)."""
        now_mono, now = time.monotonic(), time.time()
        if request.deadline_ms is not None:
            left = request.deadline_ms / 1000 - now
            if left <= 0:
                return now_mono, f"the deadline passed {-left:.3f} s before the request was read"
            # A far deadline does not let one request hold a worker for ever.
            return now_mono + min(left, self.settings.query.max_request_age_s), None
        sent = getattr(message.raw_message, "timestamp", None)
        age = now - sent / 1000 if sent else 0.0
        if age > self.settings.query.max_request_age_s:
            return now_mono, f"the request waited {age:.0f} s, longer than max_request_age_s"
        return now_mono + self.settings.query.default_timeout_s, None

    def response(self, reply: QueryReply) -> KafkaResponse:
        if reply.ok:
            self.stats.answered += 1
        else:
            self.stats.errors += 1
        return KafkaResponse(
            reply.to_bytes(), key=reply.request_id.encode(), headers={"content-type": JSON}
        )

    def invalid(self, message: Any, error: Exception) -> KafkaResponse:
        """The error reply for a request that failed before or inside the handler."""
        raw = message.raw_message
        key = raw.key.decode("utf-8", errors="replace") if raw.key else None
        reply = invalid_request_reply(message.body, key)
        if reply is None:  # a valid request: the failure was ours
            log.error("answering %s failed", key, exc_info=error)
            message = f"{type(error).__name__}: {error}"[:4000]
            reply = _error_reply(key or "unknown", None, "internal", message)
        return self.response(reply)

    async def dead_letter(
        self, record: Any, error: BaseException, stage: Literal["query", "publish"] = "query"
    ) -> None:
        """Keep a request nobody could be answered for (`record`: its ConsumerRecord)."""
        group = query_group(self.settings)
        letter = dead_letter_for_record(record, stage=stage, error=error, group=group)
        await self.dlq.send(letter)
        self.stats.dead_lettered += 1

    async def _drain(self) -> None:
        """Stop taking requests and answer those already taken, before leaving the group.

        A replica that left with requests in hand (fetched, queued for a worker,
        being answered) would leave them to the replica taking its partitions,
        which answers them again from the last commit: their clients would wait
        for that (and an auto-commit on leaving would skip them). Paused
        partitions are not read any more; once nothing is in hand, the offsets
        committed on leaving are past answered requests only, and the replicas
        that stay go on from there.

        FastStream's public API only: its `graceful_timeout` waits for handlers
        already running, but a record it has read and not yet handed to a worker
        would be dropped by its stop. So the subscriber's aiokafka consumer (what
        `faststream.kafka.annotations.Consumer` injects) is paused, and
        `in_hand` counts from our middleware's `on_receive` to its
        `after_processed`, which comes after the reply is published. A record
        read but not yet in the middleware waits on nothing but the event loop
        (a worker slot that only other such records hold, a queue that is read
        at once), so it reaches `on_receive` before a 20 ms sleep ends; three
        idle rounds in a row leave a wide margin.
        """
        consumer = self.broker.subscribers[0].consumer
        if consumer is None:
            return
        give_up = time.monotonic() + self.settings.query.default_timeout_s
        idle_rounds = 0
        while idle_rounds < 3:
            # Again every round: a rebalance during the drain may assign more partitions.
            consumer.pause(*consumer.assignment())
            idle_rounds = 0 if self.in_hand else idle_rounds + 1
            if time.monotonic() > give_up:
                log.warning("stopping with %d requests still unanswered", self.in_hand)
                return
            await asyncio.sleep(0.02)

    # -- background ---------------------------------------------------------

    async def _warm(self) -> None:
        try:
            models = dict.fromkeys([*self.settings.embed.models, *available_models()])
            opened = await asyncio.to_thread(self.library.warm, models)
            await asyncio.to_thread(self.text.warm)
            freeze_heap()
            log.info("query indexes ready: %s", ", ".join(opened) or "none yet")
        except Exception:  # warming is an optimisation: requests load what they need
            log.exception("warming the query indexes failed")
        finally:
            self.ready.set()

    async def _follow_embeddings(self) -> None:
        """Keep indexes current from `embeddings`, and reconcile with Milvus now and then."""
        topic = self.settings.topics.embeddings
        consumer = make_consumer(
            self.settings.kafka, group_id=None, role="query-embeddings", auto_offset_reset="latest"
        )
        await consumer.start()
        try:
            await read_from_end(consumer, self.settings, topic)
            self.following.set()
            refresh_s = self.settings.query.cache_refresh_s
            next_check = time.monotonic() + refresh_s
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                for record in (r for rs in batches.values() for r in rs):
                    try:
                        self.library.note(EmbeddingEvent.from_bytes(record.value))
                    except SchemaError as exc:
                        log.warning("ignoring an unreadable embeddings record: %s", exc)
                try:
                    if batches:
                        await asyncio.to_thread(self.library.apply_pending)
                    if refresh_s and time.monotonic() > next_check:
                        next_check = time.monotonic() + refresh_s
                        if await asyncio.to_thread(self.library.reconcile):
                            freeze_heap()
                except Exception:  # Milvus busy or down: the next round (or reconcile) catches up
                    log.exception("updating the query indexes failed")
        finally:
            await consumer.stop()


def freeze_heap() -> None:
    """Keep the indexes' million long-lived objects (ids, metadata) out of garbage collection.

    Measured: without this, full collections over three 50,000-track indexes
    paused the service for 400-550 ms now and then, the worst latency of every
    bench run. Objects created later (requests) are collected as usual.
    """
    gc.collect()
    gc.freeze()


def _error_reply(request_id: str, kind: str | None, code: Any, message: str) -> QueryReply:
    return QueryReply(
        request_id=request_id, type=kind, ok=False, error=ReplyError(code=code, message=message)
    )


def request_guard(service: QueryService | None) -> type[BaseMiddleware]:
    """Middleware around decoding and handling: bad reply_to -> dlq, any error -> a reply;
    it also keeps `service.in_hand`, the count the drain waits on."""

    class RequestGuard(BaseMiddleware):
        async def on_receive(self) -> None:
            assert service is not None
            service.in_hand += 1
            service.commits.taken(self.msg)

        async def after_processed(
            self, exc_type: Any = None, exc_val: Any = None, exc_tb: Any = None
        ) -> bool | None:
            """After the reply (or the dead letter) is published, or the handling failed.

            Either way the request may be committed: a failure here was logged (and
            a request that makes its handler fail would fail again on a replay).
            """
            assert service is not None
            if exc_type is not None:
                log.error("a request was neither answered nor dead-lettered", exc_info=exc_val)
            service.in_hand -= 1
            service.commits.answered(self.msg)
            return False

        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            assert service is not None
            problem = await service.reply_topics.problem(msg.reply_to or "")
            if problem:
                msg.reply_to = ""  # nothing is published anywhere
                await service.dead_letter(msg.raw_message, ReplyTopicError(problem))
                return None
            try:
                return await call_next(msg)
            except Exception as exc:
                return service.invalid(msg, exc)

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            """The reply could not be published (its topic deleted since the check, the
            broker gone): the request goes to the dlq, so the failure is kept, not lost."""
            assert service is not None
            try:
                return await call_next(cmd)
            except Exception as exc:
                log.warning(
                    "the reply on %s could not be published: %s: %s",
                    getattr(cmd, "destination", "?"),
                    type(exc).__name__,
                    exc,
                )
                await service.dead_letter(self.msg, exc, stage="publish")
                return None

    return RequestGuard


async def parse_request(record: Any, parse: Any) -> Any:
    """FastStream's parsing, after making every header value text it can decode.

    FastStream decodes each header as UTF-8 and a client may send anything
    (a null value, binary); that must not make a request vanish unanswered.
    """
    headers = list(record.headers or [])
    safe = [(k, (v or b"").decode("utf-8", errors="replace").encode()) for k, v in headers]
    if safe != headers:
        record = dataclasses.replace(record, headers=safe)
    return await parse(record)


async def decode_request(message: Any) -> Any:
    """JSON to a validated request in one pass of pydantic-core (not json.loads, then
    validation of the dict): the request type is found from `type` directly."""
    return query_request_adapter.validate_json(message.body)


def build_broker(settings: Settings, service: QueryService | None) -> KafkaBroker:
    """The FastStream broker with the `requests` subscriber (also used for AsyncAPI)."""
    broker: KafkaBroker = make_broker(
        settings.kafka, middlewares=[request_guard(service)], log_level=logging.DEBUG
    )

    @broker.subscriber(
        settings.topics.requests,
        parser=parse_request,
        decoder=decode_request,
        group_id=query_group(settings),
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        auto_commit_interval_ms=NO_TIMED_AUTO_COMMIT_MS,
        auto_offset_reset="earliest",
        max_workers=settings.query.workers,
        title="requests",
        description="Recommendation queries. Headers: reply_to (required: the replies topic "
        "or a topic under it), correlation_id (echoed on the reply), content-type "
        "application/json. Key: request_id.",
    )
    async def answer_query(request: QueryRequest, message: KafkaMessage) -> KafkaResponse:
        """Answer one query on the topic its reply_to header names."""
        assert service is not None
        return await service.answer(request, message)

    broker.publisher(
        settings.topics.replies,
        schema=QueryReply,
        title="replies",
        description="Answers: key request_id, header correlation_id copied from the request. "
        "Clients may name their own topic under this one in reply_to.",
    )
    return broker


async def run_query_service(
    settings: Settings, stop: asyncio.Event, store: VectorStore | None = None
) -> None:
    """Answer queries until `stop` is set (`sonicbus query`, or in-process in the main job).

    Pass the main job's `store`: Milvus Lite serves one process at a time.
    """
    own_store = store is None
    if store is None:
        store = vector_store(settings)
    service = QueryService(settings, store)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
        if own_store:
            store.close()
