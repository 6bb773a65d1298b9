"""`sonicbus cluster`, `sonicbus clean` and `sonicbus jobs ...`: long jobs on the bus.

`cluster` and `clean` publish a job request and say what the worker answered
(accepted, or refused and why); with `--wait` they follow it to the end, with
a progress bar on a terminal. Exit codes: 0 done (or accepted without
--wait), 1 refused / failed / cancelled / no worker answered, 2 bad params.
`jobs worker` and `jobs scheduler` run the worker and the scheduler on their
own (with a Milvus server; on Milvus Lite `sonicbus up` runs both).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.common import console, fail, fail_with
from pipeline.config import Settings
from pipeline.errors import SonicbusError
from pipeline.jobs.client import (
    JobFollow,
    cancel_job,
    job_state,
    list_jobs,
    make_request,
    publish_request,
)
from pipeline.schemas.jobs import JobEvent

jobs_app = typer.Typer(help="Long jobs on the bus: list, follow, cancel; worker and scheduler.")
WaitOption = Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")]
AnswerTimeout = Annotated[
    float, typer.Option("--answer-timeout", help="Seconds to wait for a worker to answer.")
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="KEY=VALUE (VALUE as JSON when it parses), repeatable."),
]


def parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def describe(event: JobEvent) -> str:
    progress = event.progress
    figures = ""
    if progress is not None and progress.total:
        figures = f" {progress.done}/{progress.total}"
        if progress.best_score is not None:
            figures += f" best {progress.best_score:.3f}"
    return f"{event.job_id} {event.status}{figures}: {event.message}".rstrip(": ")


async def _follow(settings: Settings, job_id: str, answer_timeout: float, wait: bool,
                  submit: Any = None) -> JobEvent | None:  # fmt: skip
    async with JobFollow(settings, job_id) as follow:
        if submit is not None:
            await publish_request(settings, submit)
            first = await follow.until_answer(answer_timeout)
            if first is None:
                return None
            console.print(escape(describe(first)), highlight=False)
            if first.final or not wait:
                return first
        if not console.is_terminal:
            return await follow.until_end(
                lambda e: console.print(escape(describe(e)), highlight=False)
            )
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[best]}"), TimeElapsedColumn(),
                      console=console, transient=True) as bar:  # fmt: skip
            task = bar.add_task(job_id, total=None, best="")

            def show(event: JobEvent) -> None:
                p = event.progress
                if p is not None:
                    best = f"best {p.best_score:.3f}" if p.best_score is not None else ""
                    bar.update(task, completed=p.done, total=p.total, best=best)

            return await follow.until_end(show)


def _finish(event: JobEvent | None, wait: bool) -> None:
    if event is None:
        raise fail("no jobs worker answered: is `sonicbus up` or `sonicbus jobs worker` running? "
                    "(the request stays queued on the bus)")  # fmt: skip
    if wait or event.final:
        console.print(escape(describe(event)), highlight=False)
        if event.result:
            print(json.dumps(event.result, indent=2, default=str))
    if event.status in ("refused", "failed", "cancelled"):
        raise typer.Exit(code=1)


def _submit(ctx: typer.Context, kind: str, params: dict[str, Any], wait: bool,
            answer_timeout: float) -> None:  # fmt: skip
    settings: Settings = ctx.obj
    try:
        request = make_request(settings, kind, params, by="cli")
        event = asyncio.run(_follow(settings, request.job_id, answer_timeout, wait, request))
    except SonicbusError as exc:
        raise fail_with(exc) from exc
    _finish(event, wait)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")

    @app.command("cluster")
    def cluster_command(
        ctx: typer.Context,
        wait: WaitOption = False,
        runs: Annotated[int | None, typer.Option(help="Clustering runs.")] = None,
        model: Annotated[str | None, typer.Option("--model", "-m", help="Model.")] = None,
        param: ParamOption = None,
        answer_timeout: AnswerTimeout = 10.0,
    ) -> None:
        """Playlists from clustering the library (a job): written to Navidrome, replacing the
        previous automatic set, and as M3U8 files (jobs.clustering.* are the defaults)."""
        params = parse_params(param)
        if runs is not None:
            params["runs"] = runs
        if model is not None:
            params["model"] = model
        _submit(ctx, "clustering", params, wait, answer_timeout)

    @app.command("mixes")
    def mixes_command(
        ctx: typer.Context,
        wait: WaitOption = False,
        user: Annotated[
            list[str] | None, typer.Option("--user", "-u", help="Only this Navidrome user.")
        ] = None,
        size: Annotated[int | None, typer.Option(help="Songs per mix.")] = None,
        param: ParamOption = None,
        answer_timeout: AnswerTimeout = 10.0,
    ) -> None:
        """Each Navidrome user's daily mixes (a job): built from their plays, favourites and
        ratings, no artist twice in a row, no song again within no_repeat_days, written as
        playlists the user owns (needs an admin in navidrome.user, and navidrome.db_path for
        other users' plays). jobs.daily_mixes.* are the defaults; schedule it with
        jobs.schedules."""
        params = parse_params(param)
        if user:
            params["users"] = user
        if size is not None:
            params["size"] = size
        _submit(ctx, "daily_mixes", params, wait, answer_timeout)

    @app.command("clean")
    def clean_command(
        ctx: typer.Context,
        wait: WaitOption = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report.")] = False,
        model: Annotated[list[str] | None, typer.Option("--model", "-m")] = None,
        answer_timeout: AnswerTimeout = 10.0,
    ) -> None:
        """Reconcile each model's collection with the tracks topic (a job): remove rows of
        tracks that are gone, re-publish tracks without a row; above the safety limit it
        only reports."""
        params: dict[str, Any] = {"dry_run": dry_run} if dry_run else {}
        if model:
            params["models"] = model
        _submit(ctx, "cleaning", params, wait, answer_timeout)

    @jobs_app.command("list")
    def list_command(
        ctx: typer.Context,
        limit: Annotated[int, typer.Option(help="Newest N jobs.")] = 20,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The newest jobs and their states."""
        events = asyncio.run(list_jobs(ctx.obj, limit))
        if as_json:
            print(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
            return
        table = Table(title="jobs")
        for column in ("job", "kind", "status", "progress", "by", "when", "message"):
            table.add_column(column, overflow="fold")
        for e in events:
            p = e.progress
            done = f"{p.done}/{p.total}" if p is not None and p.total else ""
            table.add_row(e.job_id, e.kind or "", e.status, done, e.requested_by,
                          e.at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), e.message)  # fmt: skip
        console.print(table)

    @jobs_app.command("follow")
    def follow_command(ctx: typer.Context, job_id: str) -> None:
        """Follow a job until it ends (a progress bar on a terminal)."""
        settings: Settings = ctx.obj
        try:
            asyncio.run(job_state(settings, job_id))
            event = asyncio.run(_follow(settings, job_id, 0, True))
        except SonicbusError as exc:
            raise fail_with(exc) from exc
        _finish(event, True)

    @jobs_app.command("cancel")
    def cancel_command(ctx: typer.Context, job_id: str) -> None:
        """Ask the worker to stop a job (it stops between steps; nothing half-written)."""
        try:
            asyncio.run(cancel_job(ctx.obj, job_id, by="cli"))
        except SonicbusError as exc:
            raise fail_with(exc) from exc
        console.print(f"cancel requested for {escape(job_id)}", highlight=False)

    @jobs_app.command("worker")
    def worker_command(ctx: typer.Context) -> None:
        """Run the jobs worker (consumer group `jobs`) until Ctrl+C."""
        from pipeline.jobs import jobs_worker_component
        from pipeline.supervisor import Supervisor
        from pipeline.wiring import vector_store

        settings: Settings = ctx.obj
        asyncio.run(_supervise({"jobs": jobs_worker_component(settings, vector_store(settings))},
                               Supervisor))  # fmt: skip

    @jobs_app.command("scheduler")
    def scheduler_command(ctx: typer.Context) -> None:
        """Run the scheduler (publishes each due job of jobs.schedules and the API's)."""
        from pipeline.jobs import scheduler_component
        from pipeline.supervisor import Supervisor

        asyncio.run(_supervise({"scheduler": scheduler_component(ctx.obj)}, Supervisor))


async def _supervise(components: dict[str, Any], supervisor_class: Any) -> None:
    supervisor = supervisor_class(components)
    supervisor.install_signal_handlers()
    await supervisor.run()
