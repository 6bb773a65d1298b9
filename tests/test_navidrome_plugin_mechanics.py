"""The sonicbus plugin's own mechanics (plugins/navidrome) inside a real Navidrome 0.63.2,
against a recording stand-in for sonicbus' /navidrome/v1 endpoints: the package loads, is
enabled through Navidrome's API, both capabilities are detected (the sonicSimilarity
extension is advertised, Instant Mix asks the plugin), what it sends (body, bearer token,
config), that nothing is cached, that a slow or failing sonicbus ends at the configured
timeout with one log line. End to end: tests/test_navidrome_plugin.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.navidrome import NavidromeError, write_songs
from tests.fixtures.navidrome_plugin import (
    Exchange,
    Library,
    PluginNavidrome,
    SonicbusStandIn,
    extensions,
    plugin_lines,
    read_package,
    small_library,
    songs_of,
    sonic_matches,
)

pytestmark = pytest.mark.timeout(300)

TOKEN = "client-token-for-the-plugin"


# -- the plugin's mechanics, against a stand-in --------------------------------------------


@dataclass
class Mechanics:
    server: PluginNavidrome
    stand_in: SonicbusStandIn
    library: Library
    state: dict[str, Any]  # what the stand-in answers now: "matches", "status"


@pytest.fixture(scope="module")
def mechanics(
    plugin_navidrome_factory: Callable[..., PluginNavidrome],
    sonicbus_stand_in: Callable[..., SonicbusStandIn],
    tmp_path_factory: pytest.TempPathFactory,
) -> Mechanics:
    music = tmp_path_factory.mktemp("mechanics-music")
    write_songs(music, small_library(artists=3, per_artist=2, seconds=2.0))
    state: dict[str, Any] = {"matches": []}

    def reply(exchange: Exchange) -> tuple[int, Any]:
        # sonicbus answers in the shape of the plugin function it was asked for
        if exchange.path.endswith(("/get_sonic_similar_tracks", "/find_sonic_path")):
            return state.get("status", 200), {"matches": state["matches"]}
        return state.get("status", 200), {"songs": [m["song"] for m in state["matches"]]}

    stand_in = sonicbus_stand_in(reply)
    server = plugin_navidrome_factory(music)
    return Mechanics(server, stand_in, Library.read(server), state)


def answer_with(mech: Mechanics, titles: list[str], status: int = 200) -> None:
    """The stand-in answers these songs (by id, with descending similarity) from now on."""
    ids = mech.library.songs
    mech.state["matches"] = [
        {"song": {"id": ids[t], "name": t}, "similarity": round(1 - 0.1 * (i + 1), 3)}
        for i, t in enumerate(titles)
    ]
    mech.state["status"] = status


def test_the_package_is_reproducible_and_lists_the_capabilities_exports(
    plugin_package: Path, tmp_path: Path
) -> None:
    from tests.fixtures.navidrome_plugin import build_plugin

    again = build_plugin(tmp_path / "again")
    assert again.read_bytes() == plugin_package.read_bytes()  # byte-identical .ndp
    manifest, wasm = read_package(plugin_package)
    assert manifest["permissions"]["http"]["requiredHosts"] == []  # filled at install
    assert set(manifest["config"]["schema"]["properties"]) == {
        "sonicbus_url", "token", "models", "timeout_ms", "diversity", "max_per_artist"
    }  # fmt: skip
    for export in ("nd_get_sonic_similar_tracks", "nd_find_sonic_path",
                   "nd_get_similar_songs_by_track", "nd_get_similar_songs_by_album",
                   "nd_get_similar_songs_by_artist"):  # fmt: skip
        assert export.encode() in wasm


def test_enabled_through_the_api_both_capabilities_answer(mechanics: Mechanics) -> None:
    server, lib = mechanics.server, mechanics.library
    record = server.plugin()
    if not record.get("enabled"):  # a new plugin is stored disabled
        assert "sonicSimilarity" not in extensions(server)
    server.enable({"sonicbus_url": mechanics.stand_in.url, "token": TOKEN, "timeout_ms": 3000})
    assert server.plugin()["enabled"] is True
    # SonicSimilarity detected: the extension is advertised and its endpoint answers.
    assert "sonicSimilarity" in extensions(server)
    answer_with(mechanics, ["Song 1-0", "Song 2-1"])
    sonic = sonic_matches(server.subsonic("getSonicSimilarTracks", id=lib.songs["Song 0-0"]))
    assert [m["entry"]["id"] for m in sonic] == [lib.songs["Song 1-0"], lib.songs["Song 2-1"]]
    assert [m["similarity"] for m in sonic] == [0.9, 0.8]
    # MetadataAgent detected (and listed in Agents): Instant Mix asks the plugin.
    mix = songs_of(server.subsonic("getSimilarSongs2", id=lib.songs["Song 0-0"], count=5))
    assert [s["id"] for s in mix] == [lib.songs["Song 1-0"], lib.songs["Song 2-1"]]


def test_what_the_plugin_sends_to_sonicbus(mechanics: Mechanics) -> None:
    server, lib, seen = mechanics.server, mechanics.library, mechanics.stand_in.seen
    server.enable({
        "sonicbus_url": mechanics.stand_in.url + "/", "token": TOKEN, "timeout_ms": 3000,
        "models": "musicnn, muq", "diversity": 0.3, "max_per_artist": 2,
    })  # fmt: skip
    answer_with(mechanics, ["Song 1-1"])
    seed = lib.songs["Song 0-1"]
    calls = [
        ("getSimilarSongs2", {"id": seed, "count": 7}),
        ("getSimilarSongs2", {"id": lib.albums["Album 1"], "count": 8}),
        ("getSimilarSongs2", {"id": lib.artists["Artist 2"], "count": 9}),
        ("getSonicSimilarTracks", {"id": seed, "count": 4}),
        ("findSonicPath", {"startSongId": seed, "endSongId": lib.songs["Song 2-0"], "count": 5}),
    ]
    before = len(seen)
    for endpoint, params in calls:
        server.subsonic(endpoint, **params)
    sent = seen[before:]
    assert [e.path.rsplit("/", 1)[-1] for e in sent] == [
        "get_similar_songs_by_track", "get_similar_songs_by_album",
        "get_similar_songs_by_artist", "get_sonic_similar_tracks", "find_sonic_path",
    ]  # fmt: skip
    assert {e.path.rsplit("/", 1)[0] for e in sent} == {"/navidrome/v1/plugin"}
    assert {e.headers.get("authorization") for e in sent} == {f"Bearer {TOKEN}"}
    assert {e.headers.get("content-type") for e in sent} == {"application/json"}
    # The settings travel as headers, as Navidrome gives them; sonicbus checks them.
    for e in sent:
        assert e.headers["x-sonicbus-models"] == "musicnn, muq"
        assert e.headers["x-sonicbus-diversity"] == "0.3"
        assert e.headers["x-sonicbus-max-per-artist"] == "2"
        assert e.headers["x-sonicbus-timeout-ms"] == "3000"
    # The bodies are Navidrome's requests, unchanged.
    track, album, artist, sonic, path = (e.body for e in sent)
    assert {k: track[k] for k in ("id", "name", "artist", "count")} == {
        "id": seed, "name": "Song 0-1", "artist": "Artist 0", "count": 7
    }  # fmt: skip
    assert (album["id"], album["name"], album["artist"], album["count"]) == (
        lib.albums["Album 1"], "Album 1", "Artist 1", 8
    )  # fmt: skip
    assert (artist["id"], artist["name"]) == (lib.artists["Artist 2"], "Artist 2")
    assert artist["count"] == 9
    # The sonic endpoints get Navidrome's full SongRef (album, artists, duration).
    assert sonic["song"]["id"] == seed and sonic["song"]["album"] == "Album 0"
    assert sonic["song"]["durationMs"] == 2000 and sonic["song"]["artists"][0]["name"] == "Artist 0"
    assert sonic["count"] == 4
    assert (path["startSong"]["id"], path["endSong"]["id"], path["count"]) == (
        seed, lib.songs["Song 2-0"], 5
    )  # fmt: skip

    server.enable({"sonicbus_url": mechanics.stand_in.url, "timeout_ms": 3000})  # no token
    server.subsonic("getSonicSimilarTracks", id=seed, count=3)
    assert "authorization" not in seen[-1].headers
    assert not {"x-sonicbus-models", "x-sonicbus-diversity"} & set(seen[-1].headers)
    assert set(seen[-1].body) == {"song", "count"}


def test_no_answer_is_cached(mechanics: Mechanics) -> None:
    server, lib = mechanics.server, mechanics.library
    server.enable({"sonicbus_url": mechanics.stand_in.url, "token": TOKEN, "timeout_ms": 3000})
    seed = lib.songs["Song 0-0"]
    for titles in (["Song 1-0"], ["Song 2-0", "Song 2-1"], ["Song 1-1"]):
        answer_with(mechanics, titles)
        mix = songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5))
        assert [s["id"] for s in mix] == [lib.songs[t] for t in titles]
        sonic = sonic_matches(server.subsonic("getSonicSimilarTracks", id=seed, count=5))
        assert [m["entry"]["id"] for m in sonic] == [lib.songs[t] for t in titles]


def test_a_slow_or_refusing_sonicbus_ends_at_the_timeout_with_one_log_line(
    mechanics: Mechanics,
) -> None:
    server, lib, stand_in = mechanics.server, mechanics.library, mechanics.stand_in
    server.enable({"sonicbus_url": stand_in.url, "token": TOKEN, "timeout_ms": 1500})
    seed = lib.songs["Song 0-0"]
    answer_with(mechanics, ["Song 1-0"])
    stand_in.delay_s = 6.0
    try:
        since = len(server.log_lines())
        start = time.monotonic()
        mix = songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5))
        took = time.monotonic() - start
        assert mix == []  # only the plugin is an agent here: nothing to fall back to
        assert 1.4 <= took <= 2.5, took  # the configured 1.5 s, not the stand-in's 6 s
        [line] = plugin_lines(server, since)
        assert "level=warning" in line and "within timeout_ms=1500" in line, line

        since = len(server.log_lines())
        start = time.monotonic()
        with pytest.raises(NavidromeError):  # no provider answer: Navidrome says so
            server.subsonic("getSonicSimilarTracks", id=seed, count=5)
        assert time.monotonic() - start <= 2.5
        assert len(plugin_lines(server, since)) == 1
    finally:
        stand_in.delay_s = 0.0

    # A refusal (a wrong token): at once, with what sonicbus said and a hint.
    answer_with(mechanics, ["Song 1-0"], status=401)
    since = len(server.log_lines())
    assert songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5)) == []
    [line] = plugin_lines(server, since)
    assert "answered HTTP 401" in line and "token" in line, line
    answer_with(mechanics, ["Song 1-0"])


def test_sonicbus_host_missing_from_the_manifest_is_one_clear_line(
    plugin_navidrome_factory: Callable[..., PluginNavidrome],
    mechanics: Mechanics,
    tmp_path: Path,
) -> None:
    # A package installed for another host (a prebuilt one, say): Navidrome refuses the call.
    server = plugin_navidrome_factory(tmp_path / "music", hosts=["sonicbus.example.org"])
    server.enable({"sonicbus_url": mechanics.stand_in.url, "timeout_ms": 2000})
    write_songs(server.music, small_library(1, 2, 2.0))
    server.rescan()
    seed = Library.read(server).songs["Song 0-0"]
    since = len(server.log_lines())
    assert songs_of(server.subsonic("getSimilarSongs2", id=seed, count=5)) == []
    [line] = plugin_lines(server, since)
    assert "not allowed" in line and "requiredHosts" in line, line
