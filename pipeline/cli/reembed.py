"""`sonicbus reembed`: start, follow, cancel, resume, discard and inspect a replay.

Started in the foreground it shows a progress bar (processed/total, rate, ETA,
failures) until the group caught up, then switches a fresh collection active.
Ctrl+C only stops watching: the replay goes on, and `--status` (from any
terminal) or `sonicbus serve` finishes it. `--embed` also runs the model's
embedder in this process for the length of the replay: the way to replay on
Milvus Lite, which serves one process at a time. While `sonicbus up` holds Milvus
Lite, `--status` asks the running process over its HTTP API (running.py).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pipeline.cli.common import console, duration, fail, parse_time
from pipeline.cli.running import (
    LITE_HELD,
    ask_running,
    held_note,
    lite_held,
    not_answering,
    other_store,
    quiet_lite,
)
from pipeline.config import Settings
from pipeline.ops.lag import BrokerUnavailable, LagReader
from pipeline.ops.progress import ReplayProgress, ReplayRate, finish_replay, replay_progress
from pipeline.ops.replay import (
    ReplayError,
    cancel_replay,
    discard_replay,
    resume_replay,
    start_replay,
)
from pipeline.store import StoreUnavailable, VectorStore
from pipeline.wiring import vector_store


def progress_table(p: ReplayProgress) -> Table:
    r = p.replay
    table = Table(
        title=f"replay {r.id} of {r.model}: {r.status}", title_justify="left", show_header=False
    )
    table.add_column("what")
    table.add_column("value")
    rows = {
        "processed": f"{p.processed}/{p.total} ({p.percent}%)",
        "rate": f"{p.rate:.2f} tracks/s" if p.rate else "-",
        "ETA": duration(p.eta_s),
        "failures (dlq)": str(p.failures),
        "pending in group": str(p.pending),
        "embedders": str(p.members),
        "writes to": f"{r.collection} ({p.rows if p.rows is not None else 0} rows)",
        "active collection": p.active_collection,
        "started": f"{r.started_at:%Y-%m-%d %H:%M:%S} UTC",
        "mode": ", ".join(
            x for x in ("fresh" if r.fresh else "in place", "forced" if r.force else "") if x
        ),
    }
    if r.note:
        rows["note"] = r.note
    for key, value in rows.items():
        table.add_row(key, value)
    return table


async def follow(
    settings: Settings, store: VectorStore, model: str, embedding_here: bool = False
) -> ReplayProgress:
    """Show the bar until the replay completes (and switch) or stops being `running`."""
    rate = ReplayRate()
    hinted = embedding_here
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("failures {task.fields[failures]}"),
    )
    async with LagReader(settings.kafka) as reader:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"re-embedding {model}", total=None, rate="-", eta="-", failures=0)
            while True:
                p = await replay_progress(settings, store, model, reader, rate)
                bar.update(
                    task,
                    completed=p.processed,
                    total=p.total,
                    rate=f"{p.rate:.2f}/s" if p.rate else "-/s",
                    eta=duration(p.eta_s),
                    failures=p.failures,
                )
                if p.replay.status != "running":
                    return p
                if p.caught_up:
                    return await finished(store, p)
                if p.members == 0 and not hinted:
                    bar.console.print(
                        f"waiting for embedders: start `sonicbus embed --model {model}` "
                        "(or pass --embed)"
                    )
                    hinted = True
                await asyncio.sleep(1.0)


async def _with_embedder(settings: Settings, store: VectorStore, model: str) -> ReplayProgress:
    from pipeline.consumers.embedder import run_embedder

    stop = asyncio.Event()
    embedder = asyncio.create_task(run_embedder(settings, model, stop, store=store))
    try:
        return await follow(settings, store, model, embedding_here=True)
    finally:
        stop.set()
        await asyncio.wait_for(embedder, timeout=120)


async def finished(store: VectorStore, p: ReplayProgress) -> ReplayProgress:
    """Finish a caught-up replay (switching a fresh collection active); the progress after."""
    done = await finish_replay(store, p)
    if done is None:
        return p
    state = await asyncio.to_thread(store.model_state, p.replay.model, True)
    return p.model_copy(update={"replay": done, "active_collection": state.active})


def register(app: typer.Typer) -> None:
    app.command("reembed")(reembed_command)


def reembed_command(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="The model to re-embed.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Replay every track (the default).")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="Replay tracks published since: ISO time or 30m/2h/7d.")
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="Embed into a new collection; it becomes active once caught up.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Re-embed unchanged tracks too.")] = False,
    drop_old: Annotated[bool, typer.Option(help="--fresh: drop the old collection after.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the group's members to stop.")] = False,
    wait_timeout: Annotated[float | None, typer.Option(help="Seconds --wait waits.")] = None,
    detach: Annotated[bool, typer.Option(help="Start it and return (no progress bar).")] = False,
    embed: Annotated[
        bool, typer.Option(help="Run the embedder in this process meanwhile.")
    ] = False,
    cancel: Annotated[bool, typer.Option(help="Stop the running replay where it is.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue a cancelled replay.")] = False,
    discard: Annotated[bool, typer.Option(help="End a cancelled replay for good.")] = False,
    status: Annotated[bool, typer.Option(help="Show progress (and finish if caught up).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="--status as JSON.")] = False,
) -> None:
    """Re-embed a model's library by replaying `tracks`; progress, cancel, resume, status.

    The group's members must be stopped first (Kafka's rule; --wait waits).
    --fresh embeds into a new collection that becomes active once caught up.
    """
    settings: Settings = ctx.obj
    actions = [name for name, on in (("--cancel", cancel), ("--resume", resume),
               ("--discard", discard), ("--status", status)) if on]  # fmt: skip
    if len(actions) > 1:
        raise fail(f"{' and '.join(actions)} cannot be combined")
    if from_beginning and since:
        raise fail("--from-beginning and --since cannot be combined")
    starting = [n for n, on in (("--fresh", fresh), ("--force", force), ("--since", since),
                ("--drop-old", drop_old), ("--detach", detach)) if on]  # fmt: skip
    if actions and starting:
        raise fail(f"{', '.join(starting)} only apply when starting a replay, not {actions[0]}")
    moment = parse_time(since) if since else None
    wait_s = (wait_timeout or settings.ops.group_wait_timeout_s) if wait else None
    store = vector_store(settings)

    async def main() -> ReplayProgress | None:
        if cancel:
            replay = await cancel_replay(store, model)
            console.print(f"replay {replay.id} of {model} cancelled: embedders hold; "
                          f"`--resume` continues it, `--discard` ends it")  # fmt: skip
            return None
        if resume:
            replay = await resume_replay(store, model)
            console.print(f"replay {replay.id} of {model} resumed")
        elif discard:
            replay = await discard_replay(settings, store, model, wait_s)
            console.print(f"replay {replay.id} of {model} discarded; writes go to the active "
                          f"collection again")  # fmt: skip
            return None
        elif status:
            async with LagReader(settings.kafka) as reader:
                p = await replay_progress(settings, store, model, reader)
            return await finished(store, p)
        else:
            replay = await start_replay(
                settings, store, model, fresh=fresh, force=force, since=moment,
                drop_old=drop_old, wait_s=wait_s,
            )  # fmt: skip
            console.print(
                f"replay {replay.id}: group {replay.group} reset to replay {replay.total} "
                f"record(s) into {replay.collection}"
            )
            if detach:
                return None
        if embed:
            return await _with_embedder(settings, store, model)
        return await follow(settings, store, model)

    note = ""
    try:
        with quiet_lite():
            result = asyncio.run(main())
    except (ReplayError, StoreUnavailable, BrokerUnavailable) as exc:
        if not (status and lite_held(settings, str(exc))):
            raise fail(_hint(str(exc), store)) from exc
        result, note = _progress_of_running(settings, model)
    except KeyboardInterrupt:
        console.print(
            f"stopped watching; the replay goes on: `sonicbus reembed -m {model} --status`"
        )
        return
    finally:
        store.close()
    if result is None:
        return
    if as_json:
        print(result.model_dump_json(indent=2))
        if note:
            print(note, file=sys.stderr)
    else:
        if note:
            console.print(note, highlight=False)
        console.print(progress_table(result))


def _progress_of_running(settings: Settings, model: str) -> tuple[ReplayProgress, str]:
    """`--status` from the running process that holds our Milvus Lite file (running.py)."""
    why = other_store(settings)
    if why is not None:
        raise fail(why)
    answer = ask_running(settings, f"/reembed/{model}")
    if answer is None:
        raise fail(not_answering(settings))
    if answer.status != 200:
        raise fail(f"{answer.detail} (answered by the running sonicbus, {answer.url})")
    return ReplayProgress.model_validate(answer.body), held_note(settings, answer)


def _hint(message: str, store: VectorStore) -> str:
    if store.is_lite and any(words in message for words in LITE_HELD):
        return (
            f"{message}: Milvus Lite ({store.uri}) serves one process at a time; stop the "
            "process holding it (sonicbus up/embed/serve) and use `reembed --embed`, or use a "
            "Milvus server"
        )
    return message
