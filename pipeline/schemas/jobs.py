"""The `jobs`, `job-events` and `job-schedules` topics: long work asked for, and what became of it.

A `JobRequest` (on `jobs`, keyed by its kind) asks for one job; the CLI, the
HTTP API and the scheduler publish them. Whoever runs it answers on
`job-events`, keyed by the same id: `accepted` (or `refused` with a reason),
`progress` (done / total, best score so far, and a heartbeat that says the
worker is alive; `interrupted` when its worker stopped: the next one takes it
up at once), then one final `done`, `failed` or `cancelled` with the
job's figures. The topic is compacted, so its latest value per job id is that
job's state: reading it from the start tells every worker which jobs have
ended, which is what makes a redelivered request run at most once. A cancel
is a job event too, keyed `cancel:<job id>` so that it never replaces the
state of the job it names.

`JobBoard` folds the events into that answer; it is pure (no IO) because the
worker, the CLI and the HTTP API all read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.schemas.base import Record, SchemaError, utc_now

JobKind = Literal["clustering", "cleaning", "scan", "daily_mixes"]
JOB_KINDS: tuple[str, ...] = ("clustering", "cleaning", "scan", "daily_mixes")
JobStatus = Literal[
    "accepted",
    "refused",
    "progress",
    "interrupted",
    "done",
    "failed",
    "cancelled",
    "cancel_requested",
]
FINAL_STATUSES = frozenset({"refused", "done", "failed", "cancelled"})
CANCEL_PREFIX = "cancel:"
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,199}$")


def cancel_key(job_id: str) -> str:
    """The job-events key of a cancel request (never the job's own key: see the module doc)."""
    return f"{CANCEL_PREFIX}{job_id}"


class JobRequest(Record):
    """Run one job. Publishing the same `job_id` twice runs it once."""

    job_id: str = Field(description="Unique id; the scheduler derives it from schedule + due time.")
    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict, description="The job kind's options.")
    requested_by: str = Field("", description="cli, http, scheduler:<name>, ... (for people).")
    requested_at: datetime = Field(default_factory=utc_now)
    due_at: datetime | None = Field(None, description="The scheduled time it stands for.")

    @field_validator("job_id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not JOB_ID.match(value):
            raise ValueError(
                "job_id: 1-200 characters of letters, digits and _ . : @ + -, "
                "starting with a letter or digit"
            )
        return value


class JobProgress(Record):
    """How far a job is: `done` of `total` steps (clustering: runs), and the best score yet."""

    done: int = Field(0, ge=0)
    total: int | None = Field(None, ge=0)
    best_score: float | None = None
    message: str = ""


class JobEvent(Record):
    """One step in a job's life, keyed by job id (a cancel request: `cancel:<job id>`)."""

    job_id: str
    kind: JobKind | None = None
    status: JobStatus
    at: datetime = Field(default_factory=utc_now)
    worker: str = Field("", description="Which worker process (host:pid) speaks.")
    attempt: int = Field(1, ge=1, description="2 and up: taken up again after a worker was lost.")
    message: str = Field("", description="Why (refused, failed) or what happened, for people.")
    progress: JobProgress | None = None
    result: dict[str, Any] | None = Field(None, description="The figures of a final event.")
    requested_by: str = ""
    params: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass
class JobBoard:
    """The latest event of every job and the cancel requests, from the `job-events` topic."""

    jobs: dict[str, JobEvent] = field(default_factory=dict)
    cancels: dict[str, JobEvent] = field(default_factory=dict)
    started: dict[str, JobEvent] = field(default_factory=dict)

    def apply(self, key: bytes | str | None, value: bytes | None) -> JobEvent | None:
        """One record of the topic; invalid ones are ignored (a bad record must not stop a
        worker). Returns the event applied, if any."""
        if key is None or value is None:
            return None
        text = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key
        try:
            event = JobEvent.from_bytes(value)
        except SchemaError:
            return None
        self.note(event, cancel=text.startswith(CANCEL_PREFIX))
        return event

    def note(self, event: JobEvent, cancel: bool = False) -> None:
        if cancel or event.status == "cancel_requested":
            self.cancels[event.job_id] = event
            return
        previous = self.jobs.get(event.job_id)
        if previous is not None and previous.final and not event.final:
            return  # a late heartbeat of an ended job does not revive it
        self.jobs[event.job_id] = event
        self.started.setdefault(event.job_id, event)

    def state(self, job_id: str) -> JobEvent | None:
        return self.jobs.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self.cancels

    def live(self, now: datetime, stale_after: timedelta) -> list[JobEvent]:
        """Jobs that run now: not ended, and heard from within `stale_after`."""
        return [
            e
            for e in self.jobs.values()
            if not e.final and e.status != "interrupted" and now - e.at <= stale_after
        ]

    def running_of_kind(
        self, kind: str, now: datetime, stale_after: timedelta
    ) -> JobEvent | None:
        return next((e for e in self.live(now, stale_after) if e.kind == kind), None)

    def newest(self, limit: int = 50) -> list[JobEvent]:
        """The latest state of the most recently started jobs, newest first."""
        order = sorted(
            self.jobs.values(),
            key=lambda e: (self.started.get(e.job_id, e).at, e.at),
            reverse=True,
        )
        return order[:limit]


class Schedule(Record):
    """Run a job of `kind` at every time the cron expression names (a `job-schedules` record,
    keyed by name, or an entry of `jobs.schedules` in the config file)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$", description="Unique, lower case.")
    kind: JobKind
    cron: str = Field(description="5 fields (min hour day month weekday), or 6 (+ seconds).")
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from croniter import croniter

        if not croniter.is_valid(value):
            raise ValueError(
                f"invalid cron expression {value!r}: expected e.g. '*/15 * * * *' "
                "(minute hour day month weekday)"
            )
        return value


def scheduled_job_id(schedule: str, due: datetime) -> str:
    """The id every scheduler derives for the run of `schedule` due at `due` (UTC, seconds):
    two schedulers publish the same id, and the worker runs it once."""
    from datetime import UTC

    stamp = due.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{schedule}@{stamp}"
