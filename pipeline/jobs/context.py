"""What a running job gets from the worker: its request, the settings, the store, a way to
report progress (from any thread) and to learn that it was asked to stop."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from pipeline.schemas.jobs import JobProgress, JobRequest
from pipeline.store import VectorStore


class JobCancelled(Exception):
    """The job stopped because it was asked to (a cancel request); nothing half-written."""


class WorkerStopping(JobCancelled):
    """The worker is shutting down: the job stops, unfinished, and is taken up again."""


@dataclass
class JobContext:
    request: JobRequest
    settings: Settings
    store: VectorStore | None
    producer: AIOKafkaProducer
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    _progress: JobProgress = field(default_factory=JobProgress)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0

    def progress(
        self,
        done: int,
        total: int | None = None,
        best_score: float | None = None,
        message: str = "",
    ) -> None:
        """Note how far the job is; the worker publishes it (throttled). Thread-safe."""
        with self._lock:
            self._progress = JobProgress(
                done=done, total=total, best_score=best_score, message=message
            )
            self._version += 1

    def latest(self) -> tuple[int, JobProgress]:
        with self._lock:
            return self._version, self._progress

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.stopping.is_set()

    def check_cancelled(self) -> None:
        """Raise if the job was asked to stop (call it between steps)."""
        if self.stopping.is_set():
            raise WorkerStopping("the worker is stopping")
        if self.cancel.is_set():
            raise JobCancelled("cancelled on request")

    def require_store(self) -> VectorStore:
        if self.store is None:
            raise RuntimeError("this job kind needs the vector store, and the worker has none")
        return self.store


JobRunner = Callable[[JobContext], Awaitable[dict[str, Any]]]
