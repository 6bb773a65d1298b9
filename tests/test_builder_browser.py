"""The playlist builder (/builder) in a real browser: Debian's chromium, on the real stack.

The HTTP service runs on loopback with its own runtime (its own QueryClient on the real
broker), over the synthetic library of tests/fixtures/library.py served by a real query
service, with the real Navidrome as the place playlists are saved to. Someone picks songs
with the autocomplete, builds a similar, text, path and alchemy playlist: each list the
page shows is what the bus answers when a client publishes the request the page sent.
"Not this one" asks again without the song. The jazz songs are in Navidrome too (by title
and artist; sonicbus' ids are its own), so saving a jazz playlist creates it there with
those songs in that order, and the M3U8 download lists their files. Screenshots of the
page at desktop and phone width go to $SONICBUS_TEST_HOME/screenshots.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.schemas import TrackMetadata
from tests.fixtures.browser import PHONE, expect, screenshots, serve
from tests.fixtures.library import Running
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs

pytestmark = pytest.mark.timeout(240)


@dataclass
class Site:
    url: str
    running: Running
    navidrome: NavidromeServer


@pytest.fixture(scope="module")
async def site(running: Running, navidrome_server: NavidromeServer) -> AsyncIterator[Site]:
    """The HTTP service over the module's library, saving to the real Navidrome, which has
    the library's jazz songs (same titles and artists) in a folder of this module's own."""
    folder = navidrome_server.music / f"builder-{uuid.uuid4().hex[:8]}"
    jazz = [t for t in running.library.tracks.values() if t.cluster == "jazz"]
    write_songs(folder, [Song(f"{t.track_id}.mp3", TrackMetadata(
        title=t.title, artist=t.artist, album="jazz album")) for t in jazz])  # fmt: skip
    navidrome_server.rescan()
    settings = navidrome_server.settings(running.settings, api=True)
    try:
        async with serve(settings, running.store) as url:
            yield Site(url, running, navidrome_server)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        navidrome_server.rescan()


async def pick(page: Any, picker: str, query: str, title: str) -> None:
    """Type into a picker and click the suggestion titled exactly `title`."""
    box = page.get_by_test_id(picker)
    await box.get_by_test_id("picker-input").fill(query)
    suggestion = box.get_by_test_id("suggestion").filter(
        has=page.locator(f"span:text-is('{title}')")
    )
    await suggestion.first.click()
    await expect(box.get_by_test_id("chip").filter(has_text=title)).to_have_count(1)


async def build(page: Any, trigger: Any = None) -> dict[str, Any]:
    """Click Build (or `trigger`) and return the API's answer (with the request the page
    sent), once the page shows it."""
    trigger = trigger or page.get_by_test_id("build")
    async with page.expect_response(lambda r: r.url.endswith("/api/playlists/build")) as info:
        await trigger.click()
    response = await info.value
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    rows = page.get_by_test_id("results").get_by_test_id("result")
    await expect(page.get_by_test_id("results")).to_have_attribute(
        "data-request-id", answer["request_id"]
    )
    await expect(rows).to_have_count(len(answer["tracks"]))
    return answer


async def shown_ids(page: Any) -> list[str]:
    rows = page.get_by_test_id("results").get_by_test_id("result")
    return [await row.get_attribute("data-id") for row in await rows.all()]


async def bus_ids(running: Running, request: dict[str, Any]) -> list[str]:
    """What the query service answers a client that publishes the same request itself."""
    again = {k: v for k, v in request.items() if k != "deadline_ms"}
    again["request_id"] = uuid.uuid4().hex
    reply = await running.client.ask(again, timeout=20)
    assert reply.ok, reply.error
    return [t.track_id for t in reply.tracks]


async def test_each_list_on_the_page_is_what_the_bus_answers(site: Site, page: Any) -> None:
    running, lib = site.running, site.running.library.tracks
    await page.goto(site.url + "/builder")
    await expect(page.get_by_test_id("model-musicnn")).to_be_checked()

    # Similar: nothing picked yet is said, not sent.
    await page.get_by_test_id("build").click()
    await expect(page.get_by_test_id("form-problem")).to_contain_text("Pick the song")
    await pick(page, "similar-seed", "rock song 1", "Rock Song 1")
    await page.get_by_test_id("limit").fill("8")
    answer = await build(page)
    assert answer["request"]["type"] == "similar" and answer["request"]["track_id"] == "rock1"
    assert answer["request"]["limit"] == 8
    shown = await shown_ids(page)
    assert len(shown) == 8 and shown == await bus_ids(running, answer["request"])
    first = page.get_by_test_id("result").first.get_by_test_id("track-link")
    await expect(first).to_have_text(lib[shown[0]].title)
    await expect(page.get_by_test_id("playlist-name")).to_have_value("Like Rock Song 1")

    # Not this one: the second song goes, the same request is asked again without it.
    unwanted = shown[1]
    answer = await build(page, page.get_by_test_id("not-this").nth(1))
    assert answer["request"]["exclude_track_ids"] == [unwanted]
    again = await shown_ids(page)
    assert unwanted not in again and again == await bus_ids(running, answer["request"])
    assert again[:7] == [t for t in shown if t != unwanted]
    await expect(page.get_by_test_id("summary")).to_contain_text("1 left out")

    # Text, with a negative prompt.
    await page.get_by_test_id("mode-text").click()
    await page.get_by_test_id("prompt").fill("heavy metal")
    await page.get_by_test_id("negative-prompts").fill("jazz\n")
    answer = await build(page)
    assert answer["request"]["prompt"] == "heavy metal"
    assert answer["request"]["negative_prompts"] == ["jazz"]
    assert answer["request"]["exclude_track_ids"] == []  # a new list starts afresh
    shown = await shown_ids(page)
    assert shown == await bus_ids(running, answer["request"])
    assert lib[shown[0]].cluster == "metal"

    # Path: from Step 0 to Step 10 in 6 songs.
    await page.get_by_test_id("mode-path").click()
    await expect(page.get_by_test_id("limit")).to_be_hidden()
    await pick(page, "path-start", "step 0", "Step 0")
    await pick(page, "path-end", "step 10", "Step 10")
    await page.get_by_test_id("steps").fill("6")
    answer = await build(page)
    shown = await shown_ids(page)
    assert len(shown) == 6 and shown[0] == "arc0" and shown[-1] == "arc10"
    assert shown == await bus_ids(running, answer["request"])

    # Alchemy: like rock and metal, not like jazz (a random draw, repeatable by its seed).
    await page.get_by_test_id("mode-alchemy").click()
    await pick(page, "alchemy-add", "rock song 1", "Rock Song 1")
    await pick(page, "alchemy-add", "metal song 1", "Metal Song 1")
    await pick(page, "alchemy-subtract", "jazz tune 1", "Jazz Tune 1")
    answer = await build(page)
    request = answer["request"]
    assert request["add_track_ids"] == ["rock1", "metal1"]
    assert request["subtract_track_ids"] == ["jazz1"] and "random_seed" in request
    shown = await shown_ids(page)
    assert shown and shown == await bus_ids(running, request)
    assert not {"rock1", "metal1", "jazz1"} & set(shown)

    # Recommend: two seeds, the second weighed against (a dislike), with some variety.
    await page.get_by_test_id("mode-recommend").click()
    await pick(page, "recommend-seeds", "ambient piece 1", "Ambient Piece 1")
    await pick(page, "recommend-seeds", "jazz tune 3", "Jazz Tune 3")
    await page.get_by_test_id("recommend-seeds").get_by_test_id("weight").nth(1).fill("-1")
    await page.get_by_test_id("merge").select_option("union")
    await page.get_by_test_id("limit").fill("5")
    answer = await build(page)
    seeds = answer["request"]["seeds"]
    assert [(s["track_id"], s["weight"]) for s in seeds] == [("ambient1", 1.0), ("jazz3", -1.0)]
    shown = await shown_ids(page)
    assert len(shown) == 5 and shown == await bus_ids(running, answer["request"])
    assert all(lib[t].cluster == "ambient" for t in shown)


async def test_a_jazz_playlist_is_saved_to_navidrome_and_downloaded(site: Site, page: Any) -> None:
    lib = site.running.library.tracks
    await page.goto(site.url + "/builder")
    await pick(page, "similar-seed", "jazz tune 2", "Jazz Tune 2")
    await page.get_by_test_id("limit").fill("4")
    await build(page)
    shown = await shown_ids(page)
    assert len(shown) == 4 and all(lib[t].cluster == "jazz" for t in shown)
    name = f"Late jazz {uuid.uuid4().hex[:6]}"
    await page.get_by_test_id("playlist-name").fill(name)

    await page.get_by_test_id("save").click()
    await expect(page.get_by_test_id("toast")).to_have_text(
        f"Saved “{name}” in Navidrome: 4 songs."
    )
    server = site.navidrome
    found = (server.subsonic("getPlaylists").get("playlists") or {}).get("playlist") or []
    [playlist] = [p for p in found if p["name"] == name]
    entries = server.subsonic("getPlaylist", id=playlist["id"])["playlist"]["entry"]
    assert [(e["title"], e["artist"]) for e in entries] == [
        (lib[t].title, lib[t].artist) for t in shown
    ]
    server.subsonic("deletePlaylist", id=playlist["id"])

    async with page.expect_download() as info:
        await page.get_by_test_id("download").click()
    download = await info.value
    assert download.suggested_filename == f"{name}.m3u8"
    lines = Path(await download.path()).read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["#EXTM3U", f"#PLAYLIST:{name}"]
    assert [line for line in lines if not line.startswith("#")] == [
        f"/music/{t}.flac" for t in shown
    ]

    await page.keyboard.press("Escape")  # the message read, it goes
    await expect(page.get_by_test_id("toast")).to_be_hidden()
    for name_, size in (("desktop", None), ("phone", PHONE)):
        if size:
            await page.set_viewport_size(size)
        overflow = await page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{name_}: {overflow} px wider than the screen"
    await screenshots(page, "builder")

    # Playing a song of the list points the page's player at its audio.
    await page.get_by_test_id("result").first.get_by_test_id("play").click()
    await expect(page.get_by_test_id("audio")).to_have_attribute("data-track", shown[0])


async def test_an_instant_playlist_shows_what_it_understood_and_filters_narrow_any_kind(
    site: Site, page: Any
) -> None:
    lib = site.running.library.tracks
    await page.goto(site.url + "/builder")
    await page.get_by_test_id("mode-instant").click()
    await page.get_by_test_id("build").click()
    await expect(page.get_by_test_id("form-problem")).to_contain_text("Say what you want")
    sentence = "20 minutes of calm piano, nothing before 1990, no more than two songs per artist"
    await page.get_by_test_id("sentence").fill(sentence)
    answer = await build(page)
    assert answer["request"]["sentence"] == sentence
    understood = page.get_by_test_id("understood")
    await expect(understood).to_contain_text("nothing before 1990 -> year >= 1990")
    await expect(understood).to_contain_text("at most two per artist")
    shown = await shown_ids(page)
    assert shown and shown == await bus_ids(site.running, answer["request"])
    assert all(lib[t].year >= 1990 for t in shown)

    # Filters join any kind of request: similar to a rock song, but only 130-142 BPM.
    await page.get_by_test_id("mode-similar").click()
    await expect(page.get_by_test_id("plan")).to_be_visible()  # until the next answer
    await pick(page, "similar-seed", "rock song 1", "Rock Song 1")
    await page.get_by_test_id("filters").locator("summary").click()
    await page.get_by_test_id("bpm-low").fill("130")
    await page.get_by_test_id("build").click()
    await expect(page.get_by_test_id("form-problem")).to_contain_text("both ends of the bpm")
    await page.get_by_test_id("bpm-high").fill("142")
    answer = await build(page)
    assert answer["request"]["filters"] == {"bpm": [130, 142]}
    await expect(page.get_by_test_id("plan")).to_be_hidden()
    shown = await shown_ids(page)
    assert shown and all(130 <= lib[t].analysis["bpm"] <= 142 for t in shown)
    assert shown == await bus_ids(site.running, answer["request"])
