"""The seed modes and the fingerprint, driven by plays, stars and ratings a user made through
a real Navidrome's API (`scrobble`, `star`, `setRating`), read back from its database and
from its Subsonic API.

The vectors are synthetic (one direction per cluster) and keyed by the ids Navidrome gave
the test's files, so every expected answer can be stated exactly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import Settings
from pipeline.recommender.engine import QueryEngine
from pipeline.recommender.library import Library
from pipeline.recommender.seeds import SeedSource
from pipeline.schemas import TrackMetadata
from pipeline.schemas.queries import FingerprintRequest, RecommendRequest
from pipeline.store import VectorRow, VectorStore
from pipeline.wiring import text_support
from tests.fixtures.navidrome import NavidromeServer, Song, write_songs
from tests.fixtures.services import base_settings

DAY = 86400.0
CLUSTERS = {"rock": 4, "jazz": 3, "ambient": 3}


@dataclass
class Listening:
    """The test's files in Navidrome, their ids by name (rock0, jazz1, ...), and a user."""

    server: NavidromeServer
    ids: dict[str, str]
    user: str
    store: VectorStore

    def engine(self, settings: Settings) -> QueryEngine:
        return QueryEngine(
            settings.query,
            Library(self.store, settings.query),
            text_support(settings),
            SeedSource(settings.navidrome, ttl_s=0),
        )

    def names(self, ids: list[str]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id.get(i, i) for i in ids]


@pytest.fixture
def listening(
    navidrome_server: NavidromeServer, navidrome_folder: Path, tmp_path: Path
) -> Iterator[Listening]:
    songs = [
        Song(
            f"{cluster}/{name}.mp3",
            TrackMetadata(title=name, artist=f"{cluster} {i % 2}", album=cluster),
        )
        for cluster, count in CLUSTERS.items()
        for i, name in enumerate(f"{cluster}{n}" for n in range(count))
    ]
    write_songs(navidrome_folder, songs)
    navidrome_server.rescan()
    ids = {p.stem: i for p, i in navidrome_server.ids_by_path(navidrome_folder).items()}
    assert len(ids) == len(songs)

    store = VectorStore(base_settings().milvus, str(tmp_path / "milvus.db"))
    rng = np.random.default_rng(3)
    rows = []
    for axis, cluster in enumerate(CLUSTERS):
        for n in range(CLUSTERS[cluster]):
            vector = np.zeros(16, np.float32)
            vector[axis] = 1.0
            vector += rng.normal(0, 0.05, 16).astype(np.float32)
            name = f"{cluster}{n}"
            row = VectorRow(ids[name], vector, artist=f"{cluster} {n % 2}", title=name)
            rows.append(row)
    collection = store.collection_name("musicnn")
    store.ensure_collection(collection, dim=16)
    store.upsert(collection, rows)

    # The user's listening, through the API as a player reports it.
    user = navidrome_server.create_user()
    server, now = navidrome_server, time.time()
    server.scrobble(user, ids["rock1"], now - 1 * DAY)
    server.scrobble(user, ids["rock2"], now - 3 * DAY)
    server.scrobble(user, ids["rock2"], now - 2 * DAY)
    server.scrobble(user, ids["jazz0"], now - 200 * DAY)
    server.star(user, ids["ambient0"])
    server.set_rating(user, ids["ambient0"], 5)
    server.set_rating(user, ids["rock3"], 1)  # a dislike: never a result
    yield Listening(server, ids, user, store)
    store.close()


def ask(engine: QueryEngine, request: RecommendRequest | FingerprintRequest) -> list[str]:
    reply = engine.answer(request)
    assert reply.ok, reply.error
    return [t.track_id for t in reply.tracks]


@pytest.mark.parametrize("source", ["database", "api"])
def test_plays_stars_and_ratings_made_in_navidrome_drive_the_seed_modes(
    listening: Listening, source: str
) -> None:
    user = listening.user
    settings = listening.server.settings(base_settings(), api=source == "api", user=user)
    engine = listening.engine(settings)

    def seeds_of(mode: str, limit: int = 10) -> tuple[list[str], list[str]]:
        request = RecommendRequest(
            request_id=uuid.uuid4().hex, seed_mode=mode, user_id=user, limit=limit
        )
        reply = engine.answer(request)
        assert reply.ok, reply.error
        seeds = listening.names([t.track_id for t in reply.extra["seeds"]])
        return seeds, listening.names([t.track_id for t in reply.tracks])

    seeds, results = seeds_of("recent")
    assert seeds == ["rock1", "rock2", "jazz0"]  # by recency of the last play
    assert "rock3" not in results and not {"rock1", "rock2", "jazz0"} & set(results)

    seeds, results = seeds_of("favorites", limit=2)
    assert seeds == ["ambient0"]  # starred and rated 5
    assert set(results) == {"ambient1", "ambient2"}

    seeds, results = seeds_of("all", limit=20)
    assert set(seeds) == {"rock1", "rock2", "jazz0", "ambient0"}
    assert "rock3" not in results

    seeds, results = seeds_of("discovery", limit=20)
    assert set(seeds) == {"rock1", "rock2", "jazz0", "ambient0"}
    assert not {"rock1", "rock2", "jazz0", "rock3"} & set(results)  # played or disliked

    reply = engine.answer(FingerprintRequest(request_id="fp", user_id=user, limit=3))
    assert reply.ok, reply.error
    # play count x recency: rock2 (2 plays, 2 days) > rock1 (1 play, 1 day) > jazz0 (old).
    assert listening.names([t.track_id for t in reply.extra["seeds"]]) == [
        "rock2",
        "rock1",
        "jazz0",
    ]
    nearest = ask(engine, FingerprintRequest(request_id="fp2", user_id=user, limit=2))
    assert set(listening.names(nearest)) <= {"rock0", "rock3"}  # the unplayed rock songs


def test_a_user_without_plays_gets_a_clear_answer(listening: Listening) -> None:
    stranger = listening.server.create_user()
    settings = listening.server.settings(base_settings())
    reply = listening.engine(settings).answer(
        RecommendRequest(request_id="s", seed_mode="recent", user_id=stranger)
    )
    assert not reply.ok and reply.error is not None
    assert reply.error.code == "not_found" and stranger in reply.error.message
