"""A track stored while its event could not be sent is still announced as `embedded`.

The story: the embedder upserts a batch's vectors, then the broker refuses the
`EmbeddingEvent`s (here: their topic does not exist yet, so the send fails after the
request timeout); the worker retries the batch, which now finds the rows stored (same
fingerprint, same model version). What it stored must be announced as
`embedded`, not `skipped_unchanged`, or whoever follows the embeddings topic never learns
of it. Real broker, real MusiCNN, a Milvus Lite store of the test's own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka.errors import KafkaError

from pipeline.bus import make_producer
from pipeline.config import EmbedSettings
from pipeline.consumers.embedder import Embedder
from pipeline.consumers.worker import Delivery
from pipeline.schemas import EmbeddingEvent
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from pipeline.wiring import embedding_model
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import drain
from tests.fixtures.services import base_settings


async def test_a_batch_retried_after_its_events_failed_announces_what_it_stored(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = base_settings(embed=EmbedSettings(device="cpu", threads=1))
    settings.kafka.request_timeout_ms = 1000  # the refused send fails fast
    songs = []
    for i, name in enumerate(["morning", "evening"]):
        write_song(tmp_path / f"{name}.wav", seconds=3, seed=i)
        songs.append(track_event(tmp_path / f"{name}.wav", name))
    batch = [Delivery(None, e.track_id, e) for e in songs]

    model = embedding_model(settings, "musicnn")
    model.ensure_loaded()
    producer = make_producer(settings.kafka, role="test-embedder")
    await producer.start()
    embedder = Embedder(settings, model, lite_store, producer)
    try:
        await embedder.prepare()
        with pytest.raises(KafkaError):  # the worker rewinds and retries the batch
            await embedder.handle(batch)
        stored = lite_store.get(embedder.collection, ["morning", "evening"])
        assert sorted(stored) == ["evening", "morning"]  # the rows were written

        await ensure_topics(settings.kafka, settings.topics)  # the events can go now
        assert await embedder.handle(batch) == []
        first = [EmbeddingEvent.from_bytes(r.value) for r in
                 await drain(settings, settings.topics.embeddings, expected=2)]  # fmt: skip
        assert sorted((e.track_id, e.status) for e in first) == [
            ("evening", "embedded"), ("morning", "embedded"),
        ]  # fmt: skip
        assert all(e.timings.embed_ms > 0 and e.timings.audio_s > 2.5 for e in first)

        # Announced once: the same tracks read again are unchanged, as before the fix.
        assert await embedder.handle(batch) == []
        every = [EmbeddingEvent.from_bytes(r.value) for r in
                 await drain(settings, settings.topics.embeddings, expected=4)]  # fmt: skip
        assert sorted((e.track_id, e.status) for e in every) == [
            ("evening", "embedded"), ("evening", "skipped_unchanged"),
            ("morning", "embedded"), ("morning", "skipped_unchanged"),
        ]  # fmt: skip
    finally:
        await producer.stop()
        embedder.close()
        model.close()
