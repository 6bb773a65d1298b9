"""The music map's API (/api/map): the projection of every embedded track, kept current.

On the synthetic library of tests/fixtures/library.py (Milvus Lite, the real broker): the
map holds one point per row, each with its top tag; hovering and search find songs; a
track the embedder announces on `embeddings` is placed next to its kind without redrawing
the map, a deleted one goes; once the library has grown by the configured share the map is
redrawn in the background and a page holding the old one is told to reload; a second
service reuses the saved projection. And the projection itself: t-SNE over landmarks keeps
neighbours where PCA does not.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest

from pipeline.config import HttpSettings, Settings
from pipeline.http.app import create_app
from pipeline.recommender.projection import fit_projection, neighbour_quality
from pipeline.schemas import EmbeddingEvent
from pipeline.service_settings import MapSettings
from pipeline.store import VectorRow
from tests.fixtures.library import Running, axis, unit

pytestmark = pytest.mark.timeout(120)


def decode(columns: dict[str, str]) -> dict[str, Any]:
    ids = columns["ids"].split("\n") if columns["ids"] else []
    raw = {k: base64.b64decode(columns[k]) for k in ("x", "y", "tag")}
    x = np.frombuffer(raw["x"], "<u2") / 65535 * 2 - 1
    y = np.frombuffer(raw["y"], "<u2") / 65535 * 2 - 1
    tags = np.frombuffer(raw["tag"], np.uint8)
    return {t: (float(a), float(b), int(c)) for t, a, b, c in zip(ids, x, y, tags, strict=True)}


class MapClient:
    """The real app over ASGI with a runtime of the test's store; stops its map on close."""

    def __init__(
        self, running: Running, home: Path, growth: float = 0.2,
        peer: tuple[str, int] = ("127.0.0.1", 40000), host: str = "127.0.0.1",
    ) -> None:  # fmt: skip
        http = HttpSettings(host=host, map=MapSettings(recompute_growth=growth))
        self.settings: Settings = running.settings.model_copy(update={"home": home, "http": http})
        self.runtime = SimpleNamespace(client=running.client, store=running.store,
                                       stop_event=asyncio.Event())  # fmt: skip
        app = create_app(self.settings, runtime=self.runtime)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app, client=peer)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=60)

    async def get(self, path: str, status: int = 200) -> dict[str, Any]:
        response = await self.http.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == status, response.text
        return response.json()  # type: ignore[no-any-return]

    async def ready_map(self, model: str = "musicnn") -> dict[str, Any]:
        async with asyncio.timeout(60):
            while (doc := await self.get(f"/api/map?model={model}"))["state"] == "computing":
                await asyncio.sleep(0.2)
        return doc

    async def close(self) -> None:
        self.runtime.stop_event.set()
        await self.http.aclose()


@pytest.fixture
async def client(running: Running, tmp_path: Path) -> AsyncIterator[MapClient]:
    client = MapClient(running, tmp_path)
    yield client
    await client.close()


async def announce(running: Running, track_id: str, status: str) -> None:
    """What the embedder does after an upsert (or a delete): an event on `embeddings`."""
    event = EmbeddingEvent(track_id=track_id, model="musicnn", model_version="v", status=status,
                           dim=16, collection=running.store.collection_name("musicnn"))  # fmt: skip
    await running.service.producer.send_and_wait(
        running.settings.topics.embeddings, event.to_bytes(), key=track_id.encode()
    )


async def updates_until(client: MapClient, cursor: str, check: Any) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            update = await client.get(f"/api/map/updates?model=musicnn&since={cursor}")
            if check(update):
                return update
            await asyncio.sleep(0.3)


async def test_the_map_holds_every_track_with_its_top_tag(client: MapClient, running) -> None:
    response = await client.http.get("/api/map", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    doc = response.json()
    if doc["state"] == "computing":
        doc = await client.ready_map()
    collection = running.store.collection_name("musicnn")
    assert doc["state"] == "ready" and doc["model"] == "musicnn"
    assert doc["count"] == running.store.count(collection) == len(running.library.tracks)
    points = decode(doc["columns"])
    assert set(points) == set(running.library.tracks)
    assert all(-1 <= x <= 1 and -1 <= y <= 1 for x, y, _ in points.values())
    names = doc["tag_names"]
    assert names[points["jazz3"][2]] == "jazz" and names[points["metal1"][2]] == "heavy metal"
    legend = {e["name"]: e["count"] for e in doc["legend"]}
    assert sum(legend.values()) == doc["count"] and legend["rock"] >= 12

    hover = await client.get("/api/map/tracks?model=musicnn&ids=jazz3,nobody")
    (track,) = hover["tracks"]
    assert (track["title"], track["artist"]) == ("Jazz Tune 3", "Quartet 3")
    assert track["tags"][0]["tag"] == "jazz" and len(track["tags"]) == 3

    found = await client.get("/api/map/search?model=musicnn&q=quartet%201")
    assert {t["track_id"] for t in found["tracks"]} == {"jazz1", "jazz5"}


async def test_an_embedded_track_is_placed_by_its_kind_and_a_deleted_one_goes(
    client: MapClient, running: Running
) -> None:
    doc = await client.ready_map()
    points = decode(doc["columns"])
    collection = running.store.collection_name("musicnn")
    jazz = np.mean([points[t][:2] for t in running.library.cluster("jazz")], axis=0)
    rock = np.mean([points[t][:2] for t in running.library.cluster("rock")], axis=0)
    tags = running.library.tracks["jazz0"].tags
    row = VectorRow("new-jazz", unit(axis(1) + 0.05 * axis(2)), title="Late Set", artist="Trio",
                    extra={"tags": tags})  # fmt: skip
    running.store.upsert(collection, [row])
    try:
        await announce(running, "new-jazz", "embedded")
        update = await updates_until(client, doc["cursor"], lambda u: u.get("columns"))
        assert update["reload"] is False and update["count"] == doc["count"] + 1
        (x, y, tag), = decode(update["columns"]).values()  # fmt: skip
        assert doc["tag_names"][tag] == "jazz"
        here = np.array([x, y])
        assert np.linalg.norm(here - jazz) < np.linalg.norm(here - rock)
        again = await client.get("/api/map?model=musicnn")
        assert again["version"] == doc["version"]  # placed, not redrawn (2 % growth < 20 %)
        assert "new-jazz" in decode(again["columns"])
    finally:
        running.store.delete(collection, ["new-jazz"])
        await announce(running, "new-jazz", "deleted")
    gone = await updates_until(client, update["cursor"], lambda u: u["removed"])
    assert gone["removed"] == ["new-jazz"] and gone["count"] == doc["count"]
    stale = await client.get("/api/map/updates?model=musicnn&since=0.0")
    assert stale["reload"] is True


async def test_a_grown_library_is_redrawn_in_the_background(
    running: Running, tmp_path: Path
) -> None:
    client = MapClient(running, tmp_path, growth=0.01)
    collection = running.store.collection_name("musicnn")
    try:
        doc = await client.ready_map()
        running.store.upsert(collection, [VectorRow("grown", unit(axis(3) + axis(1)),
                                                    title="Grown", artist="New")])  # fmt: skip
        await announce(running, "grown", "embedded")
        await updates_until(client, doc["cursor"], lambda u: u["reload"])
        redrawn = await client.ready_map()
        assert redrawn["version"] == doc["version"] + 1
        assert redrawn["count"] == doc["count"] + 1 and "grown" in decode(redrawn["columns"])
    finally:
        await client.close()
        running.store.delete(collection, ["grown"])
        await announce(running, "grown", "deleted")

    # A second service on the same home reuses the saved projection: the same places.
    second = MapClient(running, tmp_path, growth=10.0)
    try:
        again = await second.ready_map()
        assert again["version"] == redrawn["version"]
        before, after = decode(redrawn["columns"]), decode(again["columns"])
        assert set(after) == set(before) - {"grown"}
        assert all(before[t] == after[t] for t in after)
    finally:
        await second.close()


async def test_bad_requests_and_an_empty_library_say_so(client: MapClient) -> None:
    empty = await client.ready_map("muq")
    assert empty["state"] == "empty" and empty["count"] == 0
    assert "nothing is embedded with muq yet" in empty["message"]
    unknown = await client.get("/api/map?model=nosuchmodel", status=404)
    assert "unknown model" in unknown["detail"]
    await client.get("/api/map/updates?model=musicnn", status=422)  # no cursor
    await client.get("/api/map/search?model=musicnn&q=", status=422)
    plain = await client.http.get("/api/map?model=musicnn", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers  # no gzip asked for: plain JSON
    assert json.loads(plain.content)["model"] == "musicnn"


def test_landmark_tsne_keeps_neighbours_that_pca_loses() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1, (12, 6))
    which = rng.integers(0, 12, 900)
    latent = centres[which] + rng.normal(0, 0.3, (900, 6))
    vectors = np.tanh(latent @ rng.normal(0, 1, (6, 40))).astype(np.float32)
    projection, coords = fit_projection(vectors, landmarks=300)
    assert projection.method == "tsne-landmarks" and coords.shape == (900, 2)
    assert np.abs(coords).max() <= 1.0
    tsne = neighbour_quality(vectors, coords, sample=500)
    pca, _ = fit_projection(vectors[:40])  # under MIN_TSNE_TRACKS: PCA
    assert pca.method == "pca"
    flat = neighbour_quality(vectors, fit_projection_pca(vectors), sample=500)
    assert tsne["trustworthiness"] > flat["trustworthiness"] + 0.05
    # A track placed later lands where the fit put it (the same rule places both).
    assert np.abs(projection.place(vectors[:50]) - coords[:50]).max() < 0.15


def fit_projection_pca(vectors: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(2).fit_transform(vectors)


async def test_the_page_and_its_api_follow_the_login_rule(
    client: MapClient, running, tmp_path
) -> None:
    page = await client.http.get("/map")  # loopback: no login
    assert page.status_code == 200 and "Music map" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    anonymous = MapClient(running, tmp_path, peer=("192.0.2.7", 51000), host="0.0.0.0")
    try:
        page = await anonymous.http.get("/map")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        assert (await anonymous.http.get("/api/map")).status_code == 401
        assert (await anonymous.http.get("/api/map/search?q=rock")).status_code == 401
    finally:
        await anonymous.close()
