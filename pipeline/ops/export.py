"""Export a model's collection to one file, and import such a file into a collection.

For backups, for moving from Milvus Lite to a Milvus server, and for analysis.

**Why NPZ.** numpy is already a dependency and `numpy.load` opens the file
anywhere (pandas, a notebook, another language's npy reader) with no
pickles (`allow_pickle=False` is enough). Parquet would need pyarrow; it is in
the environment today only as Milvus Lite's own dependency, so relying on it
would mean a large direct dependency for one command.

**The file** is a zip of `.npy` arrays, one row per track, sorted by id:

| array | dtype | what |
|---|---|---|
| `header` | str (0-d) | JSON: format, version, model, dim, collection, rows, exported_at |
| `track_id`, `artist`, `title`, `album` | str [N] | the stored fields |
| `fingerprint`, `model_version` | str [N] | what the embedder skips unchanged tracks by |
| `path` | str [N] | the file's path, copied from `extra` for convenience |
| `duration` | float32 [N] | seconds |
| `embedded_at` | int64 [N] | Unix time of the embedding |
| `year`, `genre` | int32, str [N] | from the tags (0, "": unknown); absent in older files |
| `extra` | str [N] | each row's `extra` as JSON: tags, path, MusicBrainz ids, `analysis` |
| `vectors` | float32 [N, dim] | the stored vectors, unit length, bit for bit |

The typed tempo, key, loudness and energy fields are rebuilt from `extra["analysis"]` on
import.

**Nothing half-written.** An export streams the collection in pages (Milvus'
query iterator), spools the vectors to a scratch file next to the target,
writes the archive to a temporary name next to it and renames it at the end;
on any failure both scratch files go. An import checks the whole file (header,
the model, every array's length, every vector finite, the dimension of an
existing collection) before it writes its first row.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from pipeline.errors import InvalidInput, NotFound
from pipeline.ops.replay import check_model
from pipeline.store import StoredTrack, VectorRow, VectorStore, analysis_fields
from pipeline.store.vectors import MAX_VECTOR_DIM

FORMAT = "sonicbus-export"
BATCH_ROWS = 1000
TEXT_COLUMNS = ("track_id", "artist", "title", "album", "path", "fingerprint", "model_version")
# Columns added after the first exports: written always, read when there.
LATER_TEXT = ("genre",)
LATER_COLUMNS = (*LATER_TEXT, "year")
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# Zip entries carry a fixed time, so two exports of the same rows differ only in `header`.
ENTRY_TIME = (1980, 1, 1, 0, 0, 0)

Progress = Callable[[int, int], None]  # (rows done, rows in all)


class UnwritableExport(InvalidInput):
    """The export's target path cannot be written (missing folder, no permission, a folder)."""


class UnreadableExport(InvalidInput):
    """The file is not a sonicbus export (or it is damaged)."""


class ExportMismatch(InvalidInput):
    """The file is for another model, or its dimension differs from the target collection's."""


class NothingToExport(NotFound):
    """The model (or the named collection) has no collection to export."""


class ExportHeader(BaseModel):
    """The `header` array's JSON: what the file holds."""

    format: Literal["sonicbus-export"] = FORMAT
    version: Literal[1] = 1
    model: str
    dim: int = Field(ge=1, le=MAX_VECTOR_DIM)
    collection: str = Field(description="The collection it was exported from.")
    rows: int = Field(ge=0)
    exported_at: datetime


class TransferSummary(BaseModel):
    """What an export wrote or an import loaded."""

    model: str
    collection: str
    dim: int
    rows: int
    path: str
    bytes: int = 0


# -- export ---------------------------------------------------------------------------


@dataclass
class _Columns:
    """The metadata of the rows read so far (the vectors go to the spool file)."""

    text: dict[str, list[str]] = field(
        default_factory=lambda: {n: [] for n in (*TEXT_COLUMNS, *LATER_TEXT)}
    )
    extra: list[str] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    embedded_at: list[int] = field(default_factory=list)
    year: list[int] = field(default_factory=list)

    def add(self, track: StoredTrack) -> None:
        values = {n: getattr(track, n, "") for n in (*TEXT_COLUMNS, *LATER_TEXT) if n != "path"}
        values["path"] = str(track.extra.get("path") or "")
        for name, value in values.items():
            self.text[name].append(str(value))
        self.extra.append(json.dumps(track.extra, ensure_ascii=False))
        self.duration.append(track.duration)
        self.embedded_at.append(track.embedded_at)
        self.year.append(track.year)


def export_collection(
    store: VectorStore,
    model: str,
    target: Path,
    collection: str | None = None,
    on_progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
) -> TransferSummary:
    """Write every row of the model's active collection (or `collection`) to `target`.

    Blocking. Raises UnwritableExport before reading anything when `target`
    cannot be written, NothingToExport when there is no such collection.
    """
    check_model(model)
    target = Path(target)
    if target.is_dir():
        raise UnwritableExport(f"cannot write the export to {target}: it is a folder")
    part = _scratch_file(target, ".part")
    spool = part.with_suffix(".vectors")
    try:
        source = collection or store.active_collection(model)
        if not store.has_collection(source):
            raise NothingToExport(
                f"nothing to export: model {model} has no collection {source} "
                "(nothing embedded yet?)"
            )
        dim = store.dimension(source)
        total = store.count(source)
        columns = _Columns()
        with spool.open("wb") as vectors_out:
            for page in store.iterate(source, with_vectors=True, batch_size=batch_rows):
                for track in page:
                    columns.add(track)
                    vectors_out.write(np.asarray(track.vector, dtype="<f4").tobytes())
                if on_progress:
                    on_progress(len(columns.extra), max(total, len(columns.extra)))
        header = ExportHeader(model=model, dim=dim, collection=source,
                              rows=len(columns.extra), exported_at=datetime.now(UTC))  # fmt: skip
        _write_archive(part, header, columns, spool, batch_rows)
        os.replace(part, target)
    except OSError as exc:
        raise UnwritableExport(f"cannot write the export to {target}: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
        spool.unlink(missing_ok=True)
    return TransferSummary(model=model, collection=source, dim=dim, rows=header.rows,
                           path=str(target), bytes=target.stat().st_size)  # fmt: skip


def _scratch_file(target: Path, suffix: str) -> Path:
    """An empty file of ours beside `target` (same filesystem, so the rename is atomic)."""
    if not target.parent.is_dir():
        raise UnwritableExport(f"cannot write the export to {target}: no folder {target.parent}")
    try:
        handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise UnwritableExport(f"cannot write the export to {target}: {why}") from exc
    os.close(handle)
    return Path(name)


def _write_archive(
    part: Path, header: ExportHeader, columns: _Columns, spool: Path, batch_rows: int
) -> None:
    """The zip of arrays, rows sorted by track id; the vectors copied from the spool in chunks."""
    ids = columns.text["track_id"]
    order = np.array(sorted(range(len(ids)), key=ids.__getitem__), dtype=np.int64)
    with zipfile.ZipFile(part, "w", allowZip64=True) as archive:
        _put(archive, "header", np.array(header.model_dump_json()))
        for name, values in columns.text.items():
            _put(archive, name, np.array(values, dtype=str)[order])
        _put(archive, "duration", np.array(columns.duration, dtype="<f4")[order])
        _put(archive, "embedded_at", np.array(columns.embedded_at, dtype="<i8")[order])
        _put(archive, "year", np.array(columns.year, dtype="<i4")[order])
        _put(archive, "extra", np.array(columns.extra, dtype=str)[order])
        shape = (header.rows, header.dim)
        with _entry(archive, "vectors", compress=False) as out:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "<f4", "fortran_order": False, "shape": shape}
            )
            if header.rows:
                spooled = np.memmap(spool, dtype="<f4", mode="r", shape=shape)
                for start in range(0, header.rows, batch_rows):
                    chunk = spooled[order[start : start + batch_rows]]
                    out.write(np.ascontiguousarray(chunk).tobytes())
                del spooled


def _entry(archive: zipfile.ZipFile, name: str, compress: bool = True) -> IO[bytes]:
    info = zipfile.ZipInfo(f"{name}.npy", date_time=ENTRY_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    return archive.open(info, "w", force_zip64=True)


def _put(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with _entry(archive, name) as out:
        np.lib.format.write_array(out, array, allow_pickle=False)


# -- import ---------------------------------------------------------------------------


@dataclass
class _Export:
    """An export file opened for reading: its header and metadata, vectors read on demand."""

    path: Path
    archive: zipfile.ZipFile
    header: ExportHeader
    arrays: dict[str, np.ndarray]

    def vector_pages(self, batch_rows: int) -> Iterator[np.ndarray]:
        """The vectors, `batch_rows` at a time, straight from the zip (never all in memory)."""
        rows, dim = self.header.rows, self.header.dim
        with self.archive.open("vectors.npy") as stream:
            version = np.lib.format.read_magic(stream)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)  # fmt: skip
            if read_header is None:
                raise self.unreadable(f"vectors.npy has an unknown npy version {version}")
            shape, fortran, dtype = read_header(stream)
            if shape != (rows, dim) or fortran or dtype.kind != "f":
                raise self.unreadable(
                    f"vectors are {dtype} {list(shape)}, the header says float [{rows}, {dim}]"
                )
            for start in range(0, rows, batch_rows):
                count = min(batch_rows, rows - start)
                raw = stream.read(count * dim * dtype.itemsize)
                if len(raw) != count * dim * dtype.itemsize:
                    raise self.unreadable("vectors.npy ends early")
                yield np.frombuffer(raw, dtype=dtype).reshape(count, dim).astype(np.float32)

    def rows(self, start: int, vectors: np.ndarray) -> list[VectorRow]:
        return [self.row(i, vector) for i, vector in enumerate(vectors, start)]

    def row(self, i: int, vector: np.ndarray) -> VectorRow:
        """Row `i`; its typed tempo/key/energy fields are rebuilt from `extra["analysis"]`."""
        a = self.arrays
        extra = json.loads(str(a["extra"][i]))
        return VectorRow(
            track_id=str(a["track_id"][i]),
            vector=vector,
            artist=str(a["artist"][i]),
            title=str(a["title"][i]),
            album=str(a["album"][i]),
            duration=float(a["duration"][i]),
            fingerprint=str(a["fingerprint"][i]),
            model_version=str(a["model_version"][i]),
            embedded_at=int(a["embedded_at"][i]),
            year=int(a["year"][i]) if "year" in a else 0,
            genre=str(a["genre"][i]) if "genre" in a else "",
            **analysis_fields(extra.get("analysis")),
            extra=extra,
        )

    def unreadable(self, why: str) -> UnreadableExport:
        return UnreadableExport(f"{self.path} is not a usable sonicbus export: {why}")


def read_header(path: Path) -> ExportHeader:
    """What an export file holds (model, dim, rows, ...), without reading its rows."""
    with _open_export(Path(path)) as export:
        return export.header


@contextlib.contextmanager
def _open_export(path: Path) -> Iterator[_Export]:
    """The export with its header and metadata arrays checked; the zip closed after."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise NotFound(f"no export file at {path}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise UnreadableExport(f"{path} is not a sonicbus export: {exc}") from exc
    with archive:
        yield _checked(path, archive)


def _checked(path: Path, archive: zipfile.ZipFile) -> _Export:
    names = set(archive.namelist())
    wanted = ["header", *TEXT_COLUMNS, "duration", "embedded_at", "extra", "vectors"]
    missing = [n for n in wanted if f"{n}.npy" not in names]
    if missing:
        raise UnreadableExport(f"{path} is not a sonicbus export: no {', '.join(missing)}")
    try:
        later = [n for n in LATER_COLUMNS if f"{n}.npy" in names]  # absent from older files
        arrays = {n: _load(archive, n) for n in [*wanted, *later] if n != "vectors"}
        header = ExportHeader.model_validate_json(str(arrays.pop("header")))
    except (ValueError, OSError, zipfile.BadZipFile, ValidationError) as exc:
        raise UnreadableExport(f"{path} is not a usable sonicbus export: {exc}") from exc
    short = {n: len(a) for n, a in arrays.items() if a.shape != (header.rows,)}
    if short:
        raise UnreadableExport(f"{path}: the header says {header.rows} rows, but {short}")
    return _Export(path, archive, header, arrays)


def _load(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    with archive.open(f"{name}.npy") as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def import_export(
    store: VectorStore,
    path: Path,
    model: str | None = None,
    collection: str | None = None,
    on_progress: Progress | None = None,
    batch_rows: int = BATCH_ROWS,
) -> TransferSummary:
    """Load an export into `collection` (default: the model's active one), created if missing.

    Blocking. Every check runs before the first write: a file for another
    model than `model`, a dimension unlike an existing collection's, a damaged
    file or a non-finite vector raise and leave the store as it was. Rows are
    upserted by track id, so importing the same file again changes nothing.
    """
    with _open_export(Path(path)) as export:
        header = export.header
        if model is not None and model != header.model:
            raise ExportMismatch(
                f"{path} holds {header.model} vectors, not {model}: "
                f"import it as --model {header.model}"
            )
        check_model(header.model)
        target = collection or store.active_collection(header.model)
        _check_target(store, target, header)
        unit = _check_vectors(export, batch_rows)
        store.ensure_collection(target, header.dim)
        done = 0
        for vectors in export.vector_pages(batch_rows):
            store.upsert(target, export.rows(done, vectors), flush=False, as_stored=unit)
            done += len(vectors)
            if on_progress:
                on_progress(done, header.rows)
        store.flush(target)
    size = Path(path).stat().st_size
    return TransferSummary(model=header.model, collection=target, dim=header.dim,
                           rows=header.rows, path=str(path), bytes=size)  # fmt: skip


def _check_target(store: VectorStore, target: str, header: ExportHeader) -> None:
    if not COLLECTION_NAME.match(target) or target == store.state_collection:
        raise InvalidInput(f"cannot import into {target!r}: not a name for a track collection")
    if store.has_collection(target):
        existing = store.dimension(target)
        if existing != header.dim:
            raise ExportMismatch(
                f"collection {target} holds {existing}-d vectors, the file {header.dim}-d "
                f"({header.model}): import into a fresh collection with --collection NAME"
            )


def _check_vectors(export: _Export, batch_rows: int) -> bool:
    """Every vector finite (else nothing is written); whether all are unit length as stored."""
    unit = True
    for start, vectors in enumerate(export.vector_pages(batch_rows)):
        if not np.isfinite(vectors).all():
            bad = start * batch_rows + int(np.argmin(np.isfinite(vectors).all(axis=1)))
            raise export.unreadable(f"the vector of {export.arrays['track_id'][bad]} is not finite")
        norms = np.linalg.norm(vectors.astype(np.float64), axis=1)
        unit = unit and bool(np.all((np.abs(norms - 1.0) < 1e-4) | (norms == 0.0)))
    return unit
