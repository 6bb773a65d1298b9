"""What every command shares: one console, one way to fail, one way to show durations.

Errors an operator can cause or meet become one readable line and an exit
code (see `exit_code_for`), never a traceback.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.config import Settings
from pipeline.errors import SonicbusError

console = Console()


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error and return the Exit to raise (`raise fail(...)`)."""
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code=code)


def fail_with(error: SonicbusError) -> typer.Exit:
    """A sonicbus error as a message and the exit code of its kind."""
    return fail(str(error), error.exit_code)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the main callback loaded once for this command."""
    settings: Settings = ctx.obj
    return settings


def parse_time(text: str) -> datetime:
    """ISO 8601 (naive = local time) or an age: 90s, 30m, 2h, 7d (that long ago)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: use ISO 8601 (2025-01-31T20:00) or 30m/2h/7d") from exc
    return moment if moment.tzinfo else moment.astimezone()


def duration(value: float | None) -> str:
    """A duration for people: `-` when unknown, `42 s` under two minutes, else `1:05:00`."""
    if value is None:
        return "-"
    value = float(value)
    return f"{value:.0f} s" if value < 120 else str(timedelta(seconds=int(value)))


def dash(value: object) -> str:
    return "-" if value is None else str(value)
