"""CLI of operations: `sonicbus lag`, `status`, `dlq list|show|retry|purge` and `serve`.

`sonicbus reembed` lives in `reembed.py`. Every command turns the errors
an operator can cause or meet (unknown group, broker down, bad filters) into
one readable line and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from pipeline.cli.common import console, dash, duration, fail, parse_time
from pipeline.cli.running import ask_running, held_note, lite_held, not_answering, quiet_lite
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
from pipeline.ops.status import StatusReport, collect_status, lag_groups

dlq_app = typer.Typer(help="Dead letters: list, show, re-publish after a fix, purge.")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


WIDE = 120  # below this many columns, tables leave out what needs the width


def rate_text(throughput: float | None) -> str:
    return f"{throughput:g}/s" if throughput is not None else "-"


def group_title(report: GroupLag) -> str:
    return (
        f"{report.group} · {report.state} · {len(report.members)} member(s) · "
        f"lag {report.lag} · pending {report.pending} · oldest {duration(report.lag_seconds)} · "
        f"{rate_text(report.throughput)} · ETA {duration(report.eta_s)}"
    )


def group_table(report: GroupLag) -> Table:
    """The group as Kafka's tool shows it (narrow terminals: the figures without the
    member columns, which follow in one line per member)."""
    table = Table(title=group_title(report), title_justify="left")
    if console.width < WIDE:
        for name in ("TOPIC", "PART", "CURRENT", "LOG-END", "LAG", "PENDING", "AGE"):
            table.add_column(name, justify="left" if name == "TOPIC" else "right", overflow="fold")
        for p in report.partitions:
            table.add_row(
                p.topic, str(p.partition), dash(p.committed), str(p.log_end), dash(p.lag),
                str(p.pending), duration(p.lag_seconds),
            )  # fmt: skip
        members = [f"{m.client_id}@{m.host}: {', '.join(m.assignment) or '-'}"
                   for m in report.members]  # fmt: skip
        if members:
            table.caption = "members: " + "; ".join(members)
            table.caption_justify = "left"
        return table
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


def plain_lines(reports: list[GroupLag]) -> list[str]:
    """One line per group, no control codes: `lag --watch` into a file or a pipe."""
    now = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    return [
        f"{now} {r.group} state={r.state} members={len(r.members)} lag={r.lag} "
        f"pending={r.pending} oldest={r.lag_seconds:g}s throughput={rate_text(r.throughput)} "
        f"eta={duration(r.eta_s).replace(' ', '')}"
        for r in reports
    ]


def groups_table(report: StatusReport) -> Table:
    """Groups with lag, rate and ETA (narrow terminals: without Kafka's own `lag`)."""
    narrow = console.width < WIDE
    table = Table(title="consumer groups", title_justify="left")
    columns = ["group", "state", "members", "lag", "pending", "oldest", "rate", "ETA"]
    if narrow:
        columns.remove("lag")
    for column in columns:
        right = column not in ("group", "state")
        table.add_column(column, justify="right" if right else "left", overflow="fold")
    for g in report.groups:
        cells = [g.group, g.state, str(len(g.members)), str(g.lag), str(g.pending),
                 duration(g.lag_seconds), rate_text(g.throughput), duration(g.eta_s)]  # fmt: skip
        table.add_row(*(cells[:3] + cells[4:] if narrow else cells))
    for name in report.missing_groups:
        table.add_row(name, "[yellow]never seen[/yellow]", "0", *["-"] * (len(columns) - 3))
    return table


def models_table(report: StatusReport) -> Table:
    """Per model its collections, replay, embedders and load state (narrow terminals: the
    collection it writes shown only where it is not the active one)."""
    narrow = console.width < WIDE
    table = Table(title="models", title_justify="left")
    columns = ["model", "active collection", "writes to", "replay", "embedders", "load"]
    if narrow:
        columns.remove("writes to")
    for column in columns:
        table.add_column(column, overflow="fold")
    for m in report.models:
        active, target = m.active_collection, m.target_collection
        if narrow:
            collection = active if target == active else f"{active} (writes to {target})"
            table.add_row(m.model, collection, m.replay or "-", str(m.embedders), m.load_state)
        else:
            table.add_row(m.model, active, target, m.replay or "-", str(m.embedders), m.load_state)
    return table


def status_tables(report: StatusReport) -> list[Table]:
    services = Table(title="services", title_justify="left")
    for column in ("service", "address", "state", "detail"):
        services.add_column(column, overflow="fold")
    for s in report.services:
        state = "[green]reachable[/green]" if s.reachable else "[red]unreachable[/red]"
        services.add_row(s.name, s.address, state, s.detail)
    groups, models = groups_table(report), models_table(report)
    collections = Table(title="collections", title_justify="left")
    for column in ("collection", "rows", "role"):
        collections.add_column(
            column, justify="right" if column == "rows" else "left", overflow="fold"
        )
    for c in report.collections:
        collections.add_row(c.name, str(c.rows), c.role)
    dlq = Table(title=f"dead letters: {report.dead_letters}", title_justify="left")
    dlq.add_column("stage/group", overflow="fold")
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
        return await lag_groups(settings, reader, tracker, group)

    def emit(reports: list[GroupLag]) -> str:
        return json.dumps({"groups": [r.model_dump(mode="json") for r in reports]})

    def show(reports: list[GroupLag]) -> None:
        for report in reports:
            console.print(group_table(report))
        if not reports:
            console.print(f"no consumer group reads {settings.topics.prefix}* topics")

    async def main() -> None:
        async with LagReader(settings.kafka) as reader:
            reports = await sample(reader)
            if not watch:
                if as_json:
                    print(emit(reports))
                else:
                    show(reports)
                return
            if as_json or not console.is_terminal:  # a file or a pipe: plain lines
                while True:
                    lines = [emit(reports)] if as_json else plain_lines(reports)
                    print("\n".join(lines) or "no consumer group", flush=True)
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
    with quiet_lite():
        report = asyncio.run(collect_status(settings))
    milvus = next((s for s in report.services if s.name == "milvus"), None)
    note = ""
    if milvus is not None and not milvus.reachable and lite_held(settings, milvus.detail):
        report, note = _status_of_running(settings, report)
    if as_json:
        print(report.model_dump_json(indent=2))
        if note:
            print(note, file=sys.stderr)
    else:
        if note:
            console.print(note, highlight=False)
        for table in status_tables(report):
            console.print(table)
    if not report.healthy:
        raise typer.Exit(code=1)


def _status_of_running(settings: Settings, report: StatusReport) -> tuple[StatusReport, str]:
    """The running process's status when it holds our Milvus Lite file (see running.py)."""
    answer = ask_running(settings, "/api/status")
    if answer is None or answer.status != 200:
        why = not_answering(settings) if answer is None else f"{answer.url}: {answer.detail}"
        return report, why
    remote = StatusReport.model_validate(answer.body)
    milvus = next((s for s in remote.services if s.name == "milvus"), None)
    if milvus is None or milvus.address != settings.milvus_uri:
        where = milvus.address if milvus else "no Milvus"
        return report, f"{answer.url} serves another database ({where}); {not_answering(settings)}"
    return remote, held_note(settings, answer)


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (http.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (http.port).")] = None,
    no_web: Annotated[
        bool, typer.Option("--no-web", help="Without the web pages; the HTTP API stays.")
    ] = False,
) -> None:
    """The HTTP service: the dashboard at /, health, metrics, re-embed control, the older
    HTTP API on the bus. Off loopback, pages and API ask for a login (http.password or a
    Navidrome account) or a bearer token.

    OpenAPI at /docs and /openapi.json.
    """
    import uvicorn

    from pipeline.http.app import create_app

    settings: Settings = ctx.obj
    # The app decides on the login from the address it is really bound to.
    bound = {"host": host or settings.http.host, "port": port or settings.http.port}
    settings = settings.model_copy(update={"http": settings.http.model_copy(update=bound)})
    uvicorn.run(
        create_app(settings, web=not no_web),
        host=settings.http.host,
        port=settings.http.port,
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
