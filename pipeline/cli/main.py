"""The `sonicbus` application: global options, and the commands of the local setup.

Settings are loaded once, in the callback, and reach every command as `ctx.obj`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline import infra
from pipeline.cli import (
    embed,
    jobs,
    navidrome,
    ops,
    pause,
    producers,
    query,
    reembed,
    transfer,
)
from pipeline.cli.common import console, fail, fail_with, settings_of
from pipeline.config import Settings, load_settings
from pipeline.errors import SonicbusError
from pipeline.logs import setup_logging
from pipeline.topics import ensure_topics, list_topics

app = typer.Typer(
    name="sonicbus",
    help="Music embedding and recommendation pipeline on Kafka and Milvus, for Navidrome.",
    no_args_is_help=True,
    add_completion=False,
)
infra_app = typer.Typer(help="Local Kafka broker and Milvus for development and the default run.")
schemas_app = typer.Typer(help="The wire contract: JSON Schemas of every topic.")
app.add_typer(infra_app, name="infra")
app.add_typer(schemas_app, name="schemas")


@app.callback()
def main_callback(
    ctx: typer.Context,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR (SONICBUS_LOG_LEVEL).")
    ] = None,
    json_logs: Annotated[
        bool, typer.Option("--json-logs", help="One JSON object per log line.")
    ] = False,
) -> None:
    overrides: dict[str, object] = {}
    if log_level:
        overrides["log_level"] = log_level.upper()
    if json_logs:
        overrides["log_format"] = "json"
    settings = load_settings(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    ctx.obj = settings


@infra_app.command("up")
def infra_up(
    ctx: typer.Context,
    milvus_server: Annotated[
        bool, typer.Option(help="Also start the embedded Milvus standalone server.")
    ] = False,
) -> None:
    """Start the local Kafka broker (if the settings point at it), create topics, check Milvus."""
    settings = settings_of(ctx)
    try:
        if infra.local_kafka_configured(settings):
            infra.start_kafka(settings)
        if milvus_server:
            infra.start_milvus_server(settings)
        created = asyncio.run(ensure_topics(settings.kafka, settings.topics))
    except infra.InfraError as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        raise fail(f"Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    if created:
        console.print(f"created topics: {', '.join(created)}")
    _print_status(settings)


@infra_app.command("down")
def infra_down(ctx: typer.Context) -> None:
    """Stop the local Kafka broker and the embedded Milvus server, if they run."""
    settings = settings_of(ctx)
    try:
        infra.stop_kafka(settings)
        infra.stop_milvus_server(settings)
    except infra.InfraError as exc:
        raise fail(str(exc)) from exc
    console.print("local services stopped")


@infra_app.command("status")
def infra_status(ctx: typer.Context) -> None:
    """Is Kafka reachable (and which topics exist)? Is Milvus reachable?"""
    if not _print_status(settings_of(ctx)):
        raise typer.Exit(code=1)


def _print_status(settings: Settings) -> bool:
    statuses = [asyncio.run(infra.kafka_status(settings)), infra.milvus_status(settings)]
    table = Table(title="sonicbus services")
    for column in ("service", "address", "state", "detail"):
        table.add_column(column)
    for status in statuses:
        state = "[green]reachable[/green]" if status.reachable else "[red]unreachable[/red]"
        items = ", ".join(f"{name} ({n})" for name, n in sorted(status.items.items()))
        detail = status.detail + (f": {items}" if items else "")
        table.add_row(status.name, status.address, state, detail)
    console.print(table)
    return all(s.reachable for s in statuses)


@app.command("topics")
def topics_command(
    ctx: typer.Context,
    create: Annotated[bool, typer.Option(help="Create missing sonicbus topics first.")] = False,
) -> None:
    """List the topics on the broker with their partition counts."""
    settings = settings_of(ctx)
    try:
        if create:
            asyncio.run(ensure_topics(settings.kafka, settings.topics))
        topics = asyncio.run(list_topics(settings.kafka))
    except Exception as exc:
        raise fail(f"Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    table = Table(title=f"topics on {settings.kafka.bootstrap_servers}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    for name, partitions in sorted(topics.items()):
        table.add_row(name, str(partitions))
    console.print(table)


@app.command("config")
def config_command(
    ctx: typer.Context,
    describe: Annotated[
        bool, typer.Option("--describe", help="List every setting: env var, default, meaning.")
    ] = False,
) -> None:
    """Print the effective settings (env SONICBUS_*, TOML file, defaults) as JSON."""
    if describe:
        from pipeline.config import describe_settings

        table = Table(title="sonicbus settings (TOML keys are the dotted names)")
        for column in ("setting", "environment variable", "default", "meaning"):
            table.add_column(column, overflow="fold")
        for row in describe_settings():
            table.add_row(*row)
        console.print(table)
        return
    settings = settings_of(ctx)
    console.print_json(settings.model_dump_json())


@schemas_app.command("export")
def schemas_export(
    folder: Annotated[Path, typer.Argument(help="Folder to write <topic>.schema.json files into.")],
) -> None:
    """Write the JSON Schema of every topic's records, for clients in other languages."""
    from pipeline.schemas import export_json_schemas

    for path in export_json_schemas(folder):
        console.print(str(path))


@schemas_app.command("show")
def schemas_show(
    family: Annotated[str, typer.Argument(help="tracks, embeddings, dlq, requests or replies")],
) -> None:
    """Print one topic family's JSON Schema."""
    from pipeline.schemas import json_schemas

    schemas = json_schemas()
    if family not in schemas:
        raise fail(f"unknown topic family {family!r}; choose from {', '.join(schemas)}")
    print(json.dumps(schemas[family], indent=2))


@app.command("up")
def up_command(
    ctx: typer.Context,
    music_dirs: Annotated[
        list[Path], typer.Argument(help="Music folders to scan, watch and embed.")
    ],
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Embedding model(s); default: embed.models setting."),
    ] = None,
    no_http: Annotated[
        bool, typer.Option("--no-http", help="Without the HTTP service (http.host:http.port).")
    ] = False,
    no_web: Annotated[
        bool, typer.Option("--no-web", help="Without the web pages; the HTTP API stays.")
    ] = False,
) -> None:
    """The main job: local Kafka + Milvus, the watcher, the embedders, the query and HTTP
    services (the Navidrome plugin's way in), supervised."""
    from models.registry import available_models
    from pipeline.mainjob import prepare_services, release_services, run_main_job

    settings = settings_of(ctx)
    missing = [str(d) for d in music_dirs if not d.is_dir()]
    if missing:
        raise fail(f"music folder not found: {', '.join(missing)}")
    models = model or settings.embed.models
    unknown = [m for m in models if m not in available_models()]
    if unknown:
        raise fail(f"unknown model(s) {unknown}; available: {', '.join(available_models())}")
    http = f"{settings.http.host}:{settings.http.port}"
    if not no_http and infra.port_open(settings.http.port, settings.http.host):
        raise fail(f"HTTP port {http} is taken: set http.port (SONICBUS_HTTP__PORT) or --no-http")
    try:
        kafka_started = prepare_services(settings)
    except infra.InfraError as exc:
        raise fail(str(exc)) from exc
    except Exception as exc:
        raise fail(f"Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    console.print(
        f"Kafka {settings.kafka.bootstrap_servers} · Milvus {settings.milvus_uri} · "
        f"models {', '.join(models)} · music {', '.join(map(str, music_dirs))}"
        + ("" if no_http else f" · HTTP http://{http}" + ("" if no_web else " (dashboard: /)"))
    )
    try:
        asyncio.run(run_main_job(settings, music_dirs, models, console, http=not no_http,
                                 web=not no_web, restart_broker=kafka_started))  # fmt: skip
    finally:  # Ctrl+C: what up started stops with it (the broker too, if it was ours)
        release_services(settings, kafka_started, console)


# The commands of each group, after the local setup's own (`sonicbus --help` lists them so).
producers.register(app)
embed.register(app)
pause.register(app)
query.register(app, schemas_app)
ops.register(app)
reembed.register(app)
transfer.register(app)
navidrome.register(app)
jobs.register(app)


def main() -> None:
    """The console script: a sonicbus error that no command handled is one line, not a
    traceback, with its kind's exit code (see pipeline.errors)."""
    try:
        app()
    except SonicbusError as exc:
        raise SystemExit(fail_with(exc).exit_code) from None


if __name__ == "__main__":
    main()
