"""Long jobs on the real broker and Milvus Lite: a user asks for clustering playlists, a
second request is refused, a job is cancelled and run again, a job outlasts
max.poll.interval.ms without losing the group, two schedulers run each due job once,
and bad input ends in clear error events with nothing written."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from pipeline.config import Settings
from pipeline.job_settings import JobsSettings
from pipeline.jobs.client import JobFollow, cancel_job, make_request, publish_request
from pipeline.jobs.scheduler import JobScheduler
from pipeline.schemas.jobs import Schedule
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.jobs import all_job_events, fill_store, planted_library, run_job, running_worker
from tests.fixtures.kafka_tool import describe_state
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)


async def job_settings(tmp_path: Path, **jobs: object) -> Settings:
    settings = base_settings(home=tmp_path, jobs=JobsSettings(**jobs))  # type: ignore[arg-type]
    settings.jobs.clustering.m3u_dir = tmp_path / "playlists"
    settings.jobs.clustering.seed = 5
    await ensure_topics(settings.kafka, settings.topics)
    return settings


async def test_clustering_finds_the_planted_groups_and_writes_named_playlists(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = await job_settings(tmp_path)
    library = planted_library(groups=5, per_group=20)
    fill_store(lite_store, library.rows)
    async with running_worker(settings, lite_store):
        params = {"runs": 30, "min_playlist_size": 5, "max_clusters": 10}
        final, seen = await run_job(settings, "clustering", params)
    assert final.status == "done", final.message
    assert seen[0].status == "accepted"
    # Progress: runs done / total and the best score (the final event carries the last).
    assert final.progress is not None and (final.progress.done, final.progress.total) == (30, 30)
    assert round(final.progress.best_score or 0, 4) == final.result["best_score"] > 0.5
    # The clusters before post-processing are the planted groups.
    clusters = json.loads((tmp_path / "playlists" / "clusters.json").read_text())["clusters"]
    ids = sorted(library.labels)
    ari = adjusted_rand_score([library.labels[i] for i in ids], [clusters[i] for i in ids])
    assert ari >= 0.8, ari
    # Named from the dominant tags: unique, ASCII, 15-35 characters; one M3U8 each.
    names = [p["name"] for p in final.result["playlists"]]
    assert len(names) == 5 and len(set(names)) == 5
    assert all(15 <= len(n) <= 35 and n.isascii() for n in names), names
    m3u = sorted(p.stem for p in (tmp_path / "playlists").glob("*.m3u8"))
    assert m3u == sorted(names)
    text = (tmp_path / "playlists" / f"{names[0]}.m3u8").read_text()
    assert text.startswith("#EXTM3U") and "/music/g" in text
    # Artist cap (3) holds in every playlist.
    for path in (tmp_path / "playlists").glob("*.m3u8"):
        artists = Counter(line.split(",", 1)[1].split(" - ")[0]
                          for line in path.read_text().splitlines() if line.startswith("#EXTINF"))
        assert max(artists.values()) <= 3  # fmt: skip


async def test_one_job_of_a_kind_then_cancel_and_run_again(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = await job_settings(tmp_path)
    fill_store(lite_store, planted_library(groups=4, per_group=15).rows)
    long = make_request(settings, "clustering", {"runs": 5000, "min_playlist_size": 4}, "test")
    async with running_worker(settings, lite_store):
        async with JobFollow(settings, long.job_id) as follow:
            await publish_request(settings, long)
            assert (await follow.until_answer(30)).status == "accepted"  # type: ignore[union-attr]
            second, _ = await run_job(settings, "clustering", {"runs": 3})
            assert second.status == "refused"
            assert f"a clustering job is running ({long.job_id})" in second.message
            await cancel_job(settings, long.job_id, by="test")
            final = await follow.until_end(lambda e: None, timeout=60)
        assert final is not None and final.status == "cancelled", final
        assert final.progress is not None and final.progress.done < 5000
        assert not (tmp_path / "playlists").exists()  # nothing written
        again, _ = await run_job(settings, "clustering", {"runs": 10, "min_playlist_size": 4})
    assert again.status == "done", again.message
    assert (tmp_path / "playlists" / "clusters.json").is_file()


async def test_two_requests_of_a_kind_at_once_on_two_workers_only_one_runs(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    """Requests are keyed by kind: both meet in one partition, read in order by one worker."""
    settings = await job_settings(tmp_path)
    fill_store(lite_store, planted_library(groups=4, per_group=15).rows)
    group = settings.topics.group("jobs")
    requests = [make_request(settings, "clustering", {"runs": 5000, "min_playlist_size": 4},
                             "test") for _ in range(2)]  # fmt: skip
    async with running_worker(settings, lite_store), running_worker(settings, lite_store):
        await wait_for_async(lambda: describe_state(settings, group), ("Stable", 2), 60)
        async with JobFollow(settings, requests[0].job_id) as first, \
                JobFollow(settings, requests[1].job_id) as second:  # fmt: skip
            await asyncio.gather(*(publish_request(settings, r) for r in requests))
            answers = [await first.until_answer(30), await second.until_answer(30)]
            assert sorted(a.status for a in answers) == ["accepted", "refused"], answers  # type: ignore[union-attr]
            running = requests[[a.status for a in answers].index("accepted")]  # type: ignore[union-attr]
            await cancel_job(settings, running.job_id, by="test")
            follow = first if running is requests[0] else second
            final = await follow.until_end(lambda e: None, timeout=60)
        assert final is not None and final.status == "cancelled"


async def wait_for_async(read, expected: object, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Until `await read()` gives `expected` (the group settled), at most `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(1.0)


async def test_a_job_longer_than_max_poll_interval_keeps_the_worker_in_its_group(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = await job_settings(tmp_path, max_poll_interval_ms=1000, session_timeout_ms=6000)
    fill_store(lite_store, planted_library(groups=4, per_group=15).rows)
    long = make_request(settings, "clustering", {"runs": 100_000, "min_playlist_size": 4}, "test")
    async with running_worker(settings, lite_store) as worker, \
            JobFollow(settings, long.job_id) as follow:  # fmt: skip
        await publish_request(settings, long)
        assert (await follow.until_answer(30)).status == "accepted"  # type: ignore[union-attr]
        await asyncio.sleep(3.0)  # three times max.poll.interval.ms, the job still running
        state, members = await describe_state(settings, settings.topics.group("jobs"))
        assert worker.assignments == 1  # never left the group, never re-joined
        assert (state, members) == ("Stable", 1)
        await cancel_job(settings, long.job_id, by="test")
        final = await follow.until_end(lambda e: None, timeout=60)
    # Still running after 3 s (so it ended by the cancel), and run once only.
    assert final is not None and final.status == "cancelled", final
    assert final.progress is not None and 0 < final.progress.done < 100_000
    statuses = [e.status for e in await all_job_events(settings) if e.job_id == long.job_id]
    assert statuses.count("accepted") == 1, statuses


async def test_two_schedulers_publish_each_due_job_and_it_runs_once(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    schedule = Schedule(name="often", kind="cleaning", cron="* * * * * */2")
    settings = await job_settings(tmp_path, schedules=[schedule], scheduler_catch_up_s=0)
    fill_store(lite_store, planted_library(groups=2, per_group=5).rows)
    stop = asyncio.Event()
    schedulers = [JobScheduler(settings), JobScheduler(settings)]
    async with running_worker(settings, lite_store):
        tasks = [asyncio.create_task(s.run(stop)) for s in schedulers]
        await asyncio.sleep(7)
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(4)  # the last requests' jobs end
    first, second = (set(s.published) for s in schedulers)
    assert len(first) >= 2 and first & second, (first, second)
    events = await all_job_events(settings)
    for job_id in first & second:
        statuses = [e.status for e in events if e.job_id == job_id]
        assert statuses.count("accepted") == 1, (job_id, statuses)
        assert statuses.count("done") + statuses.count("refused") == 1, (job_id, statuses)
    assert job_id.startswith("often@")


async def test_bad_input_ends_in_clear_error_events(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = await job_settings(tmp_path)
    collection = fill_store(lite_store, planted_library(groups=1, per_group=3).rows)
    async with running_worker(settings, lite_store):
        small, _ = await run_job(settings, "clustering", {"runs": 3})
        assert small.status == "failed"
        assert "library too small to cluster: 3 tracks" in small.message
        same = [VectorRow(f"same{i}", np.ones(16), artist="A", title=f"t{i}") for i in range(30)]
        lite_store.delete(collection, [r.track_id for r in planted_library(1, 3).rows])
        lite_store.upsert(collection, same)
        identical, _ = await run_job(settings, "clustering", {"runs": 3})
        assert identical.status == "failed"
        assert "all 30 tracks have the same embedding" in identical.message
    assert not (tmp_path / "playlists").exists()
    with pytest.raises(ValueError, match="invalid cron expression 'every day'"):
        Schedule(name="x", kind="scan", cron="every day")
    with pytest.raises(ValueError, match="unknown clustering params \\['runz'\\]"):
        make_request(settings, "clustering", {"runz": 3}, "test")
