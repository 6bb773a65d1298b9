"""The long-lived parts behind `sonicbus serve`: Kafka readers, the store, metrics, watchers.

One `OpsRuntime` per HTTP service: it samples lag (and the rest of the
snapshot /metrics exports) every `ops.sample_interval_s`, follows the bus for
the histograms, finishes caught-up replays, holds the QueryClient the older
API's bridge asks through, and the text encoders of /embed_text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from pipeline.client import QueryClient
from pipeline.config import Settings
from pipeline.errors import InvalidInput
from pipeline.http import bridge
from pipeline.ops.dlq import dlq_partitions
from pipeline.ops.lag import LagReader, LagTracker
from pipeline.ops.metrics import BusFollower, OpsMetrics, Snapshot
from pipeline.ops.overview import Components
from pipeline.ops.progress import ReplayRate, replay_progress, watch_replays
from pipeline.ops.replay import current
from pipeline.ops.status import describe_collections, last_embedded, model_info, our_groups
from pipeline.recommender.prompts import TextSupport
from pipeline.store import VectorStore
from pipeline.wiring import text_support, vector_store

log = logging.getLogger(__name__)


class OpsRuntime:
    """The long-lived parts behind the endpoints: Kafka readers, the store, metrics, watchers."""

    def __init__(self, settings: Settings, store: VectorStore | None = None) -> None:
        self.settings = settings
        self.own_store = store is None
        if store is None:
            store = vector_store(settings)
        self.store = store
        self.metrics = OpsMetrics()
        self.tracker = LagTracker(settings.ops.rate_window_s)
        self.rates: dict[str, ReplayRate] = {}
        self.reader = LagReader(settings.kafka)
        self.client = QueryClient(settings)
        self.follower = BusFollower(settings, self.metrics)
        self.stop_event = asyncio.Event()
        self.sampled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._text: TextSupport | None = None
        # Under `sonicbus up`: the supervisor's components, shown as services by /api/overview.
        self.services: Components | None = None

    @property
    def text(self) -> TextSupport:
        """The prompt encoders, built on first use (loading them takes seconds)."""
        if self._text is None:
            self._text = text_support(self.settings)
        return self._text

    async def start(self) -> None:
        await self.reader.start()
        await self.client.start()
        self.metrics.last_embedded = await last_embedded(self.settings)
        models = self.settings.embed.models
        self._tasks = [
            asyncio.create_task(self._sample_forever(), name="ops-sampler"),
            asyncio.create_task(self.follower.run(self.stop_event), name="ops-follower"),
            asyncio.create_task(
                watch_replays(self.settings, self.store, models, self.stop_event),
                name="ops-replays",
            ),
        ]
        if self.store.is_lite:
            log.warning("Milvus Lite serves one process at a time: embedders cannot share it")

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.stop()
        await self.reader.stop()
        if self._text is not None:
            with contextlib.suppress(Exception):
                self._text.close()
        if self.own_store:
            self.store.close()

    async def _sample_forever(self) -> None:
        while not self.stop_event.is_set():
            try:
                await self.sample()
            except Exception:  # the next round tries again; /metrics keeps the last sample
                log.exception("sampling lag for /metrics failed")
            self.sampled.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), self.settings.ops.sample_interval_s)

    async def sample(self) -> Snapshot:
        groups = await our_groups(self.settings, self.reader)
        for group in groups:
            await self.reader.fill_ages(group)
            self.tracker.observe(group)
        partitions = await dlq_partitions(self.settings.kafka, self.settings.topics)
        starts, ends = await self.reader.log_bounds(partitions)
        models = self.settings.embed.models
        collections, states = await asyncio.to_thread(
            describe_collections, self.settings, self.store, models
        )
        members = {g.group: len(g.members) for g in groups}
        last = self.metrics.last_embedded
        infos = [model_info(self.settings, m, states.get(m), members, last) for m in models]
        replays = []
        for model in models:
            _, replay = await current(self.store, model)
            if replay is not None and replay.status in ("running", "cancelled"):
                rate = self.rates.setdefault(model, ReplayRate())
                replays.append(
                    await replay_progress(self.settings, self.store, model, self.reader, rate)
                )
        snapshot = Snapshot(
            groups=groups,
            dlq_records=sum(ends[tp] - starts[tp] for tp in ends),
            collections=collections,
            models=infos,
            replays=replays,
            sampled_at=datetime.now(UTC),
        )
        self.metrics.snapshot = snapshot
        return snapshot

    def text_embedding(self, request: bridge.TextEmbeddingRequest) -> bridge.TextEmbeddingResponse:
        """Blocking: a prompt in the model's terms (see the module docstring).

        The encoders are the query service's (`wiring.text_support`): the same
        sentence model at the same `query.text_precision`, the same tag temperature.
        """
        from models.text import NATIVE_TEXT_MODELS, TAGGED_MODELS

        model = request.model
        if model in NATIVE_TEXT_MODELS:
            vector = self.text.native(model).encode([request.text])[0]
            return bridge.TextEmbeddingResponse(
                embedding=vector.tolist(), model=model, dimension=len(vector), space="audio"
            )
        if model in TAGGED_MODELS:
            from models.musicnn import MusicnnParams

            params = MusicnnParams.model_validate(self.settings.embed.params.get(model, {}))
            tags = self.text.encoders[100 if params.heads == "msd+mtt" else 50]
            weights = tags.weights(request.text)
            return bridge.TextEmbeddingResponse(
                embedding=[round(float(w), 6) for w in weights], model=model,
                dimension=len(weights), space="tags", tags=tags.top_tags(request.text, 5),
            )  # fmt: skip
        raise InvalidInput(f"model {model!r} has no text encoder (try musicnn or muq)")

    async def batch_progress(self) -> bridge.BatchProgress:
        """The older progress shape, summed over each configured model's latest replay."""
        found = []
        for model in self.settings.embed.models:
            _, replay = await current(self.store, model)
            if replay is not None:
                rate = self.rates.setdefault(model, ReplayRate())
                found.append(
                    await replay_progress(self.settings, self.store, model, self.reader, rate)
                )
        if not found:
            return bridge.BatchProgress(status="no_job")
        statuses = {p.replay.status for p in found}
        status = next(
            s for s in ("running", "cancelled", "completed", "discarded") if s in statuses
        )
        total, done = sum(p.total for p in found), sum(p.processed for p in found)
        running = [p for p in found if p.replay.status == "running"]
        etas = [p.eta_s for p in running if p.eta_s is not None]
        return bridge.BatchProgress(
            status=status,
            total_tracks=max(p.total for p in found),
            total_operations=total,
            processed_tracks=min(p.processed for p in found),
            processed_operations=done,
            failed_tracks=sum(p.failures for p in found),
            current_model=running[0].replay.model if running else None,
            progress_percent=round(100.0 * done / total, 1) if total else 100.0,
            estimated_completion=time.time() + max(etas) if etas else None,
            job_id=",".join(p.replay.id for p in found),
        )
