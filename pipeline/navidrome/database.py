"""Navidrome's library as its own records: the SQLite database, read-only, and the shared models.

`NavidromeTrack` is one song as Navidrome knows it, whichever way it was read
(this database or the Subsonic API in `subsonic.py`); `TrackAnnotation` holds a
user's plays, stars and rating, which the recommenders' seed modes use.
Paths are Navidrome's: `PathMap` turns them into paths on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from pipeline.config import NavidromeSettings
from pipeline.errors import Unavailable
from pipeline.schemas import TrackMetadata
from pipeline.schemas.base import describe_validation_error

log = logging.getLogger(__name__)

_DATETIME = TypeAdapter(datetime)


class NavidromeUnavailable(Unavailable):
    """Navidrome's library could not be read (database locked or corrupt, server down)."""


class TrackAnnotation(BaseModel):
    """A user's relation to a track: plays, stars, rating (Navidrome's `annotation` row)."""

    play_count: int = 0
    play_date: datetime | None = None
    rating: int = Field(0, ge=0, le=5)
    starred: bool = False
    starred_at: datetime | None = None


class NavidromeTrack(BaseModel):
    """One song of a Navidrome library, with Navidrome's own id and path."""

    id: str = Field(min_length=1)
    path: str = Field(min_length=1, description="Absolute path as Navidrome sees it.")
    library_id: int | None = None
    library_path: str | None = None
    relative_path: str | None = None
    suffix: str | None = None
    size: int | None = None
    pid: str | None = Field(
        None, description="Navidrome's persistent id: a hash of tags (database only)."
    )
    metadata: TrackMetadata = Field(default_factory=TrackMetadata)
    annotation: TrackAnnotation | None = None


@dataclass
class NavidromeListing:
    """Every track of the library, and the rows that could not be read (id, reason)."""

    tracks: list[NavidromeTrack] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


class PathMap:
    """Navidrome path prefixes -> the same folders here (Navidrome often runs in a container)."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.prefixes = sorted(
            ((k.rstrip("/") or "/", v.rstrip("/") or "/") for k, v in mapping.items()),
            key=lambda kv: len(kv[0]),
            reverse=True,
        )

    def match(self, navidrome_path: str) -> tuple[str, str] | None:
        """(navidrome prefix, local prefix) of the longest prefix that contains the path."""
        for prefix, local in self.prefixes:
            if navidrome_path == prefix or navidrome_path.startswith(prefix.rstrip("/") + "/"):
                return prefix, local
        return None

    def to_local(self, navidrome_path: str) -> str:
        found = self.match(navidrome_path)
        if found is None:
            return navidrome_path
        prefix, local = found
        rest = navidrome_path[len(prefix) :].lstrip("/")
        return os.path.join(local, rest) if rest else local


def parse_time(value: Any) -> datetime | None:
    """Navidrome's timestamps; its '0000-00-00 ...' defaults and junk mean 'none'."""
    if value in (None, "") or str(value).startswith("0000"):
        return None
    try:
        return _DATETIME.validate_python(value)
    except ValidationError:
        return None


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def positive_number(value: Any) -> int | None:
    """A track, disc or year number; None for 0, empty or not a number (both sources)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


_COLUMNS = (
    "id",
    "path",
    "title",
    "album",
    "artist",
    "album_artist",
    "duration",
    "genre",
    "year",
    "track_number",
    "disc_number",
    "suffix",
    "size",
    "mbz_recording_id",
    "mbz_album_id",
    "mbz_artist_id",
    "library_id",
    "pid",
    "tags",
)


# Columns media_file has had in every Navidrome version sonicbus reads: without one of
# them the schema is not one we know, and guessing (a NULL title, every track present)
# would publish wrong events. Since 0.55 (the `library` table) `library_id` and `missing`
# are needed too: without `missing`, deleted files would look present.
_REQUIRED = frozenset(_COLUMNS[:13])
_REQUIRED_SINCE_LIBRARIES = frozenset({"library_id", "missing"})


class NavidromeDatabase:
    """Reads navidrome.db without ever writing to it (SQLite `mode=ro`, `query_only`).

    Handles both layouts: since Navidrome 0.55 `media_file.path` is relative to
    its `library` row's path; before, it was absolute and there was one library.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s

    @classmethod
    def from_settings(cls, navidrome: NavidromeSettings) -> NavidromeDatabase:
        """The configured database; NavidromeUnavailable when none is configured."""
        if navidrome.db_path is None:
            raise NavidromeUnavailable("no Navidrome database configured (navidrome.db_path)")
        return cls(navidrome.db_path, navidrome.busy_timeout_s)

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise NavidromeUnavailable(f"Navidrome database {self.path} does not exist")
        uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA query_only = ON")
        return connection

    def _query(self, work: Any) -> Any:
        """Run `work(connection)`, turning SQLite failures into one clear error."""
        try:
            connection = self._connect()
        except sqlite3.Error as exc:
            raise NavidromeUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            return work(connection)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise NavidromeUnavailable(
                    f"Navidrome database {self.path} is locked (still busy after "
                    f"{self.busy_timeout_s:g} s; is a Navidrome scan writing to it?): {text}"
                ) from exc
            if "no such table" in text:
                raise NavidromeUnavailable(
                    f"{self.path} is not a Navidrome database: {text}"
                ) from exc
            raise NavidromeUnavailable(f"cannot read {self.path}: {text}") from exc
        except sqlite3.DatabaseError as exc:
            raise NavidromeUnavailable(
                f"{self.path} is not a readable SQLite database (corrupt?): {exc}"
            ) from exc
        finally:
            connection.close()

    def read(self, user: str | None = None) -> NavidromeListing:
        """Every present (not `missing`) track, with `user`'s annotations (all users' if None)."""
        return self._query(lambda connection: self._read(connection, user))

    def _read(self, connection: sqlite3.Connection, user: str | None) -> NavidromeListing:
        libraries = _libraries(connection)
        present = set(_columns(connection, "media_file"))
        if not present:
            raise NavidromeUnavailable(
                f"{self.path} is not a Navidrome database: it has no media_file table"
            )
        required = _REQUIRED | (_REQUIRED_SINCE_LIBRARIES if libraries else frozenset())
        if missing := sorted(required - present):
            raise NavidromeUnavailable(
                f"{self.path}: Navidrome's media_file table has no column "
                f"{', '.join(missing)}: a Navidrome version whose schema sonicbus does not "
                "know (older or newer than those it was tested with, up to 0.63); nothing was read"
            )
        annotations = _annotations(connection, user)
        selected = [c if c in present else f"NULL AS {c}" for c in _COLUMNS]
        if "mbz_recording_id" not in present and "mbz_track_id" in present:
            selected[_COLUMNS.index("mbz_recording_id")] = "mbz_track_id AS mbz_recording_id"
        where = " WHERE missing = 0" if "missing" in present else ""
        listing = NavidromeListing()
        sql = f"SELECT {', '.join(selected)} FROM media_file{where} ORDER BY id"
        for row in connection.execute(sql):
            try:
                track = _track(dict(row), libraries)
            except ValidationError as exc:
                key = _text(row["id"]) or _text(row["path"]) or "?"
                listing.problems.append(
                    (key, f"unusable media_file row: {describe_validation_error(exc)}")
                )
                continue
            track.annotation = annotations.get(track.id)
            listing.tracks.append(track)
        return listing


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]


def _libraries(connection: sqlite3.Connection) -> dict[int, str]:
    if not _columns(connection, "library"):
        return {}
    return {row["id"]: row["path"] for row in connection.execute("SELECT id, path FROM library")}


def _annotations(connection: sqlite3.Connection, user: str | None) -> dict[str, TrackAnnotation]:
    """Per-track plays, stars and rating: one user's, or summed/maxed over all users."""
    if not _columns(connection, "annotation"):
        return {}
    sql = (
        "SELECT a.item_id, SUM(a.play_count) AS play_count, MAX(a.play_date) AS play_date, "
        "MAX(a.rating) AS rating, MAX(a.starred) AS starred, MAX(a.starred_at) AS starred_at "
        "FROM annotation a {join} WHERE a.item_type = 'media_file' {filter} GROUP BY a.item_id"
    )
    params: tuple[str, ...] = ()
    join = filter_ = ""
    if user is not None:
        join, filter_, params = "JOIN user u ON u.id = a.user_id", "AND u.user_name = ?", (user,)
    result = {}
    for row in connection.execute(sql.format(join=join, filter=filter_), params):
        result[row["item_id"]] = TrackAnnotation(
            play_count=row["play_count"] or 0,
            play_date=parse_time(row["play_date"]),
            rating=min(max(int(row["rating"] or 0), 0), 5),
            starred=bool(row["starred"]),
            starred_at=parse_time(row["starred_at"]),
        )
    return result


def _first_genre(row: dict[str, Any]) -> str | None:
    """The genre column, or since Navidrome 0.55 (which leaves it empty) the first genre of
    the `tags` JSON ({"genre": [{"id": ..., "value": ...}]}), as its Subsonic API reports it."""
    if _text(row["genre"]):
        return _text(row["genre"])
    try:
        genres = json.loads(row["tags"] or "{}").get("genre") or []
        return _text(genres[0].get("value")) if genres else None
    except (ValueError, AttributeError, TypeError):
        return None


def _track(row: dict[str, Any], libraries: dict[int, str]) -> NavidromeTrack:
    path = str(row["path"] or "")
    library_id = row["library_id"]
    library_path = libraries.get(library_id) if library_id is not None else None
    if path and not path.startswith("/") and library_path:
        relative = path
        path = f"{library_path.rstrip('/')}/{path}"
    elif library_path and path.startswith(library_path.rstrip("/") + "/"):
        relative = path[len(library_path.rstrip("/")) + 1 :]
    else:
        relative = None
    return NavidromeTrack(
        id=str(row["id"] or ""),
        path=path,
        library_id=library_id,
        library_path=library_path,
        relative_path=relative,
        suffix=_text(row["suffix"]),
        size=row["size"],
        pid=_text(row["pid"]),
        metadata=TrackMetadata(
            title=_text(row["title"]),
            artist=_text(row["artist"]),
            album_artist=_text(row["album_artist"]),
            album=_text(row["album"]),
            track_number=positive_number(row["track_number"]),
            disc_number=positive_number(row["disc_number"]),
            year=positive_number(row["year"]),
            genre=_first_genre(row),
            duration_s=float(row["duration"]) if row["duration"] else None,
            mbz_recording_id=_text(row["mbz_recording_id"]),
            mbz_album_id=_text(row["mbz_album_id"]),
            mbz_artist_id=_text(row["mbz_artist_id"]),
        ),
    )


class NavidromeIdLookup:
    """Local path -> Navidrome track id, for the filesystem watcher.

    The index is rebuilt when the database (or its WAL) changes, so files that
    Navidrome has scanned since are found; while the database cannot be read the
    lookup answers None and the watcher falls back to its own ids.
    """

    def __init__(self, database: NavidromeDatabase, path_map: PathMap) -> None:
        self.database = database
        self.path_map = path_map
        self._stamp: tuple[int, ...] | None = None
        self._index: dict[str, str] = {}
        self._last_error: str | None = None

    def _current_stamp(self) -> tuple[int, ...]:
        stamps = []
        for suffix in ("", "-wal"):
            try:
                stamps.append(os.stat(f"{self.database.path}{suffix}").st_mtime_ns)
            except OSError:
                stamps.append(0)
        return tuple(stamps)

    def refresh(self) -> None:
        """Re-read the database if it changed since the last read (blocking)."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return
        try:
            listing = self.database.read()
        except NavidromeUnavailable as exc:
            if str(exc) != self._last_error:  # once per distinct failure, not once per change
                log.warning("Navidrome ids unavailable, using path-derived ids for now: %s", exc)
                self._last_error = str(exc)
            return
        self._last_error = None
        self._index = {self.path_map.to_local(t.path): t.id for t in listing.tracks}
        self._stamp = stamp

    def lookup(self, local_path: str) -> str | None:
        """The id Navidrome gave this file at the last `refresh` (blocking; call it in a thread)."""
        return self._index.get(local_path)
