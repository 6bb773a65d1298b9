"""The `cleaning` job: each model's collection reconciled with the `tracks` topic.

- An orphan is a row whose track is no longer in the catalog (its key was
  tombstoned, or never published here): it is deleted.
- A gap is a catalog track the model's embedder has already passed (its
  record lies below the committed offset of `embed-<model>` on its partition)
  and still has no row: its TrackEvent is published again, so the embedders
  reconsider it. Tracks the embedder has not reached yet are its backlog, not
  gaps.
- Above the safety limit (more than `jobs.cleaning.max_changes` removals or
  re-publications, or more than `max_ratio` of a collection removed: an
  empty catalog after a mistake looks like a library full of orphans) it
  changes nothing and only reports. Params: `models` (default embed.models),
  `dry_run`, `max_changes`, `max_ratio`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.bus import make_admin, make_consumer, read_to_end
from pipeline.config import KafkaSettings, Settings
from pipeline.errors import InvalidInput, Unavailable
from pipeline.jobs.context import JobContext
from pipeline.schemas import SchemaError, TrackEvent
from pipeline.schemas.base import describe_validation_error
from pipeline.store import VectorStore
from pipeline.topics import embed_group, list_topics


class CleaningParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = None
    dry_run: bool = False
    max_changes: int | None = Field(None, ge=0)
    max_ratio: float | None = Field(None, ge=0, le=1)


# track id -> (event, partition, offset of its latest record)
Located = dict[str, tuple[TrackEvent, int, int]]


async def read_catalog_with_offsets(kafka: KafkaSettings, topic: str) -> Located:
    """The latest TrackEvent per key with where it lies, read to the end offsets of now."""
    partitions = (await list_topics(kafka)).get(topic)
    if not partitions:
        return {}
    consumer = make_consumer(kafka, group_id=None, role="cleaning")
    latest: Located = {}
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        async for record in read_to_end(consumer, tps, max_records=5000):
            if record.key is None:
                continue
            track_id = record.key.decode("utf-8", errors="replace")
            if record.value is None:
                latest.pop(track_id, None)
                continue
            try:
                event = TrackEvent.from_bytes(record.value)
            except SchemaError:
                continue
            latest[track_id] = (event, record.partition, record.offset)
    finally:
        await consumer.stop()
    return latest


async def committed_positions(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """partition -> committed offset of `group` on `topic` (absent: never committed)."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0}  # fmt: skip


def stored_ids(store: VectorStore, model: str) -> tuple[str, set[str]] | None:
    collection = store.active_collection(model)
    if not store.has_collection(collection):
        return None
    return collection, {row.track_id for page in store.iterate(collection) for row in page}


async def reconcile_model(
    settings: Settings, store: VectorStore, model: str, catalog: Located
) -> dict[str, Any]:
    found = await asyncio.to_thread(stored_ids, store, model)
    if found is None:
        return {"model": model, "collection": None, "stored": 0, "orphans": 0, "gaps": 0}
    collection, ids = found
    positions = await committed_positions(settings.kafka, embed_group(settings, model),
                                          settings.topics.tracks)  # fmt: skip
    orphans = sorted(ids - set(catalog))
    gaps = sorted(
        tid for tid, (_, partition, offset) in catalog.items()
        if tid not in ids and offset < positions.get(partition, 0)
    )  # fmt: skip
    return {"model": model, "collection": collection, "stored": len(ids),
            "orphans": len(orphans), "gaps": len(gaps),
            "orphan_ids": orphans, "gap_ids": gaps}  # fmt: skip


async def run_cleaning(ctx: JobContext) -> dict[str, Any]:
    settings = ctx.settings
    try:
        params = CleaningParams.model_validate(ctx.request.params)
    except ValidationError as exc:
        raise InvalidInput(f"cleaning params: {describe_validation_error(exc)}") from exc
    limits = settings.jobs.cleaning
    max_changes = limits.max_changes if params.max_changes is None else params.max_changes
    max_ratio = limits.max_ratio if params.max_ratio is None else params.max_ratio
    models = params.models or settings.embed.models
    store = ctx.require_store()
    ctx.progress(0, len(models) + 1, message="reading the tracks topic")
    try:
        catalog = await read_catalog_with_offsets(settings.kafka, settings.topics.tracks)
    except Exception as exc:
        raise Unavailable(f"cannot read {settings.topics.tracks}: {exc}") from exc
    reports = []
    for i, model in enumerate(models, start=1):
        ctx.check_cancelled()
        reports.append(await reconcile_model(settings, store, model, catalog))
        ctx.progress(i, len(models) + 1, message=f"compared {model}")
    problems = []
    for r in reports:
        if r["orphans"] > max_changes or r["orphans"] > max_ratio * max(r["stored"], 1):
            problems.append(f"{r['model']}: {r['orphans']} rows to remove of {r['stored']}")
        if r["gaps"] > max_changes:
            problems.append(f"{r['model']}: {r['gaps']} tracks to re-publish")
    over_limit = bool(problems)
    applied = not over_limit and not params.dry_run
    ctx.check_cancelled()  # nothing was changed yet
    republish: dict[str, TrackEvent] = {}
    if applied:
        for r in reports:
            if r["orphan_ids"]:
                await asyncio.to_thread(store.delete, r["collection"], r["orphan_ids"])
            for tid in r["gap_ids"]:
                republish[tid] = catalog[tid][0]
        futures = [await ctx.producer.send(settings.topics.tracks, event.to_bytes(),
                                           key=tid.encode())
                   for tid, event in republish.items()]  # fmt: skip
        await asyncio.gather(*futures)
    for r in reports:
        r["removed"] = r["orphans"] if applied else 0
        r["republished"] = r["gaps"] if applied else 0
        r["orphan_ids"], r["gap_ids"] = r["orphan_ids"][:20], r["gap_ids"][:20]
    if over_limit:
        message = (f"over the safety limit ({max_changes} changes, {max_ratio:.0%} of a "
                   f"collection): nothing changed; " + "; ".join(problems))  # fmt: skip
    elif params.dry_run:
        message = "dry run: nothing changed"
    else:
        removed = sum(r["removed"] for r in reports)
        message = f"removed {removed} orphan rows, re-published {len(republish)} tracks"
    return {"catalog": len(catalog), "models": reports, "applied": applied,
            "over_limit": over_limit, "message": message}  # fmt: skip
