"""Cron schedules of jobs: the config file's (`jobs.schedules`) and the HTTP API's.

The API's live on the compacted `job-schedules` topic (keyed by name, a
tombstone removes one), so every scheduler, wherever it runs, reads the same
set, and a second terminal can change it while `sonicbus up` holds Milvus. An
API schedule overrides a config one of the same name (`enabled=false` turns a
config schedule off).
"""

from __future__ import annotations

from typing import Literal

from aiokafka import TopicPartition
from pydantic import BaseModel

from pipeline.bus import make_consumer, make_producer, read_to_end
from pipeline.config import KafkaSettings, Settings
from pipeline.jobs.events import JobsUnavailable
from pipeline.schemas import SchemaError
from pipeline.schemas.jobs import Schedule
from pipeline.topics import ensure_topics, job_schedules_topic, list_topics


class ScheduleView(BaseModel):
    schedule: Schedule
    source: Literal["config", "api"]


async def read_api_schedules(kafka: KafkaSettings, topic: str) -> dict[str, Schedule]:
    """The schedules set through the API, latest per name."""
    if not (await list_topics(kafka)).get(topic):
        return {}
    consumer = make_consumer(kafka, group_id=None, role="schedules")
    found: dict[str, Schedule] = {}
    await consumer.start()
    try:
        async for record in read_to_end(consumer, [TopicPartition(topic, 0)]):
            name = (record.key or b"").decode("utf-8", errors="replace")
            if record.value is None:
                found.pop(name, None)
                continue
            try:
                found[name] = Schedule.from_bytes(record.value)
            except SchemaError:
                continue
    finally:
        await consumer.stop()
    return found


async def effective_schedules(settings: Settings) -> list[ScheduleView]:
    """Config schedules, overridden or added to by the API's, sorted by name."""
    try:
        api = await read_api_schedules(settings.kafka, job_schedules_topic(settings.topics))
    except Exception as exc:
        raise JobsUnavailable(f"cannot read the schedules: {exc}") from exc
    views = {s.name: ScheduleView(schedule=s, source="config") for s in settings.jobs.schedules}
    views.update({name: ScheduleView(schedule=s, source="api") for name, s in api.items()})
    return [views[name] for name in sorted(views)]


async def put_schedules(settings: Settings, schedules: list[Schedule]) -> list[ScheduleView]:
    """Replace the API's schedules with `schedules` (names not given are removed)."""
    topic = job_schedules_topic(settings.topics)
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        from pipeline.errors import InvalidInput

        raise InvalidInput(f"schedule names must be unique, got {names}")
    producer = make_producer(settings.kafka, role="schedules")
    try:
        await ensure_topics(settings.kafka, settings.topics)
        current = await read_api_schedules(settings.kafka, topic)
        await producer.start()
        for schedule in schedules:
            await producer.send_and_wait(topic, schedule.to_bytes(), key=schedule.name.encode())
        for name in set(current) - set(names):
            await producer.send_and_wait(topic, None, key=name.encode())
    except Exception as exc:
        raise JobsUnavailable(f"cannot write the schedules: {exc}") from exc
    finally:
        await producer.stop()
    return await effective_schedules(settings)
