"""`sonicbus export` and `import`, and the dashboard's download, on Milvus Lite and the server.

The operator's stories: a backup of a model's collection, restored into a fresh
collection, holds the very same vectors and metadata; a file moved from Milvus
Lite to a Milvus server goes through the command line; the running service
hands out the same file while it holds Milvus Lite; a path that cannot be
written, or a file for another model or dimension, is refused with a clear
message and nothing half-written.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.config import HttpSettings, MilvusSettings
from pipeline.errors import NotFound
from pipeline.http.app import create_app
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.export import (
    ExportMismatch,
    UnreadableExport,
    UnwritableExport,
    export_collection,
    import_export,
    read_header,
)
from pipeline.store import StoredTrack, VectorRow, VectorStore
from tests.fixtures.cli import sonicbus
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(120)
DIM = 24
ROWS = 1200  # more than one page of the query iterator at batch_rows=500
TOKEN = "reader-token"


def library(count: int = ROWS, dim: int = DIM, seed: int = 7) -> list[VectorRow]:
    """Tracks as the embedder stores them: tags, path and MusicBrainz ids in `extra`."""
    rng = np.random.default_rng(seed)
    return [
        VectorRow(
            track_id=f"nd-{i:05d}",
            vector=rng.normal(size=dim),
            artist=f"Artist {i % 13}",
            title="" if i % 100 == 0 else f"Chanson n°{i} – «live»",
            album=f"Album {i % 31}",
            duration=float(rng.uniform(30, 600)),
            fingerprint=f"{i}:{i * 7}:abc{i}",
            model_version="musicnn-msd-1",
            embedded_at=1_700_000_000 + i,
            extra={
                "path": f"Artist {i % 13}/Album {i % 31}/{i:02d} track.flac",
                "tags": [round(float(x), 5) for x in rng.random(50)],
                "patches": int(rng.integers(1, 90)),
                "mbz_recording_id": f"mbid-{i}",
            },
        )
        for i in range(count)
    ]


def seeded(store: VectorStore, model: str = "musicnn", rows: list[VectorRow] | None = None) -> str:
    collection = store.active_collection(model)
    store.ensure_collection(collection, DIM)
    store.upsert(collection, rows or library(), flush=True)
    return collection


def everything(store: VectorStore, collection: str) -> list[StoredTrack]:
    tracks = [t for page in store.iterate(collection, with_vectors=True) for t in page]
    return sorted(tracks, key=lambda t: t.track_id)


def assert_same_rows(got: list[StoredTrack], want: list[StoredTrack]) -> None:
    assert [t.track_id for t in got] == [t.track_id for t in want]
    assert np.array_equal(np.stack([t.vector for t in got]), np.stack([t.vector for t in want]))
    metadata = [{**dataclasses.asdict(t), "vector": None} for t in got]
    assert metadata == [{**dataclasses.asdict(t), "vector": None} for t in want]


def arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def cli_env_of(home: Path, uri: str, prefix: str = "sonicbus_") -> dict[str, str]:
    return {"SONICBUS_HOME": str(home), "SONICBUS_MILVUS__URI": uri,
            "SONICBUS_MILVUS__COLLECTION_PREFIX": prefix}  # fmt: skip


def test_export_then_import_into_a_fresh_collection_gives_identical_rows(
    lite_store: VectorStore, tmp_path: Path
) -> None:
    """On Milvus Lite; the last test does the same through the server (both directions)."""
    store = lite_store
    source = seeded(store)
    backup = tmp_path / "musicnn.npz"
    seen: list[tuple[int, int]] = []
    summary = export_collection(
        store, "musicnn", backup, on_progress=lambda *p: seen.append(p), batch_rows=500
    )
    assert (summary.rows, summary.dim, summary.collection) == (ROWS, DIM, source)
    assert seen[-1] == (ROWS, ROWS) and len(seen) >= 3  # streamed in pages
    assert leftovers(tmp_path) == []

    # The file alone is enough for analysis: numpy reads it, no pickles.
    data = arrays(backup)
    header = json.loads(str(data["header"]))
    assert (header["model"], header["dim"], header["collection"], header["rows"]) == (
        "musicnn", DIM, source, ROWS,
    )  # fmt: skip
    assert data["vectors"].shape == (ROWS, DIM) and data["vectors"].dtype == np.float32
    assert data["title"][1] == "Chanson n°1 – «live»" and data["title"][0] == ""
    assert data["path"][1] == "Artist 1/Album 1/01 track.flac"
    assert len(json.loads(str(data["extra"][1]))["tags"]) == 50

    fresh = store.collection_name("musicnn_restored")
    restored = import_export(store, backup, model="musicnn", collection=fresh, batch_rows=500)
    assert (restored.rows, restored.collection) == (ROWS, fresh)
    original = everything(store, source)
    assert np.array_equal(data["vectors"], np.stack([t.vector for t in original]))
    assert_same_rows(everything(store, fresh), original)

    # Importing the same file again upserts by id: still the same rows, no duplicates.
    import_export(store, backup, collection=fresh)
    assert store.count(fresh) == ROWS


def test_a_bad_target_path_is_refused_and_leaves_no_file(
    lite_store: VectorStore, tmp_path: Path
) -> None:
    seeded(lite_store, rows=library(50))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for target, why in [
        (tmp_path / "missing" / "m.npz", "no folder"),
        (a_file / "m.npz", "no folder"),
        (tmp_path, "it is a folder"),
        (Path("/proc/sonicbus.npz"), "cannot write the export to /proc/sonicbus.npz"),
    ]:
        with pytest.raises(UnwritableExport, match=why):
            export_collection(lite_store, "musicnn", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["milvus.db", "notes.txt"]
    with pytest.raises(NotFound, match="nothing to export: model muq has no collection"):
        export_collection(lite_store, "muq", tmp_path / "muq.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["milvus.db", "notes.txt"]


def test_a_file_of_another_model_or_dimension_is_refused_and_nothing_is_written(
    lite_store: VectorStore, tmp_path: Path
) -> None:
    seeded(lite_store, rows=library(40))
    backup = tmp_path / "musicnn.npz"
    export_collection(lite_store, "musicnn", backup)

    with pytest.raises(ExportMismatch, match="holds musicnn vectors, not muq"):
        import_export(lite_store, backup, model="muq")
    assert not lite_store.has_collection(lite_store.collection_name("muq"))

    narrow = lite_store.collection_name("narrow")
    lite_store.ensure_collection(narrow, 8)
    lite_store.upsert(narrow, [VectorRow("kept", np.ones(8), title="kept")])
    with pytest.raises(ExportMismatch, match=f"collection {narrow} holds 8-d vectors, the file 24"):
        import_export(lite_store, backup, collection=narrow)
    assert lite_store.count(narrow) == 1

    # A damaged file: one vector NaN. Checked before the first row is written.
    data = arrays(backup)
    data["vectors"][17, 3] = np.nan
    broken = tmp_path / "broken.npz"
    np.savez(broken, **data)
    fresh = lite_store.collection_name("fresh")
    with pytest.raises(UnreadableExport, match="the vector of nd-00017 is not finite"):
        import_export(lite_store, broken, collection=fresh)
    assert not lite_store.has_collection(fresh)
    (tmp_path / "plain.npz").write_bytes(b"not a zip")
    with pytest.raises(UnreadableExport, match="is not a sonicbus export"):
        read_header(tmp_path / "plain.npz")


async def test_a_backup_moves_from_milvus_lite_to_a_server_and_downloads_the_same(
    lite_store: VectorStore, server_store: VectorStore, tmp_path: Path
) -> None:
    source = seeded(lite_store, rows=library(300))
    settings = base_settings(home=tmp_path)
    held = cli_env_of(tmp_path, lite_store.uri)

    # This process holds the Lite file, as a running `sonicbus up` would.
    done = await sonicbus(settings, "export", "--model", "musicnn", str(tmp_path / "x.npz"), **held)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "is held by another process" in done.stdout
    assert "/api/export/musicnn?format=npz" in done.stdout
    assert not (tmp_path / "x.npz").exists() and leftovers(tmp_path) == []

    # The backup (written here), imported into the server and exported again by the CLI.
    backup = tmp_path / "lite.npz"
    export_collection(lite_store, "musicnn", backup)
    server = cli_env_of(tmp_path, server_store.uri, server_store.settings.collection_prefix)
    done = await sonicbus(settings, "import", str(backup), "--model", "musicnn", **server)
    assert done.returncode == 0, done.stdout + done.stderr
    target = server_store.collection_name("musicnn")
    assert f"imported 300 rows of musicnn ({DIM}-d) into collection {target}" in done.stdout
    again = tmp_path / "server.npz"
    done = await sonicbus(settings, "export", "-m", "musicnn", str(again), **server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"exported 300 rows of musicnn from collection {target}" in done.stdout
    assert_same_rows(everything(server_store, target), everything(lite_store, source))
    first, second = arrays(backup), arrays(again)
    assert np.array_equal(first.pop("vectors"), second.pop("vectors"))
    header = json.loads(str(second.pop("header")))
    assert (header["model"], header["dim"], header["rows"]) == ("musicnn", DIM, 300)
    first.pop("header")
    assert {k: v.tolist() for k, v in first.items()} == {k: v.tolist() for k, v in second.items()}

    # Bad input on the command line: exit code 2 and one line, nothing written.
    done = await sonicbus(settings, "export", "-m", "musicnn", str(tmp_path / "no" / "x.npz"),
                          **server)  # fmt: skip
    assert done.returncode == 2 and "cannot write the export to" in done.stdout
    done = await sonicbus(settings, "import", str(backup), "--model", "muq", **server)
    assert done.returncode == 2 and "holds musicnn vectors, not muq" in done.stdout
    assert not server_store.has_collection(server_store.collection_name("muq"))
    assert leftovers(tmp_path) == []

    # The running service's download (the dashboard's button) is the CLI's file.
    settings = base_settings(
        home=tmp_path / "home",
        http=HttpSettings(client_token=TOKEN),
        milvus=MilvusSettings(uri=server_store.uri,
                              collection_prefix=server_store.settings.collection_prefix),
    )  # fmt: skip
    app = create_app(settings, OpsRuntime(settings, store=server_store))
    transport = httpx.ASGITransport(app=app)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        answer = await client.get("/api/export/musicnn", params={"format": "npz"}, headers=auth)
        assert answer.status_code == 200, answer.text
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith("attachment") and ".npz" in disposition
        assert (await client.get("/api/export/musicnn")).status_code == 401
        assert (await client.get("/api/export/nosuchmodel", headers=auth)).status_code == 404
        assert (await client.get("/api/export/muq", headers=auth)).status_code == 404
        csv = await client.get("/api/export/musicnn", params={"format": "csv"}, headers=auth)
        assert csv.status_code == 422
    assert [p.name for p in settings.home.iterdir() if p.name.startswith(".export")] == []
    downloaded = tmp_path / "download.npz"
    downloaded.write_bytes(answer.content)
    web = arrays(downloaded)
    web_header = json.loads(str(web.pop("header")))
    assert {**web_header, "exported_at": None} == {**header, "exported_at": None}
    # Apart from the header's time, the two files are the same bytes entry by entry.
    with zipfile.ZipFile(downloaded) as a, zipfile.ZipFile(again) as b:
        names = [n for n in a.namelist() if n != "header.npy"]
        assert names == [n for n in b.namelist() if n != "header.npy"]
        assert all(a.read(n) == b.read(n) for n in names)
