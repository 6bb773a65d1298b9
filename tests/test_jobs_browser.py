"""The jobs page (/jobs) in a real browser: Debian's chromium, on the real broker.

A jobs worker runs in the test over a small library of planted groups in Milvus Lite
(tests/fixtures/jobs.py); the HTTP service runs on loopback beside it. Someone starts a
clustering job from the page and follows it to its end: the bar reaches the runs asked
for, the best score shows, and the automatic playlists are listed with their songs, each
playlist one planted group, exactly as the job's final event on `job-events` says. A long
one is started and cancelled from the page. In the schedules form, an invalid cron
expression gets the API's error next to the field; a valid schedule is saved on the bus,
listed beside the config file's, and removed. Screenshots at desktop and phone width go to
$SONICBUS_TEST_HOME/screenshots.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.job_settings import JobsSettings
from pipeline.jobs.client import job_state
from pipeline.jobs.clustering import listed_songs
from pipeline.jobs.schedules import effective_schedules
from pipeline.recommender.clustering import LibraryData, Playlist
from pipeline.schemas.jobs import Schedule
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.browser import PHONE, expect, screenshots, serve
from tests.fixtures.jobs import fill_store, planted_library, running_worker
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)
JOB_MS = 60_000  # the longest the page waits for a job's end (2 cores)


async def jobs_settings(tmp_path: Path, **jobs: Any) -> Settings:
    settings = base_settings(home=tmp_path, jobs=JobsSettings(**jobs))
    settings.jobs.clustering.m3u_dir = tmp_path / "playlists"
    settings.jobs.clustering.seed = 3
    await ensure_topics(settings.kafka, settings.topics)
    return settings


async def start_job(page: Any, kind: str, **fields: str) -> str:
    """Fill the start form, click Start, and return the id of the job the API accepted."""
    await page.get_by_test_id("job-kind").select_option(kind)
    for name, value in fields.items():
        await page.get_by_test_id(name).fill(value)
    async with page.expect_response(
        lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST"
    ) as info:
        await page.get_by_test_id("start").click()
    response = await info.value
    assert response.status == 202, await response.text()
    answer = await response.json()
    assert answer["status"] == "accepted", answer
    return str(answer["job_id"])


async def test_a_clustering_job_is_followed_to_its_playlists_and_another_cancelled(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path, page: Any
) -> None:
    settings = await jobs_settings(tmp_path)
    library = planted_library(groups=4, per_group=12)
    fill_store(lite_store, library.rows)
    group_of_title = {row.title: library.labels[row.track_id] for row in library.rows}
    async with running_worker(settings, lite_store), serve(settings, lite_store) as url:
        await page.goto(url + "/jobs")
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        await expect(page.get_by_test_id("current-empty")).to_be_visible()
        await expect(page.get_by_test_id("jobs-empty")).to_be_visible()

        # A clustering job of 25 runs, started from the page, followed to its end.
        job_id = await start_job(
            page, "clustering", runs="25", **{"min-playlist-size": "4", "max-clusters": "8"}
        )
        status = page.get_by_test_id("current-status")
        await expect(status).to_have_text("done", timeout=JOB_MS)
        await expect(page.get_by_test_id("current-name")).to_have_text(f"clustering · {job_id}")
        await expect(page.get_by_test_id("current-figures")).to_have_text("25 / 25 runs")
        await expect(page.get_by_test_id("current-percent")).to_have_text("100 %")
        await expect(page.get_by_test_id("cancel")).to_be_hidden()
        final = await job_state(settings, job_id)
        assert final.status == "done" and final.result is not None
        best = final.progress.best_score if final.progress else None
        assert best is not None
        await expect(page.get_by_test_id("current-best")).to_have_text(f"best score {best:.4f}")
        await expect(page.get_by_test_id("current-stage")).to_have_text(final.message)

        # The automatic playlists: as the final event says, each one planted group.
        expected = final.result["playlists"]
        assert len(expected) == 4
        shown = page.get_by_test_id("auto-playlist")
        await expect(shown).to_have_count(len(expected))
        await expect(page.get_by_test_id("playlist-count")).to_have_text("4")
        for row, playlist in zip(await shown.all(), expected, strict=True):
            await expect(row.get_by_test_id("playlist-name")).to_have_text(playlist["name"])
            titles = [song["title"] for song in playlist["songs"]]
            assert len(titles) == playlist["tracks"] >= 4
            await expect(row.get_by_test_id("song").locator("a")).to_have_text(titles)
            assert len({group_of_title[t] for t in titles}) == 1, titles
        first_song = expected[0]["songs"][0]
        link = shown.first.get_by_test_id("song").first.locator("a")
        await expect(link).to_have_attribute("href", f"/track/{first_song['track_id']}")

        # A long one, cancelled from the page while it runs.
        long_id = await start_job(page, "clustering", runs="5000")
        await expect(page.get_by_test_id("current-figures")).to_have_text(
            re.compile(r"^[1-9][\d,]* / 5,000 runs$"), timeout=JOB_MS
        )
        await page.get_by_test_id("cancel").click()
        await expect(status).to_have_text("cancelled", timeout=JOB_MS)
        cancelled = await job_state(settings, long_id)
        assert cancelled.status == "cancelled"
        assert cancelled.progress is not None and cancelled.progress.done < 5000

        # The last results: both jobs, newest first; the playlists are still the done job's.
        rows = page.get_by_test_id("jobs").get_by_test_id("job")
        await expect(rows).to_have_count(2)
        await expect(rows.nth(0)).to_have_attribute("data-status", "cancelled")
        await expect(rows.nth(1)).to_have_attribute("data-status", "done")
        await expect(rows.nth(1)).to_contain_text(final.message)
        await expect(shown).to_have_count(len(expected))

        await page.keyboard.press("Escape")  # the toast read, it goes
        await expect(page.get_by_test_id("toast")).to_be_hidden()
        for width, size in (("desktop", None), ("phone", PHONE)):
            if size:
                await page.set_viewport_size(size)
            overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
            assert overflow <= 0, f"{width}: {overflow} px wider than the screen"
        await screenshots(page, "jobs")


async def test_schedules_are_added_with_their_errors_shown_and_removed(
    kafka_broker: str, lite_store: VectorStore, tmp_path: Path, page: Any
) -> None:
    weekly = Schedule(name="weekly-clean", kind="cleaning", cron="0 4 * * 0")
    settings = await jobs_settings(tmp_path, schedules=[weekly])
    async with serve(settings, lite_store) as url:
        await page.goto(url + "/jobs")
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        rows = page.get_by_test_id("schedules").get_by_test_id("schedule")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_contain_text("weekly-clean")
        await expect(rows.first).to_contain_text("config file")
        await expect(rows.first.get_by_test_id("schedule-remove")).to_have_count(0)

        # An invalid cron expression: the API's 422, next to the field; nothing saved.
        await page.get_by_test_id("schedule-name").fill("nightly-playlists")
        await page.get_by_test_id("schedule-kind").select_option("clustering")
        await page.get_by_test_id("schedule-cron").fill("every night at 3")
        async with page.expect_response(lambda r: r.url.endswith("/api/schedules")
                                        and r.request.method == "PUT") as info:  # fmt: skip
            await page.get_by_test_id("schedule-save").click()
        assert (await info.value).status == 422
        error = page.get_by_test_id("cron-error")
        await expect(error).to_contain_text("invalid cron expression 'every night at 3'")
        await expect(page.get_by_test_id("schedule-cron")).to_be_focused()
        await expect(page.get_by_test_id("name-error")).to_be_hidden()
        await expect(rows).to_have_count(1)
        assert [v.schedule.name for v in await effective_schedules(settings)] == ["weekly-clean"]

        # A valid one: saved on the bus and listed, the error gone.
        await page.get_by_test_id("schedule-cron").fill("0 3 * * *")
        await page.get_by_test_id("schedule-save").click()
        await expect(rows).to_have_count(2)
        await expect(error).to_be_hidden()
        await expect(page.get_by_test_id("toast")).to_have_text("Schedule nightly-playlists saved.")
        nightly = rows.filter(has_text="nightly-playlists")
        await expect(nightly).to_contain_text("clustering")
        await expect(nightly.locator(".cron")).to_have_text("0 3 * * *")
        saved = {v.schedule.name: v for v in await effective_schedules(settings)}
        assert saved["nightly-playlists"].source == "api"
        assert saved["nightly-playlists"].schedule.cron == "0 3 * * *"
        assert saved["nightly-playlists"].schedule.kind == "clustering"

        # Listed again after a reload (it lives on the bus), then removed.
        await page.reload()
        await expect(rows).to_have_count(2)
        await rows.filter(has_text="nightly-playlists").get_by_test_id("schedule-remove").click()
        await expect(rows).to_have_count(1)
        assert [v.schedule.name for v in await effective_schedules(settings)] == ["weekly-clean"]


def test_a_huge_playlist_set_lists_its_first_songs_within_one_record() -> None:
    library = planted_library(groups=2, per_group=30)
    ids = [row.track_id for row in library.rows]
    data = LibraryData(ids, np.zeros((len(ids), 2)), artists=[r.artist for r in library.rows],
                       titles=[r.title for r in library.rows])  # fmt: skip
    playlists = [Playlist("First_Playlist_Name", ids[:30], [], 0),
                 Playlist("Second_Playlist_Name", ids[30:], [], 1)]  # fmt: skip
    every = listed_songs(data, playlists, budget=1_000_000)
    assert [len(s) for s in every] == [30, 30]
    assert every[1][0] == {"track_id": "g1t0", "artist": "Artist 1-0", "title": "Song 1-0"}
    budget = len(json.dumps(every[0])) + 5 * len(json.dumps(every[1][0]))
    cut = listed_songs(data, playlists, budget=budget)
    assert cut[0] == every[0] and cut[1] == every[1][: len(cut[1])] and 3 <= len(cut[1]) < 30
