"""The clustering job against a real Navidrome: the user's previous automatic playlists are
replaced by the new set (their own playlists untouched), and with Navidrome down the job
fails with a clear error and nothing is half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from pipeline.job_settings import JobsSettings
from pipeline.schemas import TrackMetadata
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics
from tests.fixtures.jobs import fill_store, planted_library, run_job, running_worker
from tests.fixtures.navidrome import NavidromeServer, Song, free_port, write_songs
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(240)


async def test_clustering_replaces_the_automatic_playlists_on_navidrome(
    kafka_broker: str,
    navidrome_server: NavidromeServer,
    navidrome_folder: Path,
    lite_store: VectorStore,
    tmp_path: Path,
) -> None:
    songs = [Song(f"G{g}/song{i}.mp3", TrackMetadata(title=f"song {g}-{i}", artist=f"Band {g}{i}"),
                  seconds=1.0) for g in range(3) for i in range(8)]  # fmt: skip
    write_songs(navidrome_folder, songs)
    navidrome_server.rescan()
    by_path = {str(p.relative_to(navidrome_folder)): i
               for p, i in navidrome_server.ids_by_path(navidrome_folder).items()}  # fmt: skip
    ids = [by_path[s.path] for s in songs]
    library = planted_library(groups=3, per_group=8, ids=ids)
    fill_store(lite_store, library.rows)
    user = navidrome_server.create_user()
    previous = navidrome_server.subsonic("createPlaylist", user, name="Old_Automatic_Set (auto)",
                                         songId=[ids[0]])["playlist"]["id"]  # fmt: skip
    navidrome_server.subsonic("createPlaylist", user, name="My own", songId=[ids[1]])
    base = base_settings(home=tmp_path, jobs=JobsSettings())
    settings = navidrome_server.settings(base, api=True, user=user)
    settings.jobs.clustering.m3u_dir = tmp_path / "playlists"
    await ensure_topics(settings.kafka, settings.topics)
    params = {"runs": 15, "min_playlist_size": 4, "max_clusters": 6, "seed": 1}

    async with running_worker(settings, lite_store):
        final, _ = await run_job(settings, "clustering", params)
    assert final.status == "done", final.message
    names = [p["name"] for p in final.result["playlists"]]
    assert len(names) == 3 and final.result["navidrome"]["deleted"] == 1
    after = navidrome_server.owned_playlists(user)
    assert set(after) == {"My own", *(f"{n} (auto)" for n in names)}
    planted = {library.labels[i] for n in names for i in after[f"{n} (auto)"]}
    assert planted == {0, 1, 2}
    for name in names:  # each playlist is one planted group
        assert len({library.labels[i] for i in after[f"{name} (auto)"]}) == 1
    assert previous not in str(after)

    # Navidrome down while writing: a clear error, nothing replaced anywhere.
    down = settings.model_copy(deep=True)
    down.navidrome.url = f"http://127.0.0.1:{free_port()}"
    down.navidrome.password = SecretStr(navidrome_server.users[user])
    m3u_before = sorted(p.name for p in (tmp_path / "playlists").iterdir())
    async with running_worker(down, lite_store):
        failed, _ = await run_job(down, "clustering", params)
    assert failed.status == "failed"
    assert "the playlists were not written" in failed.message
    assert "Navidrome" in failed.message or "navidrome" in failed.message.lower()
    assert navidrome_server.owned_playlists(user) == after
    assert sorted(p.name for p in (tmp_path / "playlists").iterdir()) == m3u_before
    assert not list(tmp_path.glob(".playlists.new-*"))
