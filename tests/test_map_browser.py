"""The music map (/map) in a real browser: Debian's chromium, driven by Playwright.

The HTTP service runs on loopback over the synthetic library of tests/fixtures/library.py
(Milvus Lite, a real query service on the real broker). Someone opens the map: it draws one
point per row of the collection (WebGL, in chromium's SwiftShader); a track the embedder
announces appears on it without a reload; they lasso the jazz songs and download them as
an M3U8; they find two songs by search, click each, and ask for the path between them,
which is drawn over the map and is what the bus answers for that path request; a model with
nothing embedded says so. Screenshots at desktop and phone width go to
$SONICBUS_TEST_HOME/screenshots.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.schemas import EmbeddingEvent
from pipeline.store import VectorRow
from tests.fixtures.browser import expect, screenshots, serve
from tests.fixtures.library import Running, axis, unit

pytestmark = pytest.mark.timeout(180)


@dataclass
class Site:
    url: str
    running: Running

    @property
    def collection(self) -> str:
        return self.running.store.collection_name("musicnn")

    def rows(self) -> int:
        return self.running.store.count(self.collection)

    async def embed(self, row: VectorRow) -> None:
        """What the embedder does for a new track: upsert, then announce on `embeddings`."""
        self.running.store.upsert(self.collection, [row])
        event = EmbeddingEvent(track_id=row.track_id, model="musicnn", model_version="v",
                               status="embedded", dim=16, collection=self.collection)  # fmt: skip
        await self.running.service.producer.send_and_wait(
            self.running.settings.topics.embeddings, event.to_bytes(), key=row.track_id.encode()
        )


@pytest.fixture(scope="module")
async def site(running: Running, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    home = tmp_path_factory.mktemp("map-home")
    settings = running.settings.model_copy(update={"home": home})
    async with serve(settings, running.store) as url:
        yield Site(url, running)


async def open_map(page: Any, site: Site, model: str = "musicnn") -> Any:
    await page.goto(f"{site.url}/map?model={model}")
    stage = page.get_by_test_id("map-stage")
    await expect(stage).to_have_attribute("data-state", "ready", timeout=30_000)
    return stage


async def screen_positions(page: Any, site: Site, ids: list[str]) -> dict[str, tuple[float, float]]:
    """Where the page draws these songs with the whole map in view (page coordinates)."""
    found = await page.evaluate(
        "async (url) => (await (await fetch(url)).json()).tracks",
        f"/api/map/tracks?model=musicnn&ids={','.join(ids)}",
    )
    box = await page.get_by_test_id("map-points").bounding_box()
    scale = min(box["width"], box["height"]) / 2 * 0.96
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    return {t["track_id"]: (cx + t["x"] * scale, cy - t["y"] * scale) for t in found}


async def test_the_map_draws_every_track_and_new_ones_as_they_are_embedded(
    site: Site, page: Any
) -> None:
    stage = await open_map(page, site)
    points = page.get_by_test_id("map-points")
    await expect(points).to_have_attribute("data-drawn", str(site.rows()))
    assert await points.get_attribute("data-renderer") == "webgl"
    await expect(page.get_by_test_id("map-count")).to_have_text(f"· {site.rows()} songs")
    rock = page.get_by_test_id("legend-tag").filter(has_text="rock").first
    await expect(rock).to_contain_text("rock")

    # Hovering a song shows it.
    (x, y), = (await screen_positions(page, site, ["jazz3"])).values()  # fmt: skip
    await page.mouse.move(x, y)
    tip = page.get_by_test_id("map-tip")
    await expect(tip).to_contain_text("Quartet")
    await expect(tip).to_contain_text("jazz")

    # Hiding a tag in the legend hides its songs (still drawn, not visible).
    jazz_button = page.locator('[data-testid="legend-tag"]', has_text="jazz")
    await jazz_button.click()
    await expect(jazz_button).to_have_attribute("aria-pressed", "false")
    await expect(points).to_have_attribute("data-visible", str(site.rows() - 8))
    await jazz_button.click()

    name = f"new-{uuid.uuid4().hex[:6]}"
    tags = site.running.library.tracks["ambient0"].tags
    await site.embed(VectorRow(name, unit(axis(3) + 0.1 * axis(1)), title="Fresh Drone",
                               artist="Newcomer", extra={"tags": tags}))  # fmt: skip
    await expect(points).to_have_attribute("data-drawn", str(site.rows()), timeout=20_000)
    await page.get_by_test_id("map-search").fill("fresh drone")
    await page.get_by_test_id("map-found-track").filter(has_text="Fresh Drone").click()
    await expect(stage).to_have_attribute("data-highlight", name)
    await expect(page.get_by_test_id("map-tip")).to_contain_text("Newcomer")


async def test_a_lasso_selection_becomes_a_playlist(site: Site, page: Any) -> None:
    await open_map(page, site)
    jazz = site.running.library.cluster("jazz")
    where = await screen_positions(page, site, jazz)
    xs, ys = [p[0] for p in where.values()], [p[1] for p in where.values()]
    left, right, top, bottom = min(xs) - 8, max(xs) + 8, min(ys) - 8, max(ys) + 8
    await page.get_by_test_id("tool-lasso").click()
    await page.mouse.move(left, top)
    await page.mouse.down()
    for x, y in ((right, top), (right, bottom), (left, bottom), (left, top + 1)):
        await page.mouse.move(x, y, steps=4)
    await page.mouse.up()
    items = page.get_by_test_id("selection-list").locator("li")
    await expect(page.get_by_test_id("toast")).to_contain_text("added to the selection")
    chosen = [await li.get_attribute("data-track-id") for li in await items.all()]
    assert set(jazz) <= set(chosen)
    await expect(page.get_by_test_id("selection-count")).to_have_text(str(len(chosen)))

    await page.get_by_test_id("playlist-name").fill("Late jazz")
    async with page.expect_download() as info:
        await page.get_by_test_id("download").click()
    download = await info.value
    assert download.suggested_filename == "Late jazz.m3u8"
    listed = Path(await download.path()).read_text()
    for track_id in jazz:
        assert f"/music/{track_id}.flac" in listed
    assert listed.count(".flac") == len(chosen)


async def test_a_path_between_selected_songs_is_drawn(site: Site, page: Any) -> None:
    stage = await open_map(page, site)
    box = await page.get_by_test_id("map-points").bounding_box()
    for title, track_id in (("Step 0", "arc0"), ("Step 10", "arc10")):
        await page.get_by_test_id("map-search").fill(title)
        await page.get_by_test_id("map-found-track").filter(has_text=f"{title}").first.click()
        await expect(stage).to_have_attribute("data-highlight", track_id)
        await page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await expect(page.locator(f'#selection-list li[data-track-id="{track_id}"]')).to_have_count(
            1
        )

    async with page.expect_response(lambda r: r.url.endswith("/api/playlists/build")) as info:
        await page.get_by_test_id("path").click()
    answer = await (await info.value).json()
    request = {k: v for k, v in answer["request"].items() if k != "deadline_ms"}
    reply = await site.running.client.ask(request | {"request_id": uuid.uuid4().hex}, timeout=20)
    expected = [t.track_id for t in reply.tracks]
    assert expected[0] == "arc0" and expected[-1] == "arc10" and len(expected) > 2
    path = page.get_by_test_id("path-list").locator("li")
    await expect(path).to_have_count(len(expected))
    assert [await li.get_attribute("data-track-id") for li in await path.all()] == expected
    await expect(page.get_by_test_id("map-points")).to_have_attribute(
        "data-path", str(len(expected))
    )
    await screenshots(page, "map")

    # More than ten songs for a path: the page says what a path takes, and asks nothing.
    await page.get_by_role("button", name="Whole map").click()
    await page.get_by_test_id("tool-lasso").click()
    await page.mouse.move(box["x"] + 5, box["y"] + 5)
    await page.mouse.down()
    for x, y in (
        (box["width"] - 5, 5),
        (box["width"] - 5, box["height"] - 5),
        (5, box["height"] - 5),
    ):
        await page.mouse.move(box["x"] + x, box["y"] + y, steps=3)
    await page.mouse.up()
    await expect(page.get_by_test_id("selection-count")).to_have_text(str(site.rows()))
    await page.get_by_test_id("path").click()
    await expect(page.get_by_test_id("selection-note")).to_contain_text(
        "A path joins 2 to 10 songs"
    )


async def test_an_empty_library_says_so(site: Site, page: Any) -> None:
    await page.goto(f"{site.url}/map?model=muq")
    stage = page.get_by_test_id("map-stage")
    await expect(stage).to_have_attribute("data-state", "empty", timeout=30_000)
    await expect(page.get_by_test_id("map-message")).to_contain_text(
        "nothing is embedded with muq yet"
    )
    await expect(page.get_by_test_id("map-points")).to_have_attribute("data-drawn", "0")
    await screenshots(page, "map-empty")
