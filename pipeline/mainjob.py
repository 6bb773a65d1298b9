"""`sonicbus up MUSIC_DIR`: the whole pipeline on one machine, in one process tree.

Starts the local Kafka broker (when the settings point at it) and creates the
topics, opens Milvus (Lite by default), then runs the filesystem watcher, one
embedder per configured model, the query service and the HTTP service (on
loopback, `http.port`; `--no-http` leaves it out) under a `Supervisor`, with
a live status line. Milvus Lite serves one process at a time, so every component shares the
single `VectorStore` opened here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from pipeline import infra
from pipeline.bus import make_producer
from pipeline.config import Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import run_query_service
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.store import VectorStore
from pipeline.supervisor import Supervisor
from pipeline.topics import ensure_topics
from pipeline.wiring import vector_store

log = logging.getLogger(__name__)


def prepare_services(settings: Settings) -> None:
    """Local broker up (if it is ours) and topics created; raises InfraError otherwise."""
    if infra.local_kafka_configured(settings):
        infra.start_kafka(settings)
    asyncio.run(ensure_topics(settings.kafka, settings.topics))


def status_line(supervisor: Supervisor, watcher: FilesystemWatcher, counts: dict[str, int]) -> Text:
    parts = []
    for name, state in supervisor.states.items():
        colour = {"running": "green", "restarting": "yellow"}.get(state.state, "red")
        restarts = f" ({state.restarts} restarts)" if state.restarts else ""
        parts.append(f"[{colour}]{name} {state.state}[/{colour}]{restarts}")
    known = len(watcher.catalog)
    scan = "scanning" if not watcher.ready.is_set() else f"{known} tracks known"
    stored = ", ".join(f"{model}: {n} embedded" for model, n in counts.items())
    return Text.from_markup(" · ".join([*parts, scan, stored]) + "   (Ctrl+C stops)")


async def run_main_job(
    settings: Settings,
    roots: Sequence[Path],
    models: Sequence[str],
    console: Console,
    http: bool = True,
) -> None:
    store = vector_store(settings)
    producer = make_producer(settings.kafka, role="watcher")
    await producer.start()
    watcher = FilesystemWatcher(settings, roots, producer, progress=False)
    components = {"watcher": watcher.run}
    for model in models:
        components[f"embed-{model}"] = _embedder(settings, model, store)
    components["query"] = _query_service(settings, store)
    if http:
        components["http"] = _http_service(settings, store)
    supervisor = Supervisor(components)
    supervisor.install_signal_handlers()
    counts: dict[str, int] = dict.fromkeys(models, 0)
    runner = asyncio.create_task(supervisor.run())
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while not runner.done():
                counts = await asyncio.to_thread(_row_counts, store, models)
                live.update(status_line(supervisor, watcher, counts))
                await asyncio.wait({runner}, timeout=1.0)
        await runner
    finally:
        await producer.stop()
        store.close()
    console.print("stopped cleanly")


def _embedder(settings: Settings, model: str, store: VectorStore):  # type: ignore[no-untyped-def]
    async def component(stop: asyncio.Event) -> None:
        await run_embedder(settings, model, stop, store=store)

    return component


def _query_service(settings: Settings, store: VectorStore):  # type: ignore[no-untyped-def]
    # The query service limits BLAS to one thread for its own latency; sharing a
    # process with the embedders, that would slow embedding down, so keep BLAS free.
    shared = settings.model_copy(
        update={"query": settings.query.model_copy(update={"blas_threads": None})}
    )

    async def component(stop: asyncio.Event) -> None:
        await run_query_service(shared, stop, store=store)

    return component


def _http_service(settings: Settings, store: VectorStore):  # type: ignore[no-untyped-def]
    """The HTTP service (`sonicbus serve`'s app) on up's own store: Milvus Lite serves one
    process. The Navidrome plugin's endpoints need only the bus; /healthz and /metrics
    read the store."""

    async def component(stop: asyncio.Event) -> None:
        import uvicorn

        from pipeline.http.app import create_app
        from pipeline.http.runtime import OpsRuntime

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield  # the supervisor owns SIGINT and SIGTERM

        runtime = OpsRuntime(settings, store=store)
        await runtime.start()
        config = uvicorn.Config(create_app(settings, runtime), host=settings.http.host,
                                port=settings.http.port, log_level="warning")  # fmt: skip
        server = Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            await asyncio.wait({serving, asyncio.create_task(stop.wait())},
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            server.should_exit = True
            try:
                await serving
            except SystemExit as exc:  # uvicorn exits when it cannot bind
                raise RuntimeError(f"HTTP service on port {settings.http.port}: {exc}") from None
        finally:
            await runtime.stop()

    return component


def _row_counts(store: VectorStore, models: Sequence[str]) -> dict[str, int]:
    counts = {}
    for model in models:
        try:
            name = store.active_collection(model)  # after a `reembed --fresh`: the new one
            counts[model] = store.count(name) if store.has_collection(name) else 0
        except Exception:  # status only: a busy store must not stop the job
            counts[model] = -1
    return counts
