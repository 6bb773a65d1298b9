"""A small music library with known geometry, for the query service's tests.

Vectors are built around orthogonal directions, so every expected answer can
be stated exactly: a rock cluster (three artists), a metal cluster leaning
towards rock, jazz, ambient, an exact duplicate of one rock song, and a
great-circle arc (15 degrees apart) for paths. MusiCNN-style tag probabilities go with each
cluster (rock/guitar, heavy metal, jazz/instrumental, ambient/chillout), so
zero-shot text search has something real to find. Three more "models" hold
overlapping subsets of a second set of tracks, for merging.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from models.musicnn_net import MSD_TAGS
from pipeline.client import QueryClient
from pipeline.config import NavidromeSettings, QuerySettings, Settings
from pipeline.consumers.query import QueryService
from pipeline.store import VectorRow, VectorStore
from pipeline.topics import ensure_topics
from tests.conftest import base_settings

DIM = 16
TAG = {name: i for i, name in enumerate(MSD_TAGS)}


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def axis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, np.float32)
    v[i] = 1.0
    return v


@dataclass
class Track:
    track_id: str
    artist: str
    title: str
    vector: np.ndarray
    tags: list[float] | None = None
    cluster: str = ""


@dataclass
class Library:
    tracks: dict[str, Track] = field(default_factory=dict)

    def add(self, track: Track) -> None:
        self.tracks[track.track_id] = track

    def cluster(self, name: str) -> list[str]:
        return [t.track_id for t in self.tracks.values() if t.cluster == name]

    def vector(self, track_id: str) -> np.ndarray:
        return unit(self.tracks[track_id].vector)

    def rows(self) -> list[VectorRow]:
        return [
            VectorRow(
                track_id=t.track_id,
                vector=t.vector,
                artist=t.artist,
                title=t.title,
                album=f"{t.cluster} album",
                extra={"tags": t.tags, "path": f"/music/{t.track_id}.flac"} if t.tags else {},
            )
            for t in self.tracks.values()
        ]


def tags_for(rng: np.random.Generator, high: dict[str, float]) -> list[float]:
    tags = rng.uniform(0.02, 0.12, size=len(MSD_TAGS))
    for name, value in high.items():
        tags[TAG[name]] = value + rng.uniform(-0.05, 0.05)
    return [round(float(x), 4) for x in tags]


ROCK_TAGS = {"rock": 0.85, "guitar": 0.8, "classic rock": 0.6, "alternative rock": 0.5}
METAL_TAGS = {"heavy metal": 0.9, "metal": 0.85, "hard rock": 0.6, "rock": 0.5}
JAZZ_TAGS = {"jazz": 0.9, "instrumental": 0.7, "Mellow": 0.5, "easy listening": 0.4}
AMBIENT_TAGS = {"ambient": 0.9, "chillout": 0.8, "instrumental": 0.75, "chill": 0.6}


def musicnn_library(seed: int = 7) -> Library:
    """The `musicnn` collection (dim 16, with tags)."""
    rng = np.random.default_rng(seed)
    lib = Library()

    def near(center: np.ndarray, spread: float = 0.1) -> np.ndarray:
        return unit(unit(center) + spread * rng.standard_normal(DIM))

    rock, jazz, ambient = axis(0), axis(1), axis(3)
    metal = unit(0.75 * axis(0) + 0.66 * axis(2))
    for i in range(12):
        artist = ["The Amps", "Riff Union", "Stone Lane"][i % 3]
        lib.add(
            Track(
                f"rock{i}", artist, f"Rock Song {i}", near(rock), tags_for(rng, ROCK_TAGS), "rock"
            )
        )
    for i in range(6):
        lib.add(
            Track(
                f"metal{i}",
                f"Iron {i % 2}",
                f"Metal Song {i}",
                near(metal),
                tags_for(rng, METAL_TAGS),
                "metal",
            )
        )
    for i in range(8):
        lib.add(
            Track(
                f"jazz{i}",
                f"Quartet {i % 4}",
                f"Jazz Tune {i}",
                near(jazz),
                tags_for(rng, JAZZ_TAGS),
                "jazz",
            )
        )
    for i in range(8):
        lib.add(
            Track(
                f"ambient{i}",
                f"Drone {i % 4}",
                f"Ambient Piece {i}",
                near(ambient),
                tags_for(rng, AMBIENT_TAGS),
                "ambient",
            )
        )
    # The same recording as rock0, imported twice (a copy in another folder).
    copy = lib.tracks["rock0"]
    twin = unit(copy.vector + 0.004 * rng.standard_normal(DIM))
    title = copy.title + " (Remastered 2011)"
    lib.add(Track("rock0-copy", copy.artist, title, twin, copy.tags, "rock-copy"))
    # 150 degrees of a great circle from arc0 to arc10 (axes 4 and 5), for paths.
    for k in range(11):
        angle = np.radians(15 * k)
        vector = np.cos(angle) * axis(4) + np.sin(angle) * axis(5)
        lib.add(
            Track(f"arc{k}", f"Walker {k}", f"Step {k}", unit(vector), tags_for(rng, {}), "arc")
        )
    return lib


def merge_libraries(seed: int = 11) -> dict[str, Library]:
    """Three models over overlapping tracks: a* in all, b* in mert+music2latent, c1 only
    in mert, d1 only in clap. Every track is close to the seed s0 in every model it is in."""
    rng = np.random.default_rng(seed)
    members = {
        "mert": ["s0", "a1", "a2", "a3", "b1", "b2", "c1"],
        "music2latent": ["s0", "a1", "a2", "a3", "b1", "b2"],
        "clap": ["s0", "a1", "a2", "a3", "d1"],
    }
    libraries = {}
    for model, ids in members.items():
        lib = Library()
        center = axis(0, 8)
        for rank, track_id in enumerate(ids):
            spread = 0.0 if track_id == "s0" else 0.1 + 0.05 * rank
            vector = unit(center + spread * rng.standard_normal(8))
            lib.add(Track(track_id, f"Artist {track_id}", f"Title {track_id}", vector))
        libraries[model] = lib
    return libraries


def fill(store: VectorStore, model: str, lib: Library) -> None:
    name = store.collection_name(model)
    store.ensure_collection(name, dim=len(next(iter(lib.tracks.values())).vector))
    store.upsert(name, lib.rows())


NOW = datetime.now(UTC)


def write_navidrome_db(path: Path) -> Path:
    """A Navidrome database where alice played rock lately, jazz long ago, starred ambient0,
    and rated metal0 one star."""
    from tests.test_ingest_navidrome import SCHEMA

    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    stamp = "2024-01-01 00:00:00"
    db.execute(
        "INSERT INTO user (id, user_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
        ("u1", "alice", stamp, stamp),
    )
    db.execute("INSERT INTO library (id, name, path) VALUES (1, 'Music', '/music')")
    lib = musicnn_library()
    for track in lib.tracks.values():
        db.execute(
            "INSERT INTO media_file (id, path, title, artist, library_id) VALUES (?, ?, ?, ?, 1)",
            (track.track_id, f"{track.track_id}.flac", track.title, track.artist),
        )

    def when(days: float) -> str:
        return (NOW - timedelta(days=days)).strftime("%Y-%m-%d %H:%M:%S")

    rows = [
        ("rock1", 3, when(1), 0, False),
        ("rock2", 20, when(2), 0, False),
        ("jazz0", 50, when(200), 0, False),
        ("ambient0", 0, None, 5, True),
        ("metal0", 1, when(30), 1, False),
    ]
    for item, plays, played, rating, starred in rows:
        db.execute(
            "INSERT INTO annotation (user_id, item_id, item_type, play_count, play_date, rating, "
            "starred) VALUES ('u1', ?, 'media_file', ?, ?, ?, ?)",
            (item, plays, played, rating, starred),
        )
    db.commit()
    db.close()
    return path


@dataclass
class Running:
    """A query service on the real broker, and a client of it."""

    settings: Settings
    store: VectorStore
    service: QueryService
    client: QueryClient
    library: Library


@pytest.fixture(scope="module")
async def running(
    kafka_broker: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    """Milvus Lite filled with the synthetic library, a query service and a client, once per
    module (starting them is most of a test's cost)."""
    folder = tmp_path_factory.mktemp("query")
    settings = base_settings(
        navidrome=NavidromeSettings(
            db_path=write_navidrome_db(folder / "navidrome.db"), user="alice"
        ),
        query=QuerySettings(workers=4, default_timeout_s=20.0),
    )
    await ensure_topics(settings.kafka, settings.topics)
    store = VectorStore(settings.milvus, str(folder / "milvus.db"))
    lib = musicnn_library()
    fill(store, "musicnn", lib)
    for model, other in merge_libraries().items():
        fill(store, model, other)
    store.ensure_collection(store.collection_name("empty"), dim=8)
    service = QueryService(settings, store)
    await service.start()
    await asyncio.wait_for(service.ready.wait(), 60)
    await asyncio.wait_for(service.following.wait(), 30)
    client = QueryClient(settings)
    await client.start()
    try:
        yield Running(settings, store, service, client, lib)
    finally:
        await client.stop()
        await service.stop()
        store.close()
