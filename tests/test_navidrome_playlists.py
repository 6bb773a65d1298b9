"""`sonicbus playlist ... --to-navidrome NAME` against a real Navidrome: the playlist is the
configured user's, in the order of the results, and writing it again replaces its songs.

A query service answers from vectors keyed by the ids Navidrome gave the module's files.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.config import QuerySettings, Settings
from pipeline.consumers.query import QueryService
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.cli import sonicbus
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)


@dataclass
class Served:
    settings: Settings
    server: NavidromeServer
    ids: dict[str, str]  # song name -> Navidrome id


@pytest.fixture(scope="module")
async def served(
    kafka_broker: str,
    navidrome_server: NavidromeServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Served]:
    """Eight songs in Navidrome and a query service whose vectors carry their ids."""
    folder = navidrome_server.music / f"t{uuid.uuid4().hex[:10]}"
    songs = [
        Song(f"Band {i}/song{i}.mp3", TrackMetadata(title=f"song{i}", artist=f"Band {i}"))
        for i in range(8)
    ]
    write_songs(folder, songs)
    navidrome_server.rescan()
    ids = {p.stem: i for p, i in navidrome_server.ids_by_path(folder).items()}
    settings = base_settings(query=QuerySettings(workers=2, default_timeout_s=20.0))
    await ensure_topics(settings.kafka, settings.topics)
    store = VectorStore(settings.milvus, str(tmp_path_factory.mktemp("pl") / "milvus.db"))
    collection = store.collection_name("musicnn")
    store.ensure_collection(collection, dim=8)
    # song0..song7 along an arc: the neighbours of song0 are song1, song2, ... in that order.
    rows = [
        VectorRow(ids[f"song{i}"], np.array([np.cos(i * 0.3), np.sin(i * 0.3), 0, 0, 0, 0, 0, 0]),
                  artist=f"Band {i}", title=f"song{i}")
        for i in range(8)
    ]  # fmt: skip
    store.upsert(collection, rows)
    service = QueryService(settings, store)
    await service.start()
    await asyncio.wait_for(service.ready.wait(), 60)
    await asyncio.wait_for(service.following.wait(), 30)
    try:
        yield Served(settings, navidrome_server, ids)
    finally:
        await service.stop()
        store.close()


def playlists(server: NavidromeServer, user: str, name: str) -> list[dict]:
    body = server.subsonic("getPlaylists", user)
    found = (body.get("playlists") or {}).get("playlist") or []
    return [p for p in found if p["name"] == name]


def songs_of(server: NavidromeServer, user: str, playlist_id: str) -> list[str]:
    body = server.subsonic("getPlaylist", user, id=playlist_id)
    return [entry["id"] for entry in body["playlist"].get("entry") or []]


async def test_playlist_to_navidrome_creates_then_replaces_the_users_playlist(
    served: Served,
) -> None:
    server, ids = served.server, served.ids
    user = server.create_user()
    name = f"Like song0 {uuid.uuid4().hex[:6]}"
    # Someone else's playlist of the same name is never touched.
    server.subsonic("createPlaylist", name=name, songId=[ids["song7"]])
    env = {
        "SONICBUS_NAVIDROME__URL": server.url,
        "SONICBUS_NAVIDROME__USER": user,
        "SONICBUS_NAVIDROME__PASSWORD": server.users[user],
    }
    asked = await sonicbus(served.settings, "ask", "similar", ids["song0"], "-n", "4", "--json")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    expected = [t["track_id"] for t in json.loads(asked.stdout)["tracks"]]
    assert expected == [ids[f"song{i}"] for i in range(1, 5)]

    first = await sonicbus(served.settings, "playlist", "similar", ids["song0"], "-n", "4",
                           "--to-navidrome", name, **env)  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"created Navidrome playlist '{name}'" in first.stdout
    [mine] = playlists(server, user, name)
    assert mine["owner"] == user and mine["songCount"] == 4
    assert songs_of(server, user, mine["id"]) == expected  # in the order of the results

    again = await sonicbus(served.settings, "playlist", "similar", ids["song7"], "-n", "2",
                           "--to-navidrome", name, **env)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"replaced the songs of Navidrome playlist '{name}' ({mine['id']}): 2" in again.stdout
    [still] = playlists(server, user, name)  # no second playlist of that name
    assert still["id"] == mine["id"]
    assert songs_of(server, user, still["id"]) == [ids["song6"], ids["song5"]]

    # The admin's own playlist of that name kept its one song.
    [theirs] = [p for p in playlists(server, server.user, name) if p["owner"] == server.user]
    assert songs_of(server, server.user, theirs["id"]) == [ids["song7"]]
