"""The endpoints the Navidrome plugin calls, through the real HTTP app, the real broker and
the real query service over the synthetic library (tests/fixtures/library.py).

Songs come in as Navidrome's SongRefs and are resolved by the query service: by id, by
MusicBrainz id, by artist + title (album breaking a tie); albums and artists become their
tracks as seeds under an artist cap. Also the bad input of issue 13: count 0 and 10,000,
an unknown song, a path from a song to itself, a wrong token, a caller that is not on
loopback, the query service not answering (504 within the deadline, measured), the bus gone.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipeline.client import QueryClient
from pipeline.topics import ensure_topics
from tests.fixtures.library import LOOPBACK, Running, http_client
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(120)

SIMILAR, PATH = "/navidrome/v1/similar", "/navidrome/v1/path"
@pytest.fixture
async def api(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(running.settings, running.client) as client:
        yield client


def ids(body: dict[str, Any]) -> list[str]:
    return [m["song"]["id"] for m in body["matches"]]


async def post(api: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(url, json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert set(data) == {"matches", "warnings"}
    for match in data["matches"]:
        assert 0.0 <= match["similarity"] <= 1.0
    return data


async def test_similar_by_navidrome_id_is_what_the_bus_answers(
    running: Running, api: httpx.AsyncClient
) -> None:
    data = await post(api, SIMILAR, {"song": {"id": "rock1", "name": "ignored"}, "count": 8})
    assert ids(data) == await running.similar_ids("rock1", 8)
    first = data["matches"][0]["song"]
    track = running.library.tracks[first["id"]]
    assert first["name"] == track.title and first["artist"] == track.artist
    assert first["album"] == f"{track.cluster} album"
    sims = [m["similarity"] for m in data["matches"]]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.5


async def test_similar_by_mbid_and_the_reply_carries_mbids(
    running: Running, api: httpx.AsyncClient
) -> None:
    jazz3 = running.library.tracks["jazz3"]
    song = {"name": "Another Title", "artist": "Someone Else", "mbid": jazz3.mbid.upper()}
    data = await post(api, SIMILAR, {"song": song, "count": 5})
    assert ids(data) == await running.similar_ids("jazz3", 5)
    for match in data["matches"]:  # every jazz track has an MBID; Navidrome matches by it
        assert match["song"]["mbid"] == running.library.tracks[match["song"]["id"]].mbid


async def test_similar_by_artist_and_title(running: Running, api: httpx.AsyncClient) -> None:
    song = {"id": "nd-unknown-id", "name": "jazz tune 3!", "artists": [{"name": "QUARTET 3"}]}
    data = await post(api, SIMILAR, {"song": song, "count": 5})
    assert ids(data) == await running.similar_ids("jazz3", 5)
    # rock0 and its remastered copy share artist and title: the album breaks the tie.
    for album, expected in (("rock album", "rock0"), ("rock-copy album", "rock0-copy")):
        song = {"name": "Rock Song 0", "artist": "The Amps", "album": album}
        data = await post(api, SIMILAR, {"song": song, "count": 4})
        assert ids(data) == await running.similar_ids(expected, 4)


async def test_album_and_artist_seeds_leave_out_the_seeds_and_hold_the_cap(
    running: Running, api: httpx.AsyncClient
) -> None:
    lib = running.library
    data = await post(api, SIMILAR, {"artist": {"name": "The Amps"}, "count": 10})
    got = ids(data)
    assert len(got) == 10
    assert not {t for t in got if lib.tracks[t].artist == "The Amps"}
    assert max(Counter(lib.tracks[t].artist for t in got).values()) == 2  # default cap
    # Riff Union and Stone Lane (rock, two each) come first.
    assert {lib.tracks[t].cluster for t in got[:4]} == {"rock"}
    data = await post(api, SIMILAR, {"album": {"name": "Jazz Album"}, "count": 6,
                                     "max_per_artist": 1})  # fmt: skip
    got = ids(data)
    assert got and not {t for t in got if lib.tracks[t].cluster == "jazz"}
    assert max(Counter(lib.tracks[t].artist for t in got).values()) == 1


async def test_path_starts_and_ends_right_and_honours_count(api: httpx.AsyncClient) -> None:
    body = {"start": {"id": "arc0", "name": "Step 0"},
            "end": {"name": "Step 10", "artist": "Walker 10"}, "count": 6}  # fmt: skip
    data = await post(api, PATH, body)
    got = ids(data)
    assert len(got) == 6 and got[0] == "arc0" and got[-1] == "arc10"
    assert len(set(got)) == len(got)
    same = await post(
        api,
        PATH,
        {
            "start": {"id": "arc3", "name": ""},
            "end": {"name": "Step 3", "artist": "Walker 3"},
            "count": 5,
        },
    )
    assert ids(same) == ["arc3"] and "same song" in " ".join(same["warnings"])


async def test_count_zero_and_ten_thousand(api: httpx.AsyncClient) -> None:
    zero = await post(api, SIMILAR, {"song": {"id": "rock1", "name": ""}, "count": 0})
    assert zero["matches"] == [] and zero["warnings"]
    ends = {"start": {"id": "arc0", "name": ""}, "end": {"id": "arc10", "name": ""}}
    assert (await post(api, PATH, {**ends, "count": -3}))["matches"] == []
    big = await post(api, SIMILAR, {"song": {"id": "rock1", "name": ""}, "count": 10_000})
    assert any("clamped to 500" in w for w in big["warnings"])
    assert 30 <= len(big["matches"]) <= 500
    path = await post(api, PATH, {"start": {"id": "arc0", "name": ""},
                                  "end": {"id": "arc10", "name": ""}, "count": 10_000})  # fmt: skip
    assert any("clamped to 200" in w for w in path["warnings"])
    got = ids(path)
    assert got[0] == "arc0" and got[-1] == "arc10" and len(set(got)) == len(got)


async def test_unknown_song_is_an_empty_answer_with_a_warning(api: httpx.AsyncClient) -> None:
    song = {"id": "nd-404", "name": "Never Embedded", "artist": "Nobody"}
    for _ in range(3):  # asked again and again: still a calm 200
        data = await post(api, SIMILAR, {"song": song, "count": 5})
        assert data["matches"] == []
        assert "not in sonicbus' library" in " ".join(data["warnings"])
    data = await post(api, PATH, {"start": song, "end": {"id": "arc0", "name": ""}, "count": 4})
    assert data["matches"] == [] and data["warnings"]
    data = await post(api, SIMILAR, {"artist": {"name": "Nobody At All"}, "count": 5})
    assert data["matches"] == [] and data["warnings"]


async def test_bad_bodies_are_422(api: httpx.AsyncClient) -> None:
    for body in (
        {"count": 5},
        {"song": {"id": "rock1", "name": ""}, "artist": {"name": "The Amps"}, "count": 5},
        {"song": {"id": "rock1"}, "count": "many"},
        {"song": {"id": "rock1"}, "models": ["no/such"]},
    ):
        response = await api.post(SIMILAR, json=body)
        assert response.status_code == 422, (body, response.text)
    response = await api.post(PATH, json={"start": {"id": "arc0"}, "count": 3})
    assert response.status_code == 422


async def test_tokens_and_the_loopback_rule(running: Running) -> None:
    body = {"song": {"id": "rock1", "name": ""}, "count": 3}
    tokens = {"client_token": SecretStr("c-token"), "admin_token": SecretStr("a-token")}
    remote = ("10.1.2.3", 5555)
    async with http_client(running.settings, running.client, remote, **tokens) as api:
        for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                                ({"Authorization": "Bearer c-token"}, 200),
                                ({"Authorization": "Bearer a-token"}, 200)):  # fmt: skip
            response = await api.post(SIMILAR, json=body, headers=headers)
            assert response.status_code == status, (headers, response.text)
            assert "matches" in response.json() if status == 200 else response.json()["detail"]
    async with http_client(running.settings, running.client, LOOPBACK, **tokens) as api:
        assert (await api.post(SIMILAR, json=body)).status_code == 401  # a token is set
    # No client token: open to loopback, closed to others (except with the admin token).
    admin_only = {"admin_token": SecretStr("a-token")}
    async with http_client(running.settings, running.client, LOOPBACK) as api:
        assert (await api.post(SIMILAR, json=body)).status_code == 200
        wrong = await api.post(SIMILAR, json=body, headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        # A web page whose DNS name was rebound to 127.0.0.1: loopback caller, foreign Host.
        rebound = await api.post(SIMILAR, json=body, headers={"Host": "evil.example:9002"})
        assert rebound.status_code == 403 and "evil.example" in rebound.json()["detail"]
        local = await api.post(SIMILAR, json=body, headers={"Host": "localhost:9002"})
        assert local.status_code == 200
    async with http_client(running.settings, running.client, remote, **admin_only) as api:
        response = await api.post(SIMILAR, json=body)
        assert response.status_code == 403 and "client_token" in response.json()["detail"]
        ok = await api.post(SIMILAR, json=body, headers={"Authorization": "Bearer a-token"})
        assert ok.status_code == 200


async def test_the_older_read_endpoints_follow_the_same_rule(running: Running) -> None:
    """/recommendations and /embed_text are read-only query endpoints like the plugin's."""
    remote = ("10.1.2.3", 5555)
    custom = ("/recommendations/custom", {"seeds": [{"track_id": "rock1"}], "limit": 3})
    text = ("/embed_text", {"text": "calm"})
    async with http_client(running.settings, running.client, remote) as api:
        for path, body in (custom, text):
            response = await api.post(path, json=body)
            assert response.status_code == 403 and "client_token" in response.text, path
    tokens = {"client_token": SecretStr("c-token")}
    async with http_client(running.settings, running.client, remote, **tokens) as api:
        for path, body in (custom, text):
            assert (await api.post(path, json=body)).status_code == 401, path
        ok = await api.post(custom[0], json=custom[1], headers={"Authorization": "Bearer c-token"})
        assert ok.status_code == 200, ok.text


async def test_no_query_service_is_504_within_the_deadline(kafka_broker: str) -> None:
    settings = base_settings()  # topics of their own: no query service reads them
    await ensure_topics(settings.kafka, settings.topics)
    client = QueryClient(settings)
    async with client, http_client(settings, client, reply_timeout_s=1.5) as api:
        body = {"song": {"id": "rock1", "name": ""}, "count": 3}
        started = time.monotonic()
        response = await api.post(SIMILAR, json=body)
        elapsed = time.monotonic() - started
        assert response.status_code == 504, response.text
        assert 1.4 <= elapsed < 2.5, elapsed
        started = time.monotonic()  # the body's shorter deadline wins
        response = await api.post(SIMILAR, json={**body, "timeout_s": 0.5})
        assert response.status_code == 504
        assert time.monotonic() - started < 1.3


class BrokenBus:
    async def ask(self, request: Any, timeout: float | None = None) -> Any:
        await asyncio.sleep(0)
        raise ConnectionError("broker 127.0.0.1:1 is unreachable")


async def test_bus_down_is_503() -> None:
    async with http_client(base_settings(), BrokenBus()) as api:
        response = await api.post(SIMILAR, json={"song": {"id": "x", "name": ""}, "count": 3})
        assert response.status_code == 503 and "bus" in response.json()["detail"]
