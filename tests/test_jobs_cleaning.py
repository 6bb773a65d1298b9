"""`sonicbus clean` on the real broker and Milvus server: rows of tracks that are gone are
removed, tracks the embedder passed without storing a row are published again, and above
the safety limit nothing changes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from pipeline.bus import make_consumer
from pipeline.config import Settings
from pipeline.job_settings import CleaningSettings, JobsSettings
from pipeline.schemas import TrackEvent
from pipeline.store import VectorStore
from pipeline.topics import embed_group, ensure_topics
from tests.fixtures.bus import drain, end_offsets, publish
from tests.fixtures.jobs import fill_store, planted_library, run_job, running_worker
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)


async def embedder_passed_everything(settings: Settings) -> None:
    """Commit `embed-musicnn` at the end of `tracks`, as an embedder that read it all."""
    consumer = make_consumer(settings.kafka, group_id=embed_group(settings, "musicnn"))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.tracks, p) for p in range(settings.topics.partitions)]
        consumer.assign(tps)
        await consumer.commit(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def test_cleaning_removes_orphans_republishes_gaps_and_stops_at_its_limit(
    kafka_broker: str, server_store: VectorStore, producer: object, tmp_path: Path
) -> None:
    jobs = JobsSettings(cleaning=CleaningSettings(max_changes=5))
    settings = base_settings(home=tmp_path, jobs=jobs)
    await ensure_topics(settings.kafka, settings.topics)
    rows = planted_library(groups=2, per_group=10).rows  # 20 rows stored
    collection = fill_store(server_store, rows)
    stored = [r.track_id for r in rows]
    # The catalog: 17 of the stored tracks (3 orphans) and 2 tracks without a row (gaps).
    catalog = [TrackEvent(track_id=tid, path=f"/music/{tid}.flac")
               for tid in [*stored[:17], "gap1", "gap2"]]  # fmt: skip
    await publish(producer, settings, catalog)
    await embedder_passed_everything(settings)
    before = await end_offsets(settings, settings.topics.tracks, settings.topics.partitions)

    async with running_worker(settings, server_store):
        final, _ = await run_job(settings, "cleaning", {})
        assert final.status == "done", final.message
        [report] = final.result["models"]
        assert (report["orphans"], report["gaps"]) == (3, 2)
        assert final.result["applied"] and report["removed"] == 3 and report["republished"] == 2
        left = {t.track_id for page in server_store.iterate(collection) for t in page}
        assert left == set(stored[:17])
        after = await drain(settings, settings.topics.tracks, before + 2)
        assert len(after) == before + 2  # the two gaps, published once more
        keys = Counter(r.key.decode() for r in after)
        assert (keys["gap1"], keys["gap2"], keys[stored[0]]) == (2, 2, 1)

        # Over the limit: 9 more orphans (> max_changes 5) -> only a report, nothing removed.
        for tid in stored[8:17]:
            await producer.send_and_wait(  # type: ignore[attr-defined]
                settings.topics.tracks, None, key=tid.encode()
            )
        await embedder_passed_everything(settings)
        limited, _ = await run_job(settings, "cleaning", {})
    assert limited.status == "done", limited.message
    assert limited.result["over_limit"] and not limited.result["applied"]
    assert "over the safety limit" in limited.message
    assert "musicnn: 9 rows to remove of 17" in limited.message
    left = {t.track_id for page in server_store.iterate(collection) for t in page}
    assert left == set(stored[:17])  # nothing removed
