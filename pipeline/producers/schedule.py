"""Running a job on a cron schedule (croniter), until asked to stop.

A failing run is logged and the schedule goes on: a Navidrome server that is
down at 03:00 is usually up again at 03:15.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from croniter import croniter

log = logging.getLogger(__name__)


def check_cron(expression: str) -> str:
    """The expression, if croniter understands it (5 fields, or 6 with seconds last)."""
    if not croniter.is_valid(expression):
        raise ValueError(
            f"invalid cron expression {expression!r}: expected e.g. '*/15 * * * *' "
            "(minute hour day month weekday)"
        )
    return expression


def next_run(expression: str, after: datetime | None = None) -> datetime:
    base = after or datetime.now().astimezone()
    return croniter(expression, base).get_next(datetime)


async def run_on_schedule(
    job: Callable[[], Awaitable[object]],
    expression: str,
    stop_event: asyncio.Event,
    *,
    run_first: bool = True,
) -> int:
    """Run `job` now (if `run_first`) and at every time the expression names; returns the
    number of runs. The next time is computed after each run, so a slow run is not
    followed by a burst of catch-up runs."""
    check_cron(expression)
    runs = 0
    if run_first:
        runs += await _run(job)
    while not stop_event.is_set():
        due = next_run(expression)
        delay = max(0.0, (due - datetime.now().astimezone()).total_seconds())
        log.info("next scheduled run at %s", due.isoformat(timespec="seconds"))
        try:
            await asyncio.wait_for(stop_event.wait(), timeout=delay)
            break
        except TimeoutError:
            pass
        runs += await _run(job)
    return runs


async def _run(job: Callable[[], Awaitable[object]]) -> int:
    try:
        await job()
    except Exception:
        log.exception("scheduled run failed; the schedule continues")
    return 1
