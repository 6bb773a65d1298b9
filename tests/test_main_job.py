"""The README's first command, as a user runs it: `sonicbus up MUSIC_DIR`.

A folder of generated songs goes in; the watcher publishes them, embed-musicnn
embeds them, and Milvus holds one 1200-d row with 50 + 50 tags per track, titled by
file name (the songs have no tags). Deleting a file removes its row; Ctrl+C
stops everything cleanly: a local broker `up` started stops with it, one that
ran before is left running, and `up` says so. Milvus here is the real
standalone server, so the test can look inside while the job runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx

from pipeline import infra
from pipeline.client import QueryClient
from pipeline.config import MilvusSettings, Settings
from pipeline.store import VectorStore
from tests.fixtures.audio import write_song
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.navidrome import free_port, free_port_pair
from tests.fixtures.services import TEST_HOME, wait_for


async def test_up_embeds_a_folder_and_follows_deletions(
    settings: Settings, milvus_server: str, tmp_path: Path
) -> None:
    music = tmp_path / "music"
    (music / "Artist" / "Album").mkdir(parents=True)
    songs = [music / "Artist" / "Album" / f"{i:02d} Song.flac" for i in range(4)]
    for i, song in enumerate(songs):
        write_song(song, seconds=5 + i, seed=200 + i)
    prefix = f"up_{settings.topics.prefix.strip('.')}_"
    http_port = free_port(39600)  # not 9002: a user's own `sonicbus up` may hold that
    env = cli_env(
        settings,
        160,
        SONICBUS_HOME=str(TEST_HOME),
        SONICBUS_KAFKA__LOCAL_PORT=str(settings.kafka.local_port),
        SONICBUS_MILVUS__URI=milvus_server,
        SONICBUS_MILVUS__COLLECTION_PREFIX=prefix,
        SONICBUS_EMBED__DEVICE="cpu",
        SONICBUS_HTTP__PORT=str(http_port),
    )
    store = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
    collection = store.collection_name("musicnn")

    def rows() -> int:
        return store.count(collection) if store.has_collection(collection) else 0

    job = subprocess.Popen(
        sonicbus_command("up", str(music)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        await wait_for(lambda: rows() == 4, timeout=150)
        # The ids are the watcher's (derived from paths): find the rows by search.
        hits = store.search(collection, [[1.0] * 1200], limit=10, output_fields=("extra",))[0]
        assert len(hits) == 4
        for hit in hits:
            assert len(hit.fields["extra"]["tags"]) == 50
            assert hit.fields["extra"]["path"] in {str(s) for s in songs}
        full = store.get(collection, [h.track_id for h in hits], with_vectors=True)
        assert all(row.vector is not None and row.vector.shape == (1200,) for row in full.values())
        # Untagged songs are titled by their file names.
        assert sorted(row.title for row in full.values()) == [s.stem for s in songs]

        # The main job also answers Navidrome's questions over the bus.
        seed = hits[0].track_id
        async with QueryClient(settings) as client:
            reply = await client.ask(
                {"type": "similar", "request_id": "up-1", "track_id": seed, "limit": 5},
                timeout=60,
            )
        assert reply.ok, reply.error
        assert sorted(t.track_id for t in reply.tracks) == sorted(h.track_id for h in hits[1:])
        # ... and over HTTP, as the Navidrome plugin asks (loopback: no token needed).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as web:
            body = {"song": {"id": seed, "name": ""}, "count": 5}
            answer = (await web.post("/navidrome/v1/similar", json=body, timeout=30)).json()
            # The web player's audio: up's music folder is a root its HTTP service streams from.
            audio = await web.get(f"/api/audio/{seed}", headers={"Range": "bytes=0-99"})
        assert [m["song"]["id"] for m in answer["matches"]] == [t.track_id for t in reply.tracks]
        assert audio.status_code == 206 and len(audio.content) == 100, audio.text[:300]
        assert audio.content == Path(hits[0].fields["extra"]["path"]).read_bytes()[:100]

        # A second terminal while `up` runs: `sonicbus status` shows the collection's rows.
        status = subprocess.run(sonicbus_command("status", "--json"), env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        report = json.loads(status.stdout)
        assert {c["name"]: c["rows"] for c in report["collections"]}[collection] == 4, status

        songs[0].unlink()
        await wait_for(lambda: rows() == 3, timeout=60)
        remaining = store.search(collection, [[1.0] * 1200], limit=10, output_fields=("extra",))[0]
        assert str(songs[0]) not in {h.fields["extra"]["path"] for h in remaining}

        job.send_signal(signal.SIGINT)
        output, _ = job.communicate(timeout=60)
        assert job.returncode == 0, output.decode()[-3000:]
        assert b"stopped cleanly" in output
        text = output.decode()
        assert "musicnn: 3/3 embedded" in text  # the status line's last words, with totals
        # The test broker ran before `up`: it is left running, and `up` says how to stop it.
        assert "was running before `sonicbus up` and is left running" in text
        assert "sonicbus infra down" in text
        assert infra.port_open(settings.kafka.local_port)
    finally:
        if job.poll() is None:
            job.kill()
        store.drop_collection(collection)
        store.close()


async def test_ctrl_c_stops_the_local_broker_up_started(settings: Settings, tmp_path: Path) -> None:
    """A user with no broker running: `up` starts one, and Ctrl+C stops it again."""
    music = tmp_path / "music"
    music.mkdir()
    port = free_port_pair()
    env = cli_env(
        settings,
        160,
        SONICBUS_HOME=str(tmp_path / "home"),  # its own broker data and Milvus Lite file
        SONICBUS_KAFKA__LOCAL_PORT=str(port),
        SONICBUS_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        SONICBUS_EMBED__DEVICE="cpu",
    )
    job = subprocess.Popen(
        sonicbus_command("up", "--no-http", str(music)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert job.stdout is not None
        seen = []
        for line in iter(job.stdout.readline, b""):  # until the embedder has joined
            seen.append(line.decode(errors="replace"))
            if "embedding with musicnn" in seen[-1]:
                break
        assert infra.port_open(port), "".join(seen)[-3000:]
        job.send_signal(signal.SIGINT)
        output, _ = job.communicate(timeout=90)
        text = "".join(seen) + output.decode()
        assert job.returncode == 0, text[-3000:]
        assert f"stopped the local Kafka broker (127.0.0.1:{port})" in text
        assert not infra.port_open(port)
        assert not os.path.exists(tmp_path / "home" / f"kafka-{port}" / "kafka.pid")
    finally:
        if job.poll() is None:
            job.kill()
        if infra.port_open(port):  # never leave a broker behind
            infra.stop_kafka(Settings(home=tmp_path / "home", kafka={"local_port": port}))
