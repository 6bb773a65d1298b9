"""Running several long-lived components in one process, supervised.

`sonicbus up` runs the watcher, one embedder per model and (later) the query
service side by side. A component that crashes is logged and restarted with
backoff instead of taking the others down; Ctrl-C or SIGTERM sets one stop
event that every component watches, so shutdown finishes the batch in hand
and commits before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=backoff)
            backoff = min(self.max_backoff_s, backoff * 2)
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
