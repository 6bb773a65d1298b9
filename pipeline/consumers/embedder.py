"""The `embed-<model>` consumer group: tracks in, vectors in Milvus, events out.

For each batch of `tracks` records (stages, in order):
1. tombstones delete the track's row;
2. tracks whose fingerprint and model_version are already stored are skipped;
3. audio is decoded in threads, each file under a timeout (undecodable ->
   dead letter, stage `audio`);
4. the model embeds the decoded tracks together (batched forward passes);
5. each new vector is checked against the collection for near-duplicates;
6. rows are upserted and flushed (Milvus down -> TransientError: the worker
   rewinds and retries, committing nothing);
7. an `EmbeddingEvent` per track is published; the worker then commits.

Between batches the worker asks the control topic whether the operator paused
this model (`sonicbus pause`, pipeline.ops.pause); `embed.threads` caps the
CPU threads of torch, BLAS and the decode pool (`cap_threads`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from models.analysis import AudioFeatures
from models.base import (
    EmbeddingModel,
    ManagedModel,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
)
from pipeline.audio import AudioDecodeError, DecodeLimits
from pipeline.bus import make_consumer, make_producer
from pipeline.config import Settings
from pipeline.consumers.track_decoding import decode_and_prepare
from pipeline.consumers.worker import (
    BatchWorker,
    Delivery,
    Failure,
    PermanentError,
    TransientError,
)
from pipeline.control import PauseFollower
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.download import NavidromeRefused, reachable_audio
from pipeline.schemas import EmbeddingEvent, TrackEvent, TrackMetadata
from pipeline.schemas.embeddings import NearDuplicate, StageTimings
from pipeline.schemas.tracks import title_from_file_name
from pipeline.store import StoreUnavailable, VectorRow, VectorStore, analysis_fields
from pipeline.topics import embed_group
from pipeline.wiring import embedding_model, vector_store

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    delivery: Delivery[TrackEvent]
    audio: TrackAudio
    decode_ms: float
    prepare_ms: float = 0.0
    audio_s: float = 0.0
    analysis: AudioFeatures | None = None
    analyse_ms: float = 0.0


class Embedder:
    """The handler of one model's consumer group (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        model: ManagedModel,
        store: VectorStore,
        producer: AIOKafkaProducer,
    ) -> None:
        self.settings = settings
        self.model = model
        self.store = store
        self.producer = producer
        self.collection = store.collection_name(model.model.name)
        self.force = False
        self._ready: set[str] = set()
        # `embedded` events of rows already upserted whose send was not acknowledged, by
        # (track_id, fingerprint token): the retried batch finds those rows unchanged and
        # must still announce them as `embedded` (see `_announce_unchanged`).
        self._unannounced: dict[tuple[str, str], EmbeddingEvent] = {}
        self.limits = DecodeLimits(max_duration_s=settings.embed.max_duration_s)
        # Decoding (and the model's `prepare`) runs in a pool of its own, beside the model:
        # `embed.threads` threads, or by default half the cores, so the next tracks decode
        # while the network works on the previous ones (see `_embed_as_decoded`). The slots
        # let a file wait for a thread before its decode timeout starts.
        threads = settings.embed.threads or decode_threads()
        self.decode_pool = ThreadPoolExecutor(
            threads, thread_name_prefix=f"decode-{model.model.name}"
        )
        self.decode_slots = asyncio.Semaphore(threads)
        self.decode_slots_count = threads

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    async def prepare(self) -> None:
        # Read past the cache: an upgrade (`before_join`) may have just moved the target.
        state = await self._store_call(self.store.model_state, self.model.model.name, True)
        await self._write_to(state.target)

    async def _write_to(self, collection: str) -> None:
        if collection not in self._ready:
            await self._store_call(self.store.ensure_collection, collection, self.model.model.dim)
            self._ready.add(collection)
        self.collection = collection

    async def _store_call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except StoreUnavailable as exc:
            raise TransientError(str(exc)) from exc

    async def handle(self, batch: list[Delivery[TrackEvent]]) -> list[Failure]:
        # Re-resolved per batch: a replay (`sonicbus reembed`) may point writes at a fresh
        # collection, force re-embedding, or hold them (cancelled: ReplayPaused -> rewind).
        target = await self._store_call(self.store.write_target, self.model.model.name)
        await self._write_to(target.collection)
        self.force = target.force
        events: list[EmbeddingEvent] = []
        failures: list[Failure] = []
        latest = _latest_per_key(batch)
        removed = [d.key for d in latest if d.is_tombstone and d.key]
        if removed:
            await self._store_call(self.store.delete, self.collection, removed)
            events += [self._event(key, "deleted") for key in removed]

        todo = [d for d in latest if d.value is not None]
        todo, skipped = await self._split_unchanged(todo)
        events += [self._announce_unchanged(d.value) for d in skipped]  # type: ignore[arg-type]

        decoded, embeddings, embed_ms, decode_failures = await self._embed_as_decoded(todo)
        failures += decode_failures
        if decoded:
            duplicates = await self._near_duplicates(embeddings)
            started = time.perf_counter()
            rows = [self._row(d, e) for d, e in zip(decoded, embeddings, strict=True)]
            await self._store_call(self.store.upsert, self.collection, rows)
            upsert_ms = (time.perf_counter() - started) * 1000 / len(decoded)
            for d, e in zip(decoded, embeddings, strict=True):
                timings = StageTimings(
                    decode_ms=d.decode_ms,
                    prepare_ms=d.prepare_ms,
                    analyse_ms=d.analyse_ms,
                    embed_ms=embed_ms[e.track_id],
                    upsert_ms=upsert_ms,
                    audio_s=d.audio_s,
                )
                event = self._event(e.track_id, "embedded", timings, duplicates.get(e.track_id))
                self._unannounced[(e.track_id, _token(d.delivery.value))] = event  # type: ignore[arg-type]
                events.append(event)
        await self._publish(events)
        return failures

    async def _split_unchanged(
        self, deliveries: list[Delivery[TrackEvent]]
    ) -> tuple[list[Delivery[TrackEvent]], list[Delivery[TrackEvent]]]:
        if not deliveries or self.force:
            return deliveries, []
        ids = [d.value.track_id for d in deliveries]  # type: ignore[union-attr]
        stored = await self._store_call(self.store.get, self.collection, ids)
        version = self.model.model.model_version
        todo, skipped = [], []
        for d in deliveries:
            event = d.value
            assert event is not None
            row = stored.get(event.track_id)
            token = _token(event)
            if row and token and row.fingerprint == token and row.model_version == version:
                skipped.append(d)
            else:
                todo.append(d)
        return todo, skipped

    def _announce_unchanged(self, event: TrackEvent) -> EmbeddingEvent:
        """`skipped_unchanged`, unless this embedder stored the row itself and its `embedded`
        event was never acknowledged (a retried batch): then that event, timings and all."""
        stored = self._unannounced.get((event.track_id, _token(event)))
        return stored or self._event(event.track_id, "skipped_unchanged")

    async def _embed_as_decoded(
        self, deliveries: list[Delivery[TrackEvent]]
    ) -> tuple[list[Decoded], list[TrackEmbedding], dict[str, float], list[Failure]]:
        """Decode every track in the decode pool and run the model on tracks as they arrive.

        Whenever the model is idle it takes every track decoded so far, so decoding the
        next files overlaps with the network (measured on 2 cores: bench/embed_throughput.py).
        Returns the decoded tracks and their embeddings in one order, each track's share
        of model time (ms), and the tracks that could not be decoded.
        """
        # Decoded tracks waiting for the model are bounded (memory: a long track's samples
        # and patches are ~45 MB): a slot is taken before decoding, given back once embedded.
        ahead = asyncio.Semaphore(self.decode_slots_count + DECODED_AHEAD)

        async def decode(delivery: Delivery[TrackEvent]) -> Decoded | Failure:
            await ahead.acquire()
            result = await self._decode(delivery)
            if isinstance(result, Failure):
                ahead.release()
            return result

        pending = {asyncio.ensure_future(decode(d)) for d in deliveries}
        ready: list[Decoded] = []
        running: asyncio.Task[tuple[list[Decoded], list[TrackEmbedding], float]] | None = None
        decoded: list[Decoded] = []
        embeddings: list[TrackEmbedding] = []
        embed_ms: dict[str, float] = {}
        failures: list[Failure] = []

        def collect(task: asyncio.Task[tuple[list[Decoded], list[TrackEmbedding], float]]) -> None:
            chunk, chunk_embeddings, seconds = task.result()
            decoded.extend(chunk)
            embeddings.extend(chunk_embeddings)
            embed_ms.update((d.audio.track_id, seconds * 1000 / len(chunk)) for d in chunk)
            for _ in chunk:
                ahead.release()

        try:
            while pending or ready or running:
                waiting = set(pending) | ({running} if running else set())
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is running:
                        collect(running)
                        running = None
                    else:
                        pending.discard(task)  # type: ignore[arg-type]
                        result = task.result()
                        (ready if isinstance(result, Decoded) else failures).append(result)  # type: ignore[arg-type]
                if running is None and ready:
                    running = asyncio.ensure_future(self._embed_chunk(ready))
                    ready = []
        finally:
            for task in (*pending, *([running] if running else [])):
                task.cancel()
        return decoded, embeddings, embed_ms, failures

    async def _embed_chunk(
        self, chunk: list[Decoded]
    ) -> tuple[list[Decoded], list[TrackEmbedding], float]:
        started = time.perf_counter()
        try:
            embeddings = await asyncio.to_thread(self.model.embed, [d.audio for d in chunk])
        except ModelUnavailable as exc:
            # A broken model folder is the operator's to fix, not the tracks' fault:
            # rewind and retry later instead of dead-lettering the library.
            raise TransientError(str(exc)) from exc
        return chunk, embeddings, time.perf_counter() - started

    async def _decode(self, delivery: Delivery[TrackEvent]) -> Decoded | Failure:
        event = delivery.value
        assert event is not None
        segment = event.segment
        try:
            # The file itself, or its original fetched from Navidrome when the path
            # cannot be read on this machine (pipeline.navidrome.download).
            async with reachable_audio(event, self.settings.navidrome) as path:
                decode = functools.partial(
                    decode_and_prepare,
                    self.model.model,
                    self.limits,
                    self.settings.embed.audio_features,
                    event.track_id,
                    path,
                    segment.start_s if segment else 0.0,
                    segment.end_s if segment else None,
                )
                async with self.decode_slots:
                    audio, analysis, timings = await asyncio.wait_for(
                        asyncio.get_running_loop().run_in_executor(self.decode_pool, decode),
                        timeout=self.settings.embed.decode_timeout_s,
                    )
        except NavidromeRefused as exc:
            return Failure(delivery, PermanentError(str(exc), stage="audio"))
        except NavidromeUnavailable as exc:  # server down or slow: retry the batch later
            raise TransientError(str(exc)) from exc
        except AudioDecodeError as exc:
            return Failure(delivery, PermanentError(str(exc), stage="audio"))
        except TimeoutError:
            message = f"decoding {event.path} took over {self.settings.embed.decode_timeout_s} s"
            return Failure(delivery, PermanentError(message, stage="audio"))
        decode_ms, prepare_ms, analyse_ms, audio_s = timings
        return Decoded(delivery, audio, decode_ms, prepare_ms, audio_s, analysis, analyse_ms)

    async def _near_duplicates(
        self, embeddings: list[TrackEmbedding]
    ) -> dict[str, list[NearDuplicate]]:
        """Stored tracks almost identical to a new one (same recording, other file)."""
        threshold = self.settings.embed.duplicate_similarity
        hits = await self._store_call(
            self.store.search, self.collection, [e.vector for e in embeddings], 3, "", ()
        )
        found: dict[str, list[NearDuplicate]] = {}
        for embedding, candidates in zip(embeddings, hits, strict=True):
            close = [
                NearDuplicate(track_id=h.track_id, similarity=round(h.score, 5))
                for h in candidates
                if h.track_id != embedding.track_id and h.score >= threshold
            ]
            if close:
                found[embedding.track_id] = close
                log.info(
                    "near-duplicate: %s ~ %s",
                    embedding.track_id,
                    ", ".join(c.track_id for c in close),
                    extra={"track_id": embedding.track_id},
                )
        return found

    def _row(self, decoded: Decoded, embedding: TrackEmbedding) -> VectorRow:
        event = decoded.delivery.value
        assert event is not None
        meta = event.metadata
        analysis = decoded.analysis.model_dump() if decoded.analysis else None
        return VectorRow(
            track_id=event.track_id,
            vector=embedding.vector,
            artist=meta.artist or "",
            title=meta.title or title_from_file_name(event.path),
            album=meta.album or "",
            duration=meta.duration_s or 0.0,
            year=meta.year or 0,
            genre=meta.genre or "",
            fingerprint=event.fingerprint.token() if event.fingerprint else "",
            model_version=self.model.model.model_version,
            **analysis_fields(analysis),
            extra={
                **embedding.extra,
                "path": event.path,
                **musicbrainz_ids(meta),
                **({"analysis": analysis} if analysis else {}),
            },
        )

    def _event(
        self,
        track_id: str,
        status: str,
        timings: StageTimings | None = None,
        duplicates: list[NearDuplicate] | None = None,
    ) -> EmbeddingEvent:
        return EmbeddingEvent(
            track_id=track_id,
            model=self.model.model.name,
            model_version=self.model.model.model_version,
            status=status,  # type: ignore[arg-type]
            dim=self.model.model.dim,
            collection=self.collection,
            timings=timings or StageTimings(),
            near_duplicates=duplicates or [],
        )

    async def _publish(self, events: list[EmbeddingEvent]) -> None:
        topic = self.settings.topics.embeddings
        futures = [
            await self.producer.send(topic, e.to_bytes(), key=e.track_id.encode()) for e in events
        ]
        await asyncio.gather(*futures)
        sent = {id(e) for e in events}
        for key in [k for k, e in self._unannounced.items() if id(e) in sent]:
            del self._unannounced[key]
        # A batch retried elsewhere (its partition moved) never clears its entries here:
        # keep the newest few thousand.
        for key in list(self._unannounced)[: max(0, len(self._unannounced) - UNANNOUNCED_KEPT)]:
            del self._unannounced[key]


UNANNOUNCED_KEPT = 10_000
# Decoded tracks that may wait for the network beyond the decode threads' own.
DECODED_AHEAD = 2


def _token(event: TrackEvent) -> str:
    return event.fingerprint.token() if event.fingerprint else ""


def _latest_per_key(batch: list[Delivery[TrackEvent]]) -> list[Delivery[TrackEvent]]:
    """Within one batch only the newest record per track matters (compaction semantics)."""
    latest: dict[str | None, Delivery[TrackEvent]] = {}
    for delivery in batch:
        key = delivery.key if delivery.value is None else delivery.value.track_id
        latest[key] = delivery
    return list(latest.values())


# What an edge runs before an embedder joins its group: (store, model, stop).
BeforeJoin = Callable[[VectorStore, EmbeddingModel, asyncio.Event], Awaitable[object]]


async def run_embedder(
    settings: Settings,
    model_name: str,
    stop: asyncio.Event,
    store: VectorStore | None = None,
    *,
    model: ManagedModel | None = None,
    before_join: BeforeJoin | None = None,
) -> None:
    """Run one model's consumer until `stop` is set (the `sonicbus embed` process).

    `model`: default, the one the settings describe (`wiring.embedding_model`).
    `before_join`: awaited once the model is loaded and before this process joins the
    group; the edges pass `pipeline.ops.upgrade`'s check, which starts the re-embed a
    changed model needs (Kafka resets a group's offsets only while it has no member).
    """
    own_store = store is None
    if store is None:
        store = vector_store(settings)
    model = model or embedding_model(settings, model_name)
    # Load before joining the group: a missing or wrong weights folder stops this
    # component with a clear error (the supervisor retries) before any record is read.
    await asyncio.to_thread(model.ensure_loaded)
    cap_threads(settings.embed.threads)
    producer = make_producer(settings.kafka, role=f"embed-{model_name}")
    consumer = make_consumer(
        settings.kafka,
        settings.topics.tracks,
        group_id=embed_group(settings, model_name),
        role=f"embed-{model_name}",
        max_poll_interval_ms=900_000,
    )
    embedder = Embedder(settings, model, store, producer)
    gate = PauseFollower(settings.kafka, settings.topics, model_name)
    await producer.start()
    try:
        if before_join is not None:
            await before_join(store, model.model, stop)
            if stop.is_set():  # stopped while it waited: never joined
                return
        await embedder.prepare()
        await gate.start()  # a standing pause holds before the first fetch
        await consumer.start()
        worker = BatchWorker(
            consumer=consumer,
            producer=producer,
            dlq_topic=settings.topics.dlq,
            group_id=embed_group(settings, model_name),
            schema=TrackEvent,
            handler=embedder.handle,
            batch_size=settings.embed.batch_tracks,
            max_attempts=settings.embed.max_attempts,
            gate=gate,
        )
        log.info("embedding with %s (group %s)", model_name, embed_group(settings, model_name))
        await worker.run(stop)
    finally:
        await consumer.stop()
        await gate.stop()
        await producer.stop()
        embedder.close()
        model.close()
        if own_store:
            store.close()


def decode_threads() -> int:
    """The decode pool's default size: half the cores (the model's threads use the rest)."""
    return max(1, (os.cpu_count() or 2) // 2)


def cap_threads(threads: int | None) -> None:
    """`embed.threads`: the model's torch threads are set when it loads (ModelOptions);
    this caps the native BLAS/OpenMP pools the process has loaded (numpy, librosa, torch's
    own), process-wide. None leaves them as they are (all cores)."""
    if threads is None:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    log.info("embedders capped at %d CPU threads (embed.threads)", threads)


def musicbrainz_ids(meta: TrackMetadata) -> dict[str, str]:
    """The MusicBrainz ids kept in a row's `extra` (the query service resolves Navidrome's
    songs by them): mbid (recording), album_mbid, artist_mbid; only those that are set."""
    ids = {"mbid": meta.mbz_recording_id, "album_mbid": meta.mbz_album_id,
           "artist_mbid": meta.mbz_artist_id}  # fmt: skip
    return {k: v for k, v in ids.items() if v}
