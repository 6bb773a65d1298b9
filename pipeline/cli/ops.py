"""CLI of operations: `sonicbus lag`, `status`, `dlq list|show|retry|purge` and `serve`.

`sonicbus reembed` lives in `reembed.py`. Every command turns the errors
an operator can cause or meet (unknown group, broker down, bad filters) into
one readable line and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from pipeline.cli.common import console, dash, duration, fail, parse_time
from pipeline.config import Settings
from pipeline.ops.dlq import (
    DeadLetterRecord,
    DlqFilter,
    RetryRefused,
    purge_dead_letters,
    read_dead_letters,
    retry_dead_letters,
    summarise,
)
from pipeline.ops.lag import BrokerUnavailable, GroupLag, GroupNotFound, LagReader, LagTracker
from pipeline.ops.status import StatusReport, collect_status, our_groups

dlq_app = typer.Typer(help="Dead letters: list, show, re-publish after a fix, purge.")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def group_table(report: GroupLag) -> Table:
    rate = f"{report.throughput:g}/s" if report.throughput is not None else "-"
    table = Table(
        title=f"{report.group} · {report.state} · {len(report.members)} member(s) · "
        f"lag {report.lag} · pending {report.pending} · oldest {duration(report.lag_seconds)} · "
        f"{rate} · ETA {duration(report.eta_s)}",
        title_justify="left",
    )
    columns = ("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "PENDING",
               "LAG-SECONDS", "CONSUMER-ID", "HOST", "CLIENT-ID")  # fmt: skip
    for name in columns:
        table.add_column(name, justify="right" if name in columns[1:7] else "left")
    for p in report.partitions:
        table.add_row(
            p.topic, str(p.partition), dash(p.committed), str(p.log_end), dash(p.lag),
            str(p.pending), f"{p.lag_seconds:g}", dash(p.consumer_id), dash(p.host),
            dash(p.client_id),
        )  # fmt: skip
    return table


def status_tables(report: StatusReport) -> list[Table]:
    services = Table(title="services", title_justify="left")
    for column in ("service", "address", "state", "detail"):
        services.add_column(column)
    for s in report.services:
        state = "[green]reachable[/green]" if s.reachable else "[red]unreachable[/red]"
        services.add_row(s.name, s.address, state, s.detail)
    groups = Table(title="consumer groups", title_justify="left")
    for column in ("group", "state", "members", "lag", "pending", "oldest", "ETA"):
        groups.add_column(column)
    for g in report.groups:
        groups.add_row(
            g.group, g.state, str(len(g.members)), str(g.lag), str(g.pending),
            duration(g.lag_seconds), duration(g.eta_s),
        )  # fmt: skip
    for name in report.missing_groups:
        groups.add_row(name, "[yellow]never seen[/yellow]", "0", "-", "-", "-", "-")
    models = Table(title="models", title_justify="left")
    for column in ("model", "active collection", "writes to", "replay", "embedders", "model"):
        models.add_column(column)
    for m in report.models:
        models.add_row(
            m.model, m.active_collection, m.target_collection, m.replay or "-",
            str(m.embedders), m.load_state,
        )  # fmt: skip
    collections = Table(title="collections", title_justify="left")
    for column in ("collection", "rows", "role"):
        collections.add_column(column)
    for c in report.collections:
        collections.add_row(c.name, str(c.rows), c.role)
    dlq = Table(title=f"dead letters: {report.dead_letters}", title_justify="left")
    dlq.add_column("stage/group")
    dlq.add_column("records", justify="right")
    for key, count in report.dead_letters_by.items():
        dlq.add_row(key, str(count))
    return [services, groups, models, collections, dlq]


def register(app: typer.Typer) -> None:
    app.command("lag")(lag_command)
    app.command("status")(status_command)
    app.command("serve")(serve_command)
    app.add_typer(dlq_app, name="dlq")


def lag_command(
    ctx: typer.Context,
    group: Annotated[
        str | None, typer.Argument(help="Any group; default: sonicbus' groups.")
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl+C.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 2.0,
    as_json: AsJson = False,
) -> None:
    """Consumer lag per group and partition, as kafka-consumer-groups --describe shows it.

    Plus what that tool leaves out: records pending, age of the oldest unread
    record, throughput and ETA. Without GROUP: sonicbus' groups (embed-<model>,
    query, ops.groups), rows of this install's topics only.
    """
    settings: Settings = ctx.obj
    tracker = LagTracker(settings.ops.rate_window_s)

    async def sample(reader: LagReader) -> list[GroupLag]:
        reports = [await reader.describe(group)] if group else await our_groups(settings, reader)
        if not group:
            for report in reports:
                await reader.fill_ages(report)
        return [tracker.observe(r) for r in reports]

    def emit(reports: list[GroupLag]) -> str:
        return json.dumps({"groups": [r.model_dump(mode="json") for r in reports]})

    async def main() -> None:
        async with LagReader(settings.kafka) as reader:
            reports = await sample(reader)
            if not watch:
                if as_json:
                    print(emit(reports))
                else:
                    for report in reports:
                        console.print(group_table(report))
                    if not reports:
                        console.print(f"no consumer group reads {settings.topics.prefix}* topics")
                return
            if as_json:
                while True:
                    print(emit(reports), flush=True)
                    await asyncio.sleep(interval)
                    reports = await sample(reader)
            with Live(Group(*map(group_table, reports)), console=console) as live:
                while True:
                    await asyncio.sleep(interval)
                    reports = await sample(reader)
                    live.update(Group(*map(group_table, reports)))

    try:
        asyncio.run(main())
    except (GroupNotFound, BrokerUnavailable) as exc:
        raise fail(str(exc).strip("'\"")) from exc
    except KeyboardInterrupt:
        pass


def status_command(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Services, groups and lag, models, collections, dead letters (exit 1: a service is down).

    Models: active collection, replay, embedders and load state (inferred from the bus).
    """
    settings: Settings = ctx.obj
    report = asyncio.run(collect_status(settings))
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        for table in status_tables(report):
            console.print(table)
    if not report.healthy:
        raise typer.Exit(code=1)


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (http.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (http.port).")] = None,
) -> None:
    """The HTTP service: health, metrics, re-embed control, the older HTTP API on the bus.

    OpenAPI at /docs and /openapi.json.
    """
    import uvicorn

    from pipeline.http.app import create_app

    settings: Settings = ctx.obj
    uvicorn.run(
        create_app(settings),
        host=host or settings.http.host,
        port=port or settings.http.port,
        log_level=settings.log_level.lower(),
    )


# -- dead letters ---------------------------------------------------------------

Stage = Annotated[str | None, typer.Option(help="Only this stage (audio, decode, query, ...).")]
Reason = Annotated[str | None, typer.Option(help="Only letters whose error contains this text.")]
GroupOpt = Annotated[str | None, typer.Option("--group", help="Only this consumer group.")]
Key = Annotated[str | None, typer.Option(help="Only this key (track or request id).")]
Since = Annotated[str | None, typer.Option(help="Only since: ISO time or 30m/2h/7d.")]


def _filter(stage: str | None, reason: str | None, group: str | None, key: str | None,
            since: str | None, offsets: list[int] | None = None) -> DlqFilter:  # fmt: skip
    return DlqFilter(
        stage=stage, reason=reason, group=group, key=key,
        since=parse_time(since) if since else None, offsets=offsets or None,
    )  # fmt: skip


def _read(settings: Settings, selection: DlqFilter) -> list[DeadLetterRecord]:
    try:
        return asyncio.run(read_dead_letters(settings.kafka, settings.topics, selection))
    except Exception as exc:
        where = f"{settings.topics.dlq} on {settings.kafka.bootstrap_servers}"
        raise fail(f"reading {where}: {exc!r}") from exc


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context, stage: Stage = None, reason: Reason = None, group: GroupOpt = None,
    key: Key = None, since: Since = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N shown.")] = 50,
    as_json: AsJson = False,
) -> None:  # fmt: skip
    """Dead letters, newest last, with their offset (what show/retry take), stage and reason."""
    records = _read(ctx.obj, _filter(stage, reason, group, key, since))
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in records[-limit:]]))
        return
    table = Table(
        title=f"{len(records)} dead letter(s) · {summarise(records)}", title_justify="left"
    )
    for column in ("offset", "failed at", "stage", "group", "key", "error"):
        table.add_column(column, overflow="fold")
    for r in records[-limit:]:
        letter = r.letter
        table.add_row(
            str(r.offset), f"{letter.failed_at:%Y-%m-%d %H:%M:%S}", letter.stage,
            letter.consumer_group or "-", letter.key or "-",
            f"{letter.error_class}: {letter.message[:200]}",
        )  # fmt: skip
    console.print(table)


@dlq_app.command("show")
def dlq_show(ctx: typer.Context, offset: Annotated[int, typer.Argument(min=0)]) -> None:
    """One dead letter in full (original record included), as JSON."""
    records = _read(ctx.obj, DlqFilter(offsets=[offset]))
    if not records:
        raise fail(f"no dead letter at offset {offset} (purged, or not written yet)")
    print(records[0].model_dump_json(indent=2))


@dlq_app.command("retry")
def dlq_retry(
    ctx: typer.Context,
    offsets: Annotated[list[int] | None, typer.Argument(help="Dead letters to retry.")] = None,
    stage: Stage = None, reason: Reason = None, group: GroupOpt = None, key: Key = None,
    since: Since = None,
    everything: Annotated[bool, typer.Option("--all", help="Retry every dead letter.")] = False,
) -> None:  # fmt: skip
    """Re-publish the original records (key, value, headers) to the topics they failed on."""
    settings: Settings = ctx.obj
    selection = _filter(stage, reason, group, key, since, offsets)
    if selection == DlqFilter() and not everything:
        raise fail("name offsets or a filter (--stage/--reason/--group/--key/--since), or --all")
    records = _read(settings, selection)
    if not records:
        raise fail("no dead letter matches")
    try:
        done = asyncio.run(retry_dead_letters(settings.kafka, settings.topics, records))
    except RetryRefused as exc:
        raise fail(f"{exc}; nothing was re-published") from exc
    for offset, topic in done:
        console.print(f"dlq {offset} -> {topic}")
    console.print(f"re-published {len(done)} record(s)")


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    before: Annotated[
        int | None, typer.Option(min=0, help="Delete letters below this offset.")
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete dead letters from the topic (Kafka DeleteRecords: the log start moves)."""
    settings: Settings = ctx.obj
    if (before is None) == (not everything):
        raise fail("give exactly one of --before OFFSET or --all")
    what = "every dead letter" if everything else f"dead letters below offset {before}"
    if not yes and not typer.confirm(f"delete {what} from {settings.topics.dlq}?"):
        raise typer.Exit(code=1)
    try:
        starts = asyncio.run(purge_dead_letters(settings.kafka, settings.topics, before))
    except Exception as exc:
        raise fail(f"purging {settings.topics.dlq}: {exc!r}") from exc
    for partition, start in starts.items():
        console.print(f"{settings.topics.dlq}[{partition}] now starts at offset {start}")
