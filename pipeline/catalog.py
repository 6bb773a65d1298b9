"""What is already published: the compacted `tracks` topic read back into memory.

Producers need it to skip unchanged files, to keep a moved file's id and to
notice deletions. The topic itself is the source of truth (its latest value
per key is the catalog), so there is no second database to keep in step: a
producer reads the topic from the start to the end offsets it saw when it
began, with no consumer group, and keeps an index by path and by content.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator

from aiokafka import TopicPartition

from pipeline.bus import make_admin, make_consumer, read_to_end
from pipeline.config import KafkaSettings
from pipeline.errors import Unavailable
from pipeline.schemas import SchemaError, TrackEvent

log = logging.getLogger(__name__)

ContentKey = tuple[int, str]


class CatalogError(Unavailable):
    """The tracks topic could not be read; the message says why."""


class Catalog:
    """The latest TrackEvent per track id, indexed by path and by content (size, fast hash)."""

    def __init__(self, events: Iterable[TrackEvent] = ()) -> None:
        self._by_id: dict[str, TrackEvent] = {}
        self._by_path: dict[str, set[str]] = defaultdict(set)
        self._by_content: dict[ContentKey, set[str]] = defaultdict(set)
        for event in events:
            self.put(event)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._by_id

    def __iter__(self) -> Iterator[TrackEvent]:
        return iter(list(self._by_id.values()))

    def get(self, track_id: str) -> TrackEvent | None:
        return self._by_id.get(track_id)

    def put(self, event: TrackEvent) -> None:
        """Record a published event, replacing the id's previous path and content."""
        self.remove(event.track_id)
        self._by_id[event.track_id] = event
        self._by_path[event.path].add(event.track_id)
        key = content_key(event)
        if key is not None:
            self._by_content[key].add(event.track_id)

    def remove(self, track_id: str) -> TrackEvent | None:
        """Forget a track (after its tombstone); returns what was known about it."""
        old = self._by_id.pop(track_id, None)
        if old is None:
            return None
        _discard(self._by_path, old.path, track_id)
        key = content_key(old)
        if key is not None:
            _discard(self._by_content, key, track_id)
        return old

    def ids_at(self, path: str) -> set[str]:
        """Ids published for one file (several for a CUE-split album)."""
        return set(self._by_path.get(path, ()))

    def events_at(self, path: str) -> list[TrackEvent]:
        return [self._by_id[i] for i in sorted(self._by_path.get(path, ()))]

    def ids_with_content(self, size: int, fast_hash: str) -> set[str]:
        """Ids whose file had this size and fast hash: candidates for a move."""
        return set(self._by_content.get((size, fast_hash), ()))

    def under(self, folder: str) -> list[TrackEvent]:
        """Tracks whose path is the folder itself or lies inside it."""
        folder = folder.rstrip(os.sep) or os.sep
        prefix = folder if folder.endswith(os.sep) else folder + os.sep
        return [
            self._by_id[i]
            for path, ids in self._by_path.items()
            if path == folder or path.startswith(prefix)
            for i in ids
        ]


def content_key(event: TrackEvent) -> ContentKey | None:
    if event.fingerprint is None:
        return None
    return (event.fingerprint.size, event.fingerprint.fast_hash)


def _discard(index: dict, key: object, track_id: str) -> None:
    ids = index.get(key)
    if ids is None:
        return
    ids.discard(track_id)
    if not ids:
        del index[key]


async def _partitions(kafka: KafkaSettings, topic: str) -> list[int] | None:
    """Partition ids of the topic, or None when it does not exist."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("topic") == topic and entry.get("error_code", 0) == 0:
            return sorted(p["partition"] for p in entry["partitions"])
    return None


async def read_tracks(kafka: KafkaSettings, topic: str) -> dict[str, TrackEvent]:
    """Latest TrackEvent per key, from the start of the topic to its end offsets at call time.

    A tombstone removes its key; a value that is not a valid TrackEvent is logged
    and skipped (the consumers dead-letter it; here it must not stop a scan).
    """
    partitions = await _partitions(kafka, topic)
    if partitions is None:
        log.warning("topic %s does not exist yet: starting from an empty catalog", topic)
        return {}
    consumer = make_consumer(kafka, group_id=None, role="catalog")
    await consumer.start()
    latest: dict[str, TrackEvent] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        async for record in read_to_end(consumer, tps, max_records=5000):
            _apply(latest, record.key, record.value)
    except Exception as exc:
        raise CatalogError(f"cannot read {topic} from {kafka.bootstrap_servers}: {exc}") from exc
    finally:
        await consumer.stop()
    return latest


def _apply(latest: dict[str, TrackEvent], key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    track_id = key.decode("utf-8", errors="replace")
    if value is None:
        latest.pop(track_id, None)
        return
    try:
        event = TrackEvent.from_bytes(value)
    except SchemaError as exc:
        log.warning("skipping an invalid record for %s in the catalog: %s", track_id, exc)
        return
    if event.track_id != track_id:
        log.warning("skipping a record keyed %s that names track %s", track_id, event.track_id)
        return
    latest[track_id] = event


async def load_catalog(kafka: KafkaSettings, topic: str) -> Catalog:
    """The catalog as it stands now, indexed for the producers."""
    tracks = await read_tracks(kafka, topic)
    log.info("catalog: %d tracks on %s", len(tracks), topic)
    return Catalog(tracks.values())
