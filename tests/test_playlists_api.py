"""The playlist builder's API (/api/playlists/*) on the real broker and the real query service
over the synthetic library (tests/fixtures/library.py), and the real Navidrome for saving.

Each mode's list is what the bus answers for the QueryRequest the API says it sent; "not
this one" asks again without the track; bad bodies, unknown tracks, a Navidrome that is not
set up or down get clear 4xx/5xx answers. A playlist saved to Navidrome holds the songs in
order, by their Navidrome ids, also for tracks whose ids Navidrome does not know (resolved
by title and artist); an M3U8 download lists the stored file paths.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from pipeline.config import EmbedSettings, HttpSettings, Settings
from pipeline.http.app import create_app
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorRow
from tests.fixtures.library import LOOPBACK, Running
from tests.fixtures.navidrome import NavidromeServer, Song, free_port, write_songs

pytestmark = pytest.mark.timeout(180)

BUILD, SAVE, M3U8 = "/api/playlists/build", "/api/playlists/save", "/api/playlists/m3u8"


ADMIN_TOKEN = "builder-admin"


def builder_client(
    settings: Settings,
    running: Running,
    admin: bool = True,
    peer: tuple[str, int] = LOOPBACK,
    **http: Any,
) -> httpx.AsyncClient:
    """The real HTTP app, asking through the module's QueryClient, reading its store (as
    `sonicbus up`'s runtime does); a program with the admin token (saving writes)."""
    config = HttpSettings(admin_token=SecretStr(ADMIN_TOKEN), **http)
    settings = settings.model_copy(update={"http": config})
    runtime = SimpleNamespace(client=running.client, store=running.store)
    app = create_app(settings, runtime=runtime)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app, client=peer)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if admin else {}
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30,
                             headers=headers)  # fmt: skip


@pytest.fixture
async def api(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with builder_client(running.settings, running) as client:
        yield client


async def build(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    answer = await api.post(BUILD, json=body)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


async def bus_ids(running: Running, request: dict[str, Any]) -> list[str]:
    """What the query service answers when a client publishes the same request itself."""
    again = {k: v for k, v in request.items() if k != "deadline_ms"}
    again["request_id"] = uuid.uuid4().hex
    reply = await running.client.ask(again, timeout=20)
    assert reply.ok, reply.error
    return [t.track_id for t in reply.tracks]


def ids(data: dict[str, Any]) -> list[str]:
    return [t["track_id"] for t in data["tracks"]]


MODES = {
    "similar": {"track_id": "rock1", "limit": 8},
    "text": {"prompt": "heavy metal", "negative_prompts": ["jazz"], "limit": 6},
    "path": {"start_track_id": "arc0", "end_track_id": "arc10", "steps": 6},
    "alchemy": {"add_track_ids": ["rock1", "metal1"], "subtract_track_ids": ["jazz1"],
                "temperature": 0.5, "random_seed": 3, "limit": 6},
    "recommend": {"seeds": [{"track_id": "s0", "weight": 2.0}, {"track_id": "a3", "weight": 0.5}],
                  "models": ["mert", "music2latent", "clap"], "merge": "union",
                  "diversity": 0.3, "limit": 5},
}  # fmt: skip


@pytest.mark.parametrize("mode", list(MODES))
async def test_each_mode_lists_what_the_bus_answers(
    running: Running, api: httpx.AsyncClient, mode: str
) -> None:
    data = await build(api, {"mode": mode, **MODES[mode]})
    sent = data["request"]
    assert sent["type"] == mode and sent["request_id"] == data["request_id"]
    for field, value in MODES[mode].items():
        assert sent[field] == value, field
    assert ids(data) and ids(data) == await bus_ids(running, sent)
    lib = running.library.tracks
    for track in data["tracks"]:  # what the page shows comes along
        if track["track_id"] in lib:
            known = lib[track["track_id"]]
            assert (track["title"], track["artist"]) == (known.title, known.artist)
    if mode == "similar":
        assert {lib[t].cluster for t in ids(data)} <= {"rock", "rock-copy"}
    if mode == "text":
        assert lib[ids(data)[0]].cluster == "metal"
        assert not any(lib[t].cluster == "jazz" for t in ids(data))
    if mode == "path":
        steps = [int(t.removeprefix("arc")) for t in ids(data)]
        assert steps[0] == 0 and steps[-1] == 10 and steps == sorted(steps), steps
    if mode == "alchemy":
        assert not {"rock1", "metal1", "jazz1"} & set(ids(data))
    if mode == "recommend":
        assert set(ids(data)) <= {"a1", "a2", "b1", "b2", "c1", "d1"}


async def test_not_this_one_asks_again_without_it(running: Running, api: httpx.AsyncClient) -> None:
    first = await build(api, {"mode": "similar", "track_id": "rock1", "limit": 5})
    unwanted = ids(first)[1]
    again = await build(api, {"mode": "similar", "track_id": "rock1", "limit": 5,
                              "exclude": [unwanted]})  # fmt: skip
    assert unwanted not in ids(again) and len(ids(again)) == 5
    assert again["request"]["exclude_track_ids"] == [unwanted]
    assert ids(again) == [t for t in ids(first) if t != unwanted] + ids(again)[4:]
    assert ids(again) == await bus_ids(running, again["request"])
    # On a path the step is replaced by another; both ends stay.
    path = await build(api, {"mode": "path", "start_track_id": "arc0", "end_track_id": "arc10",
                             "steps": 6, "exclude": ["arc4"]})  # fmt: skip
    assert "arc4" not in ids(path) and ids(path)[0] == "arc0" and ids(path)[-1] == "arc10"


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"mode": "radio", "track_id": "rock1"}, 422, "mode: one of similar, text"),
        ({"track_id": "rock1"}, 422, "mode: one of"),
        ({"mode": "text", "prompt": "calm", "negative_prompt": ["x"]}, 422,
         "negative_prompt: not a field of mode text"),
        ({"mode": "similar", "limit": 5}, 422, "give exactly one of track_id"),
        ({"mode": "path", "start_track_id": "arc0", "end_track_id": "arc3", "steps": 1}, 422,
         "steps"),
        ({"mode": "alchemy", "add_track_ids": []}, 422, "add_track_ids"),
        ({"mode": "similar", "track_id": "rock1", "exclude": "rock2"}, 422, "exclude"),
        ({"mode": "similar", "track_id": "rock1", "request_id": "mine"}, 422, "request_id"),
        ({"mode": "similar", "track_id": "no-such-track"}, 404, "not_found"),
        ({"mode": "alchemy", "add_track_ids": ["nope1", "nope2"]}, 404, "not_found"),
    ],
)  # fmt: skip
async def test_bad_builds_are_refused_with_the_reason(
    api: httpx.AsyncClient, body: dict[str, Any], status: int, says: str
) -> None:
    answer = await api.post(BUILD, json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]


async def test_a_body_that_is_no_object_is_422(api: httpx.AsyncClient) -> None:
    answer = await api.post(BUILD, json=["similar", "rock1"])
    assert answer.status_code == 422
    json_type = {"content-type": "application/json"}
    answer = await api.post(BUILD, content=b"{not json", headers=json_type)
    assert answer.status_code == 422


async def test_m3u8_lists_the_stored_paths_in_order(api: httpx.AsyncClient) -> None:
    data = await build(api, {"mode": "similar", "track_id": "jazz2", "limit": 3})
    chosen = ids(data)
    answer = await api.post(M3U8, json={"name": "Late jazz / Ünïcode", "track_ids": chosen})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("audio/x-mpegurl")
    disposition = answer.headers["content-disposition"]
    assert 'filename="Late jazz _ _n_code.m3u8"' in disposition
    assert "filename*=UTF-8''Late%20jazz%20%2F%20%C3%9Cn%C3%AFcode.m3u8" in disposition
    lines = answer.text.splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Late jazz / Ünïcode"]
    paths = [line for line in lines if not line.startswith("#")]
    assert paths == [f"/music/{t}.flac" for t in chosen]
    labels = [line.split(",", 1)[1] for line in lines if line.startswith("#EXTINF")]
    assert labels == [f"{t['artist']} - {t['title']}" for t in data["tracks"]]

    unknown = await api.post(M3U8, json={"name": "x", "track_ids": ["jazz1", "nope"]})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
    blank = await api.post(M3U8, json={"name": "  ", "track_ids": ["jazz1"]})
    assert blank.status_code == 422 and "blank" in blank.text
    empty = await api.post(M3U8, json={"name": "x", "track_ids": []})
    assert empty.status_code == 422


async def test_saving_without_a_reachable_navidrome_is_503_saying_why(running: Running) -> None:
    body = {"name": "Nowhere", "track_ids": ["rock1"]}
    async with builder_client(running.settings, running, admin=False) as anonymous:
        refused = await anonymous.post(SAVE, json=body)  # saving writes: not without the token
    assert refused.status_code == 401, refused.text
    async with builder_client(running.settings, running) as api:  # navidrome.url unset
        unset = await api.post(SAVE, json=body)
    assert unset.status_code == 503 and "navidrome.url" in unset.json()["detail"]

    port = free_port(39890)  # nobody listens there
    navidrome = running.settings.navidrome.model_copy(update={
        "url": f"http://127.0.0.1:{port}", "user": "admin", "password": SecretStr("x"),
        "retries": 0, "timeout_s": 2.0})  # fmt: skip
    down = running.settings.model_copy(update={"navidrome": navidrome})
    async with builder_client(down, running) as api:
        answer = await api.post(SAVE, json=body)
        bad_target = await api.post(SAVE, json={**body, "target": "spotify"})
    assert answer.status_code == 503, answer.text
    assert f"127.0.0.1:{port}" in answer.json()["detail"] and "connect" in answer.json()["detail"]
    assert bad_target.status_code == 422


async def test_save_creates_then_replaces_the_playlist_on_navidrome(
    running: Running, navidrome_server: NavidromeServer, navidrome_folder
) -> None:
    """Three songs in Navidrome; sonicbus knows two by Navidrome's ids and one by an id of its
    own (a library read from a music folder), with the same title and artist."""
    band = f"Builder {uuid.uuid4().hex[:6]}"
    titles = ["Morning Light", "Evening Tide (Remastered 2011)", "Night Walk"]
    songs = [Song(f"{band}/{i}.mp3", TrackMetadata(title=t, artist=band, album="Days"))
             for i, t in enumerate(titles)]  # fmt: skip
    write_songs(navidrome_folder, songs)
    navidrome_server.rescan()
    nd = {p.stem: i for p, i in navidrome_server.ids_by_path(navidrome_folder).items()}
    own_id = f"fs-{uuid.uuid4().hex[:8]}"
    rows = [
        VectorRow(nd["0"], np.eye(8)[0], artist=band, title=titles[0], album="Days"),
        VectorRow(own_id, np.eye(8)[1], artist=band.upper(), title="Evening Tide", album="Days"),
        VectorRow(nd["2"], np.eye(8)[2], artist=band, title=titles[2], album="Days"),
    ]
    store = running.store
    collection = store.collection_name("saved")  # a model of its own: the others stay as they are
    store.ensure_collection(collection, dim=8)
    store.upsert(collection, rows)
    settings = navidrome_server.settings(running.settings, api=True)
    settings = settings.model_copy(update={"embed": EmbedSettings(models=["musicnn", "saved"])})
    name = f"Builder test {uuid.uuid4().hex[:6]}"
    async with builder_client(settings, running) as api:
        first = await api.post(
            SAVE, json={"name": name, "track_ids": [nd["0"], own_id, nd["2"], "rock1"]}
        )
        assert first.status_code == 200, first.text
        saved = first.json()
        assert saved["created"] is True and saved["name"] == name
        assert saved["tracks"] == [nd["0"], nd["1"], nd["2"]]
        assert saved["resolved"] == {own_id: nd["1"]}
        [missing] = saved["missing"]  # in sonicbus' library, but no such song in Navidrome
        assert missing["track_id"] == "rock1" and "Rock Song 1" in missing["reason"]
        playlist = navidrome_server.subsonic("getPlaylist", id=saved["playlist_id"])["playlist"]
        assert playlist["name"] == name and playlist["owner"] == navidrome_server.user
        assert [e["id"] for e in playlist["entry"]] == [nd["0"], nd["1"], nd["2"]]

        again = await api.post(SAVE, json={"name": name, "track_ids": [nd["2"], nd["0"]]})
        assert again.status_code == 200, again.text
        assert again.json()["created"] is False
        assert again.json()["playlist_id"] == saved["playlist_id"]
        playlist = navidrome_server.subsonic("getPlaylist", id=saved["playlist_id"])["playlist"]
        assert [e["id"] for e in playlist["entry"]] == [nd["2"], nd["0"]]

        nothing = await api.post(SAVE, json={"name": name, "track_ids": ["rock1", "no-such"]})
        assert nothing.status_code == 422 and "none of these tracks" in nothing.text
    navidrome_server.subsonic("deletePlaylist", id=saved["playlist_id"])


async def test_the_page_and_its_api_follow_the_login_rule(running: Running) -> None:
    async with builder_client(running.settings, running) as local:  # loopback: no login
        page = await local.get("/builder")
        assert page.status_code == 200 and "Build a playlist" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        options = (await local.get("/api/playlists/options")).json()
        assert options["modes"] == ["similar", "text", "path", "alchemy", "recommend", "instant"]
        assert options["models"] == ["musicnn"] and options["navidrome"] is False
    lan = ("192.0.2.7", 51000)
    async with builder_client(running.settings, running, admin=False, peer=lan,
                              host="0.0.0.0") as anonymous:  # fmt: skip
        page = await anonymous.get("/builder")
        assert page.status_code == 303 and page.headers["location"] == "/login"
        body = {"mode": "similar", "track_id": "rock1"}
        assert (await anonymous.post(BUILD, json=body)).status_code == 401
        m3u8 = await anonymous.post(M3U8, json={"name": "x", "track_ids": ["rock1"]})
        assert m3u8.status_code == 401
