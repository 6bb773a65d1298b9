"""Running several long-lived components in one process, supervised.

`sonicbus up` runs the watcher, one embedder per model and (later) the query
service side by side. A component that crashes is logged and restarted with
backoff instead of taking the others down; Ctrl-C or SIGTERM sets one stop
event that every component watches, so shutdown finishes the batch in hand
and commits before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pipeline import infra
from pipeline.config import Settings
from pipeline.logs import kafka_noise

log = logging.getLogger(__name__)

Component = Callable[[asyncio.Event], Awaitable[None]]


@dataclass
class ComponentState:
    name: str
    state: str = "starting"
    restarts: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, components: dict[str, Component], max_backoff_s: float = 30.0) -> None:
        self.components = components
        self.max_backoff_s = max_backoff_s
        self.stop = asyncio.Event()
        self.states = {name: ComponentState(name) for name in components}
        self._retry = asyncio.Event()

    def retry_now(self) -> None:
        """Restart the components waiting out a backoff now, their backoff reset: what they
        needed (the broker) is back, and a crashed watcher must not sleep 30 s more."""
        self._retry.set()
        self._retry = asyncio.Event()  # the next crash waits for the next call

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("stopping: finishing the work in hand")
            self.stop.set()

    async def _keep_running(self, name: str, component: Component) -> None:
        state = self.states[name]
        backoff = 1.0
        while not self.stop.is_set():
            state.state = "running"
            try:
                await component(self.stop)
                if self.stop.is_set():
                    break
                state.last_error = "exited unexpectedly"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s crashed; restarting in %.0f s", name, backoff)
            state.state = "restarting"
            state.restarts += 1
            retry = self._retry
            await _first_of(self.stop, retry, timeout=backoff)
            backoff = 1.0 if retry.is_set() else min(self.max_backoff_s, backoff * 2)
        state.state = "stopped"

    async def run(self, grace_s: float = 30.0) -> None:
        tasks = [
            asyncio.create_task(self._keep_running(name, component), name=name)
            for name, component in self.components.items()
        ]
        await self.stop.wait()
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            log.warning("%s did not stop in %.0f s; cancelling it", task.get_name(), grace_s)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class BrokerWatchdog:
    """Follows the Kafka brokers under `sonicbus up`, and restarts the local one `up` started.

    Why: a broker killed under `up` (a crash, the OOM killer) left it printing thousands of
    client errors a minute until a person ran `sonicbus infra up`. Now the log says once that
    the broker is unreachable and once that it is back and after how long; the clients'
    connection errors meanwhile are held by `kafka_noise` (pipeline/logs.py), which also wakes
    this watchdog the moment they start. A broker `up` did not start (one that ran before, or
    a remote cluster) is waited for, never started by `up`. When the broker is back, the
    components that crashed meanwhile restart at once (`Supervisor.retry_now`).
    """

    def __init__(
        self,
        settings: Settings,
        restart: bool,
        supervisor: Supervisor | None = None,
        interval_s: float = 1.0,
        grace_s: float = 15.0,
        summary_every_s: float = 60.0,
    ) -> None:
        self.address = settings.kafka.bootstrap_servers
        self.settings = settings
        self.restart = restart
        self.local = infra.local_kafka_configured(settings)
        self.supervisor = supervisor
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.summary_every_s = summary_every_s
        self.endpoints = [_host_port(item) for item in self.address.split(",") if item.strip()]
        self.down_since: float | None = None
        self.restarts = 0

    def reachable(self) -> bool:
        """Does any bootstrap server accept a TCP connection? (Blocking: run in a thread.)"""
        return any(infra.port_open(port, host) for host, port in self.endpoints)

    def describe(self) -> str:
        """For the status line: empty while the broker answers."""
        if self.down_since is None:
            return ""
        return f"Kafka unreachable for {time.monotonic() - self.down_since:.0f} s"

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        look = asyncio.Event()
        kafka_noise.watcher = lambda: loop.call_soon_threadsafe(look.set)
        summary_at = time.monotonic()
        retry_in = 5.0
        try:
            while not stop.is_set():
                await _first_of(stop, look, timeout=self.interval_s)
                look.clear()
                if stop.is_set():
                    break
                if await asyncio.to_thread(self.reachable):
                    now = time.monotonic()
                    if self.down_since is not None:
                        self._came_back(now)
                        # The reconnect errors of the grace period belong to the outage.
                        loop.call_later(self.grace_s, kafka_noise.take_held)
                        summary_at, retry_in = now, 5.0
                    elif now >= summary_at + self.summary_every_s:
                        self._summarise(now - summary_at)
                        summary_at = now
                    await asyncio.sleep(0.2)  # a burst of held errors wakes us once, not each
                    continue
                if self.down_since is None:
                    self._went_down()
                if self.restart and not await self._restart():
                    await _first_of(stop, asyncio.Event(), timeout=retry_in)
                    retry_in = min(60.0, retry_in * 2)
        finally:
            kafka_noise.watcher = None

    def _went_down(self) -> None:
        self.down_since = time.monotonic()
        kafka_noise.outage_began()
        if self.restart:
            then = "`sonicbus up` started it, so it starts it again now"
        elif self.local:
            then = ("it was running before `sonicbus up`, which waits for it: start it again "
                    "with `sonicbus infra up`")  # fmt: skip
        else:
            then = "waiting for it"
        log.warning("Kafka broker %s is unreachable; %s (the Kafka clients' errors meanwhile "
                    "are folded into the message that it is back)", self.address, then,
                    extra={"folded": 0})  # fmt: skip

    def _came_back(self, now: float) -> None:
        assert self.down_since is not None
        gone_s = now - self.down_since
        self.down_since = None
        held = kafka_noise.outage_ended(self.grace_s)
        how = " (restarted by `sonicbus up`)" if self.restart and self.restarts else ""
        log.info("Kafka broker %s is back after %.0f s%s; %d client errors meanwhile were "
                 "folded into this message", self.address, gone_s, how, held,
                 extra={"folded": held, "outage_s": round(gone_s, 1)})  # fmt: skip
        if self.supervisor is not None:
            self.supervisor.retry_now()

    def _summarise(self, window_s: float) -> None:
        """Connection errors held while the broker answered (a rebalance, a leader moving):
        one line a minute says how many and the latest."""
        held, latest = kafka_noise.take_held()
        if held:
            log.warning("%d Kafka client errors in the last %.0f s while the broker answered; "
                        "the latest: %s", held, window_s, latest,
                        extra={"folded": held})  # fmt: skip

    async def _restart(self) -> bool:
        """Start the local broker again (the infra script waits until it answers)."""
        try:
            await asyncio.to_thread(infra.start_kafka, self.settings)
        except infra.InfraError as exc:
            log.warning("the local Kafka broker did not start again: %s", exc, extra={"folded": 0})
            return False
        self.restarts += 1
        return True


async def _first_of(stop: asyncio.Event, look: asyncio.Event, timeout: float) -> None:
    """Until either event is set, or `timeout` seconds."""
    waits = {asyncio.create_task(stop.wait()), asyncio.create_task(look.wait())}
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)
