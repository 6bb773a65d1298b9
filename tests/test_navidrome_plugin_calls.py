"""What the plugin calls: `POST /navidrome/v1/plugin/<function>`, Navidrome's own request in
and its response out, through the real HTTP app, broker and query service over the
synthetic library (tests/fixtures/library.py).

The plugin (plugins/navidrome/sonicbus.c) reads no JSON: it forwards Navidrome's request
and the user's plugin settings (as `X-Sonicbus-*` headers) and hands back our answer. So
this is where a setting typed wrong in Navidrome must become a clear 422 naming it, and
where each capability's answer must already have Navidrome's shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.fixtures.library import Running, http_client

pytestmark = pytest.mark.timeout(120)

PLUGIN = "/navidrome/v1/plugin"


@pytest.fixture
async def api(running: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(running.settings, running.client) as client:
        yield client


async def call(
    api: httpx.AsyncClient, function: str, request: dict[str, Any], **settings: str
) -> dict[str, Any]:
    headers = {f"X-Sonicbus-{name.replace('_', '-')}": v for name, v in settings.items()}
    response = await api.post(f"{PLUGIN}/{function}", json=request, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_instant_mix_answers_songs_as_the_bus_does(
    running: Running, api: httpx.AsyncClient
) -> None:
    request = {"id": "rock1", "name": "Rock Song 1", "artist": "The Amps", "count": 6}
    answer = await call(api, "get_similar_songs_by_track", request)
    assert set(answer) == {"songs"}  # Navidrome's SimilarSongsResponse
    assert [s["id"] for s in answer["songs"]] == await running.similar_ids("rock1", 6)
    first = answer["songs"][0]
    assert first["name"] == running.library.tracks[first["id"]].title


async def test_sonic_similar_tracks_and_path_answer_matches(
    running: Running, api: httpx.AsyncClient
) -> None:
    answer = await call(api, "get_sonic_similar_tracks",
                        {"song": {"id": "jazz3", "name": "x"}, "count": 4})  # fmt: skip
    assert [m["song"]["id"] for m in answer["matches"]] == await running.similar_ids("jazz3", 4)
    assert all(0 <= m["similarity"] <= 1 for m in answer["matches"])
    path = await call(api, "find_sonic_path", {"startSong": {"id": "arc0", "name": ""},
                                               "endSong": {"id": "arc5", "name": ""},
                                               "count": 4})  # fmt: skip
    got = [m["song"]["id"] for m in path["matches"]]
    assert (len(got), got[0], got[-1], len(set(got))) == (4, "arc0", "arc5", 4)


async def test_artist_radio_carries_the_plugin_settings(
    running: Running, api: httpx.AsyncClient
) -> None:
    lib = running.library
    request = {"id": "nd-artist", "name": "The Amps", "count": 8}
    answer = await call(api, "get_similar_songs_by_artist", request, max_per_artist="1",
                        diversity="0.2", models='["musicnn"]', timeout_ms="3000")  # fmt: skip
    got = [s["id"] for s in answer["songs"]]
    assert got and not {t for t in got if lib.tracks[t].artist == "The Amps"}
    assert max(Counter(lib.tracks[t].artist for t in got).values()) == 1
    request = {"id": "nd-album", "name": "Jazz Album", "artist": "", "count": 5}
    album = await call(api, "get_similar_songs_by_album", request)
    assert album["songs"] and not {s["id"] for s in album["songs"]} & set(lib.cluster("jazz"))


async def test_warnings_travel_in_the_answer_for_the_plugin_to_log(api: httpx.AsyncClient) -> None:
    answer = await call(api, "get_similar_songs_by_track", {"id": "rock1", "count": 10_000})
    assert answer["songs"] and "above the cap" in " ".join(answer["warnings"])
    nothing = await call(api, "get_sonic_similar_tracks", {"song": {"id": "rock1"}, "count": 0})
    assert nothing["matches"] == [] and nothing["warnings"]
    unknown = await call(api, "get_sonic_similar_tracks",
                         {"song": {"id": "nd-new", "name": "Never Heard"}, "count": 3})  # fmt: skip
    assert unknown["matches"] == [] and unknown["warnings"]


async def test_bad_settings_and_bodies_are_clear_errors(api: httpx.AsyncClient) -> None:
    song = {"song": {"id": "rock1"}, "count": 3}
    for header, value, named in (
        ("X-Sonicbus-Diversity", "2", "diversity"),
        ("X-Sonicbus-Diversity", "lots", "diversity"),
        ("X-Sonicbus-Max-Per-Artist", "1.5", "max_per_artist"),
        ("X-Sonicbus-Timeout-Ms", "-4", "timeout_ms"),
        ("X-Sonicbus-Models", "no/such", "models"),
    ):
        response = await api.post(f"{PLUGIN}/get_sonic_similar_tracks", json=song,
                                  headers={header: value})  # fmt: skip
        assert response.status_code == 422, (header, value, response.text)
        assert named in response.text, response.text
    response = await api.post(f"{PLUGIN}/get_sonic_similar_tracks", content=b"{not json")
    assert response.status_code == 422
    response = await api.post(f"{PLUGIN}/find_sonic_path", json={"count": "many"})
    assert response.status_code == 422
    response = await api.post(f"{PLUGIN}/nd_get_lyrics", json={})
    assert response.status_code == 404 and "get_similar_songs_by_track" in response.text
