"""`sonicbus up MUSIC_DIR`: the whole pipeline on one machine, in one process tree.

Starts the local Kafka broker (when the settings point at it) and creates the
topics, opens Milvus (Lite by default), then runs the filesystem watcher, one
embedder per configured model, the query service and the HTTP service (on
loopback, `http.port`; `--no-http` leaves it out) under a `Supervisor`, with
a live status line. Milvus Lite serves one process at a time, so every component shares the
single `VectorStore` opened here.

The terminal shows the status line ("musicnn: 136/375 embedded") and under it a
progress bar per model for the backlog (done / total, rate, ETA; `BacklogView`).
Ctrl+C finishes the batches in hand, then stops what `up` started, the local
Kafka broker included; a broker that was running before is left running, and
`release_services` says so and how to stop it. A `BrokerWatchdog` follows the broker
meanwhile: one that `up` started and that dies is started again; one it did not start is
waited for; either way the log says once that it is unreachable and once that it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from models.base import EmbeddingModel, ManagedModel
from pipeline import infra
from pipeline.bus import make_producer
from pipeline.config import Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.consumers.query import run_query_service
from pipeline.control import PauseFollower
from pipeline.jobs import jobs_worker_component, scheduler_component
from pipeline.ops.progress import watch_replays
from pipeline.ops.upgrade import bring_up_to_date
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.store import VectorStore
from pipeline.supervisor import BrokerWatchdog, Supervisor
from pipeline.topics import ensure_topics
from pipeline.wiring import vector_store

log = logging.getLogger(__name__)


def prepare_services(settings: Settings) -> bool:
    """Local broker up (if it is ours) and topics created; raises InfraError otherwise.

    True when this call started the local broker (so `up` stops it again at the end);
    False when the settings point elsewhere or the broker was already running."""
    started = False
    if infra.local_kafka_configured(settings):
        started = not infra.port_open(settings.kafka.local_port)
        infra.start_kafka(settings)
    asyncio.run(ensure_topics(settings.kafka, settings.topics))
    return started


def release_services(settings: Settings, kafka_started: bool, console: Console) -> None:
    """After `up`: stop the local broker it started; say so when one is left running."""
    if kafka_started:
        console.print("stopping the local Kafka broker that `sonicbus up` started ...")
        try:
            infra.stop_kafka(settings)
        except infra.InfraError as exc:
            console.print(f"[red]the local Kafka broker did not stop:[/red] {exc}")
            return
        console.print(f"stopped the local Kafka broker ({settings.kafka.bootstrap_servers})")
    elif infra.local_kafka_configured(settings):
        console.print(
            f"the local Kafka broker ({settings.kafka.bootstrap_servers}) was running before "
            "`sonicbus up` and is left running; stop it with `sonicbus infra down`"
        )


def status_line(
    supervisor: Supervisor,
    watcher: FilesystemWatcher,
    counts: dict[str, int],
    paused: frozenset[str] = frozenset(),
    broker: str = "",
) -> Text:
    parts = [f"[red]{broker}[/red]"] if broker else []
    for name, state in supervisor.states.items():
        colour = {"running": "green", "restarting": "yellow"}.get(state.state, "red")
        restarts = f" ({state.restarts} restarts)" if state.restarts else ""
        parts.append(f"[{colour}]{name} {state.state}[/{colour}]{restarts}")
    known = len(watcher.catalog)
    ready = watcher.ready.is_set()
    scan = f"{known} tracks known" if ready else "scanning"
    stored = ", ".join(
        f"{model}: {'?' if n < 0 else n}{f'/{known}' if ready else ''} embedded"
        + (" [yellow](paused)[/yellow]" if model in paused else "")
        for model, n in counts.items()
    )
    return Text.from_markup(" · ".join([*parts, scan, stored]) + "   (Ctrl+C stops)")


class BacklogView:
    """A progress bar per model under the status line: rows embedded of the tracks known,
    the rate over the last `window_s` (from the row counts), and the ETA it gives."""

    def __init__(self, models: Sequence[str], window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
        )
        self.tasks: dict[str, TaskID] = {
            m: self.progress.add_task(m, total=None, rate="", eta="-") for m in models
        }
        self.samples: dict[str, deque[tuple[float, int]]] = {m: deque() for m in models}

    def update(
        self, counts: dict[str, int], total: int | None, paused: frozenset[str], now: float
    ) -> None:
        for model, done in counts.items():
            if done < 0:  # the store was busy: keep the last figures
                continue
            rate = self.rate(model, done, now)
            left = None if total is None else max(0, total - done)
            if left == 0:
                eta = "done"
            elif left is None or not rate or model in paused:
                eta = "-"
            else:
                eta = str(timedelta(seconds=round(left / rate)))
            self.progress.update(
                self.tasks[model],
                description=f"{model}{' [yellow](paused)[/yellow]' if model in paused else ''}",
                completed=min(done, total) if total is not None else done,
                total=total,
                rate=f"{rate:.2f} tracks/s" if rate and left != 0 else "",
                eta=eta,
            )

    def rate(self, model: str, done: int, now: float) -> float | None:
        """Tracks/s over the window; None until a few seconds of samples exist."""
        samples = self.samples[model]
        if samples and done < samples[-1][1]:  # rows removed: the old samples mislead
            samples.clear()
        samples.append((now, done))
        while samples and now - samples[0][0] > self.window_s:
            samples.popleft()
        first_at, first_done = samples[0]
        if now - first_at < 3.0:
            return None
        return max(0.0, (done - first_done) / (now - first_at)) or None


async def run_main_job(
    settings: Settings,
    roots: Sequence[Path],
    models: Sequence[str],
    console: Console,
    http: bool = True,
    web: bool = True,
    restart_broker: bool = False,
) -> None:
    """`restart_broker`: `prepare_services` started the local broker, so `up` starts it again
    should it die."""
    # The folders up watches are the music roots its HTTP service streams audio from.
    watcher_settings = settings.watcher.model_copy(update={"roots": list(roots)})
    settings = settings.model_copy(update={"watcher": watcher_settings})
    store = vector_store(settings)
    producer = make_producer(settings.kafka, role="watcher")
    await producer.start()
    watcher = FilesystemWatcher(settings, roots, producer, progress=False)
    components = {"watcher": watcher.run}
    for model in models:
        components[f"embed-{model}"] = embedder_component(settings, model, store)
    components["query"] = _query_service(settings, store)
    # Long jobs and their schedules need the store too (Milvus Lite: one process).
    components["jobs"] = jobs_worker_component(settings, store)
    components["scheduler"] = scheduler_component(settings)
    if http:
        # The dashboard shows the supervised components' states (read when asked).
        components["http"] = _http_service(settings, store, web, lambda: supervisor.states)
    supervisor = Supervisor(components)
    supervisor.install_signal_handlers()
    counts: dict[str, int] = dict.fromkeys(models, 0)
    view = BacklogView(models)
    pauses = await _follow_pauses(settings, models)
    watchdog = BrokerWatchdog(settings, restart=restart_broker, supervisor=supervisor)
    watching = asyncio.create_task(watchdog.run(supervisor.stop))
    runner = asyncio.create_task(supervisor.run())
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            while True:  # one last refresh after the stop: the final figures stay on screen
                counts = await asyncio.to_thread(_row_counts, store, models)
                total = len(watcher.catalog) if watcher.ready.is_set() else None
                paused = frozenset(
                    m for m in models if pauses is not None and pauses.board.is_paused(m)
                )
                view.update(counts, total, paused, time.monotonic())
                line = status_line(supervisor, watcher, counts, paused, watchdog.describe())
                live.update(Group(line, view.progress))
                if runner.done():
                    break
                await asyncio.wait({runner}, timeout=1.0)
        if not console.is_terminal:  # rich leaves the last rendered line open there
            console.line()
        await runner
    finally:
        supervisor.request_stop()  # the watchdog too, should the live view have failed
        await watching
        if pauses is not None:
            await pauses.stop()
        await producer.stop()
        store.close()
    console.print("stopped cleanly")


async def _follow_pauses(settings: Settings, models: Sequence[str]) -> PauseFollower | None:
    """The pause orders, for the status line (best effort: None when they cannot be read)."""
    if not models:
        return None
    follower = PauseFollower(settings.kafka, settings.topics, models[0])
    try:
        await follower.start()
    except Exception as exc:
        log.warning("pause orders unreadable, the status line will not show them: %s", exc)
        await follower.stop()
        return None
    return follower


def embedder_component(  # type: ignore[no-untyped-def]
    settings: Settings,
    model: str,
    store: VectorStore | None = None,
    embedding: ManagedModel | None = None,
):
    """One model's embedder as `up` and `sonicbus embed` run it (store: None opens its own;
    embedding: None builds the model from the settings).

    Before it joins its group, `bring_up_to_date` starts the re-embed a changed model
    needs (an upgrade: pipeline.ops.upgrade); beside it a watcher makes a caught-up
    replay's fresh collection the active one, so the switch needs no `sonicbus serve`
    (which watches too; finishing twice is harmless).
    """

    async def upgrade(s: VectorStore, loaded: EmbeddingModel, stop: asyncio.Event) -> None:
        await bring_up_to_date(settings, s, loaded, stop)

    async def component(stop: asyncio.Event) -> None:
        own = store if store is not None else vector_store(settings)
        done = asyncio.Event()  # the watcher ends with the embedder, even when it crashes
        watcher = asyncio.create_task(watch_replays(settings, own, [model], done))
        try:
            await run_embedder(
                settings, model, stop, store=own, model=embedding, before_join=upgrade
            )
        finally:
            done.set()
            await asyncio.gather(watcher, return_exceptions=True)
            if store is None:
                own.close()

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


def _http_service(  # type: ignore[no-untyped-def]
    settings: Settings, store: VectorStore, web: bool = True, services=None
):
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
        runtime.services = services  # for /api/overview
        await runtime.start()
        config = uvicorn.Config(create_app(settings, runtime, web), host=settings.http.host,
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
