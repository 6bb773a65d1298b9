"""Daily mixes on a real Navidrome: two users who listen differently each get mixes that follow
their own plays and stars, written as playlists they own, refreshed three times under the
radio rules (no artist twice in a row, no song again within the no-repeat window). Users
who do not exist or have nothing to build from are warned about, and nothing is written
for them.

The vectors are synthetic (one direction per genre) and keyed by the ids Navidrome gave
the test's files, so what "follows their plays" means can be checked exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.consumers.query import QueryService
from pipeline.errors import InvalidInput
from pipeline.job_settings import DailyMixSettings, JobsSettings, MixSpec
from pipeline.jobs.client import check_params
from pipeline.jobs.daily_mixes import radio_order
from pipeline.schemas import TrackMetadata
from pipeline.schemas.queries import ScoredTrack
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.browser import expect, screenshots, serve
from tests.fixtures.jobs import fill_store, run_job, running_worker
from tests.fixtures.navidrome import NavidromeServer, Song, free_port, write_songs
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(300)

GENRES = ("rock", "jazz", "ambient")
PER_GENRE = 15
DAY = 86400.0


def artist_of(name: str) -> str:
    """rock4 -> "rock band 1", as genre_library tags it."""
    genre = name.rstrip("0123456789")
    return f"{genre} band {int(name[len(genre) :]) % 3}"


def genre_library(server: NavidromeServer, folder: Path, store: VectorStore) -> dict[str, str]:
    """rock0..ambient14 in Navidrome (3 artists a genre) and in the store; name -> id."""
    songs = [
        Song(f"{g}/{g}{i}.mp3", TrackMetadata(title=f"{g}{i}", artist=f"{g} band {i % 3}"),
             seconds=1.0)
        for g in GENRES for i in range(PER_GENRE)
    ]  # fmt: skip
    write_songs(folder, songs)
    server.rescan()
    ids = {p.stem: i for p, i in server.ids_by_path(folder).items()}
    assert len(ids) == len(songs)
    rng = np.random.default_rng(5)
    rows = []
    for axis, genre in enumerate(GENRES):
        for i in range(PER_GENRE):
            vector = np.zeros(16, np.float32)
            vector[axis] = 1.0
            vector += rng.normal(0, 0.1, 16).astype(np.float32)
            name = f"{genre}{i}"
            rows.append(VectorRow(ids[name], vector, artist=f"{genre} band {i % 3}", title=name))
    fill_store(store, rows)
    return ids


async def test_two_users_get_their_own_mixes_refreshed_three_times_under_radio_rules(
    kafka_broker: str,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
    lite_store: VectorStore,
    tmp_path: Path,
    page: Any,
) -> None:
    server = navidrome_server
    ids = genre_library(server, navidrome_folder, lite_store)
    name_of = {v: k for k, v in ids.items()}
    rocker, jazzer, quiet = server.create_user(), server.create_user(), server.create_user()
    now = time.time()
    for name, days_ago in (("rock0", 1), ("rock0", 2), ("rock1", 3), ("rock2", 9)):
        server.scrobble(rocker, ids[name], now - days_ago * DAY)
    for name, days_ago in (("jazz0", 1), ("jazz1", 1), ("jazz1", 4)):
        server.scrobble(jazzer, ids[name], now - days_ago * DAY)
    server.star(jazzer, ids["ambient0"])
    server.star(jazzer, ids["ambient1"])

    mixes = DailyMixSettings(
        users=[rocker, jazzer, quiet, "nobody-by-that-name"],
        mixes=[MixSpec(name="Daily Mix", source="fingerprint"),
               MixSpec(name="Favourites Mix", source="favorites")],
        size=4, no_repeat_days=7,
    )  # fmt: skip
    base = base_settings(home=tmp_path, jobs=JobsSettings(daily_mixes=mixes))
    settings = server.settings(base)  # the admin, and Navidrome's database for everyone's plays
    await ensure_topics(settings.kafka, settings.topics)
    service = QueryService(settings, lite_store)
    await service.start()
    runs: dict[tuple[str, str], list[list[str]]] = {}
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        async with running_worker(settings, lite_store):
            for _refresh in range(3):
                final, _ = await run_job(settings, "daily_mixes", {}, timeout=150)
                assert final.status == "done", final.message
                warnings = "\n".join(final.result["warnings"])
                assert "Navidrome has no user 'nobody-by-that-name'" in warnings
                assert f"{quiet}: Daily Mix: not made" in warnings
                # The rocker has plays, but the mode reads stars and ratings: the warning says so.
                assert (
                    f"{rocker}: Favourites Mix: not made: user {rocker} has no stars or ratings "
                    "of 4-5 for seed mode 'favorites'"
                ) in warnings
                assert final.result["written"] == 3
                for user in (rocker, jazzer):
                    for mix, songs in server.owned_playlists(user).items():
                        runs.setdefault((user, mix), []).append([name_of[i] for i in songs])
                assert server.owned_playlists(quiet) == {}
            await the_builder_page_shows_each_users_mixes(settings, lite_store, page, rocker)
    finally:
        await service.stop()

    assert set(runs) == {(rocker, "Daily Mix"), (jazzer, "Daily Mix"),
                         (jazzer, "Favourites Mix")}  # fmt: skip
    # Each mix follows what its user did: rock plays, jazz plays, ambient stars.
    expected = {(rocker, "Daily Mix"): "rock", (jazzer, "Daily Mix"): "jazz",
                (jazzer, "Favourites Mix"): "ambient"}  # fmt: skip
    for key, genre in expected.items():
        assert len(runs[key]) == 3, key  # one playlist, refreshed: never a second of that name
        for songs in runs[key]:
            assert len(songs) == 4 and all(s.startswith(genre) for s in songs), (key, songs)
            artists = [artist_of(s) for s in songs]
            assert all(a != b for a, b in itertools.pairwise(artists)), songs
        every = [s for songs in runs[key] for s in songs]
        assert len(set(every)) == 12, f"a song came back within the no-repeat window: {runs[key]}"
    assert not {"rock0", "rock1", "rock2"} & {s for r in runs[(rocker, "Daily Mix")] for s in r}


async def the_builder_page_shows_each_users_mixes(
    settings: Any, store: VectorStore, page: Any, rocker: str
) -> None:
    """The page lists the latest run's mixes per user; Refresh now runs the job again."""
    async with serve(settings, store) as url:
        await page.goto(url + "/builder")
        users = page.get_by_test_id("mix-user")
        await expect(users).to_have_count(2)
        await expect(page.get_by_test_id("mixes-summary")).to_contain_text("3 mixes for 2 users")
        rocker_mix = page.locator(f'[data-user="{rocker}"] [data-name="Daily Mix"]')
        await rocker_mix.locator("summary").click()
        songs = rocker_mix.get_by_test_id("mix-song")
        await expect(songs).to_have_count(4)
        before = await songs.all_inner_texts()
        await expect(page.get_by_test_id("mix-warnings")).to_contain_text("nobody-by-that-name")
        await screenshots(page, "daily-mixes")

        await page.get_by_test_id("refresh-mixes").click()
        await expect(page.get_by_test_id("mixes-summary")).to_contain_text(
            "3 mixes for 2 users", timeout=120_000
        )
        await rocker_mix.locator("summary").click()
        await expect(songs).to_have_count(4)
        assert not set(before) & set(await songs.all_inner_texts())  # a fourth refresh, no repeat


async def test_navidrome_down_or_a_user_who_is_not_admin_fails_the_job_clearly(
    kafka_broker: str, navidrome_server: NavidromeServer, lite_store: VectorStore, tmp_path: Path
) -> None:
    settings = navidrome_server.settings(base_settings(home=tmp_path))
    await ensure_topics(settings.kafka, settings.topics)
    down = settings.model_copy(deep=True)
    down.navidrome.url = f"http://127.0.0.1:{free_port()}"
    plain_user = navidrome_server.settings(settings, user=navidrome_server.create_user())
    # Each case its own worker: a job runs with its worker's settings.
    async with running_worker(down, lite_store):
        failed, _ = await run_job(down, "daily_mixes", {}, timeout=60)
    assert failed.status == "failed" and "cannot log in" in failed.message, failed.message
    async with running_worker(plain_user, lite_store):
        refused, _ = await run_job(plain_user, "daily_mixes", {}, timeout=60)
    assert refused.status == "failed" and "is not an admin" in refused.message, refused.message
    async with running_worker(settings, lite_store):
        unknown, _ = await run_job(settings, "daily_mixes", {"users": ["nobody"]}, timeout=60)
    assert unknown.status != "done" and "no user 'nobody'" in unknown.message, unknown.message


def test_radio_order_never_puts_one_artist_twice_in_a_row() -> None:
    ranked = [ScoredTrack(track_id=f"t{i}", score=1 - i / 10, artist=a)
              for i, a in enumerate(["A", "A", "A", "B", "a ", "C", None, None])]  # fmt: skip
    order = radio_order(ranked, size=10)
    assert [t.track_id for t in order] == ["t0", "t3", "t1", "t5", "t2", "t6", "t4", "t7"]
    # "a " is A; a song without an artist clashes with nobody. With only A's songs, the mix
    # ends after one rather than break the rule.
    assert [t.track_id for t in radio_order(ranked[:3], size=3)] == ["t0"]


def test_bad_mix_params_are_refused_before_anything_is_published() -> None:
    settings = base_settings()
    with pytest.raises(InvalidInput, match="size"):
        check_params(settings, "daily_mixes", {"size": 0})
    with pytest.raises(InvalidInput, match="unknown daily_mixes params"):
        check_params(settings, "daily_mixes", {"colour": "blue"})
    twice = [{"name": "Mine", "source": "recent"}, {"name": "Mine", "source": "discovery"}]
    with pytest.raises(InvalidInput, match="must differ"):
        check_params(settings, "daily_mixes", {"mixes": twice})
    with pytest.raises(InvalidInput, match="source"):
        check_params(settings, "daily_mixes", {"mixes": [{"name": "X", "source": "random"}]})
