"""`sonicbus watch` and `sonicbus scan navidrome`: the producers on the command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr
from rich.markup import escape

from pipeline.bus import make_producer
from pipeline.cli.common import console, fail
from pipeline.config import Settings
from pipeline.producers.filesystem import FilesystemWatcher
from pipeline.producers.navidrome import NavidromeScanner, NavidromeSource, source_from_settings
from pipeline.producers.publish import ScanReport
from pipeline.producers.schedule import check_cron
from pipeline.topics import ensure_topics

scan_app = typer.Typer(help="Publish a music library that another program catalogues.")


def register(app: typer.Typer) -> None:
    """Add the producer commands to the `sonicbus` application."""
    app.command("watch")(watch_command)
    app.add_typer(scan_app, name="scan")


@contextlib.asynccontextmanager
async def _producer(settings: Settings, dry_run: bool) -> AsyncIterator[AIOKafkaProducer | None]:
    """A started producer (topics created first), or None for a dry run."""
    if dry_run:
        yield None
        return
    await ensure_topics(settings.kafka, settings.topics)
    producer = make_producer(settings.kafka, role="ingest")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


def _print_report(title: str, report: ScanReport) -> None:
    colour = "green" if report.ok else "red"
    console.print(f"[{colour}]{title}:[/{colour}] {escape(report.summary())}")


def _echo(line: str) -> None:
    """Dry-run output: one unwrapped line per action; file names are not markup."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def watch_command(
    ctx: typer.Context,
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="Music folders (default: watcher.roots from the settings)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Scan once and exit instead of watching.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be published; publish nothing.")
    ] = False,
    navidrome_db: Annotated[
        Path | None,
        typer.Option("--navidrome-db", help="Use Navidrome's track ids from this navidrome.db."),
    ] = None,
) -> None:
    """Scan music folders, then publish every added, changed, moved or deleted track."""
    settings: Settings = ctx.obj
    if navidrome_db is not None:
        navidrome = settings.navidrome.model_copy(update={"db_path": navidrome_db})
        settings = settings.model_copy(update={"navidrome": navidrome})
    try:
        watcher_roots = list(dirs or settings.watcher.roots)
        if not watcher_roots:
            raise ValueError("no music folder given: pass DIR arguments or set watcher.roots")
        report = asyncio.run(_watch(settings, watcher_roots, once=once, dry_run=dry_run))
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    if report is not None and not report.ok:
        raise typer.Exit(code=1)


async def _watch(
    settings: Settings, roots: list[Path], *, once: bool, dry_run: bool
) -> ScanReport | None:
    async with _producer(settings, dry_run) as producer:
        watcher = FilesystemWatcher(
            settings, roots, producer, dry_run=dry_run, progress=True, echo=_echo
        )
        if once:
            report = await watcher.scan_once()
            _print_report("scan", report)
            return report
        stop = asyncio.Event()
        _stop_on_signals(stop)
        task = asyncio.create_task(watcher.run(stop))
        ready = asyncio.create_task(watcher.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if watcher.last_report is not None:
            _print_report("initial scan", watcher.last_report)
        if not task.done():
            console.print(f"watching {', '.join(watcher.roots)} (Ctrl+C to stop)")
        await task
        return None


@scan_app.command("navidrome")
def scan_navidrome(
    ctx: typer.Context,
    db: Annotated[
        Path | None, typer.Option("--db", help="navidrome.db to read (opened read-only).")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="Navidrome server URL.")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Subsonic user name.")] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password", help="Subsonic password (default: SONICBUS_NAVIDROME__PASSWORD)."
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Scan once now, even if a schedule is set.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be published; publish nothing.")
    ] = False,
    schedule: Annotated[
        str | None,
        typer.Option(
            "--schedule",
            help="Cron expression, e.g. '*/30 * * * *' (scan now, then at those times).",
        ),
    ] = None,
) -> None:
    """Publish a Navidrome library (from its database or its Subsonic API) with its track ids."""
    settings: Settings = ctx.obj
    updates: dict[str, object] = {}
    if db is not None:
        updates["db_path"] = db
    if url is not None:
        updates["url"] = url
        if db is None:  # the command line chose the API over a configured database
            updates["db_path"] = None
    if user is not None:
        updates["user"] = user
    if password is not None:
        updates["password"] = SecretStr(password)
    navidrome = settings.navidrome.model_copy(update=updates)
    settings = settings.model_copy(update={"navidrome": navidrome})
    cron = None if once else (schedule or navidrome.schedule)
    try:
        if cron is not None:
            check_cron(cron)
        source = source_from_settings(navidrome)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    report = asyncio.run(_scan(settings, source, cron=cron, dry_run=dry_run))
    if report is not None and not report.ok:
        raise typer.Exit(code=1)


async def _scan(
    settings: Settings, source: NavidromeSource, *, cron: str | None, dry_run: bool
) -> ScanReport | None:
    async with _producer(settings, dry_run) as producer:
        scanner = NavidromeScanner(settings, source, producer, dry_run=dry_run, echo=_echo)
        if cron is None:
            report = await scanner.scan_once()
            _print_report("Navidrome scan", report)
            return report
        stop = asyncio.Event()
        _stop_on_signals(stop)
        console.print(f"scanning {scanner.source.description} now and on '{cron}' (Ctrl+C to stop)")
        await scanner.run(stop, cron)
        return None
