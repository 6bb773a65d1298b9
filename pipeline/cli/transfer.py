"""`sonicbus export` and `sonicbus import`: a model's collection to one NPZ file and back.

For backups, for moving from Milvus Lite to a Milvus server, and for analysis;
the file's layout and why it is NPZ are in `pipeline.ops.export`. A progress
bar shows on a terminal only, so scripts and logs get the one summary line.

Milvus Lite serves one process at a time: while `sonicbus up` holds it these
commands cannot open it, and say so; the running service offers the same file
at /api/export/MODEL (the dashboard's download).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from pipeline.cli.common import console, fail, fail_with
from pipeline.config import Settings
from pipeline.errors import SonicbusError
from pipeline.ops.export import TransferSummary, export_collection, import_export
from pipeline.store import StoreUnavailable, VectorStore
from pipeline.wiring import vector_store


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("import")(import_command)


def export_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The .npz file to write (replaced if it exists).")],
    model: Annotated[str, typer.Option("--model", "-m", help="The model to export.")],
    collection: Annotated[
        str | None, typer.Option(help="Another collection than the model's active one.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write a model's collection (ids, metadata, tags, vectors) to one NPZ file."""
    settings: Settings = ctx.obj
    with _store(settings, model, "export") as store, _bar(f"exporting {model}") as progress:
        summary = export_collection(store, model, file, collection, on_progress=progress)
    _report(summary, f"exported {summary.rows} rows of {model} from collection "
            f"{summary.collection} ({summary.dim}-d) to {file} ({_size(summary.bytes)})",
            as_json)  # fmt: skip


def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A file written by `sonicbus export`.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Refuse the file unless it is this model's.")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(help="Load into this collection (created if missing); default: active."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load an exported file into a collection (created if missing); rows upserted by id."""
    settings: Settings = ctx.obj
    with _store(settings, model, "import") as store, _bar(f"importing {file.name}") as progress:
        summary = import_export(store, file, model, collection, on_progress=progress)
    _report(summary, f"imported {summary.rows} rows of {summary.model} ({summary.dim}-d) into "
            f"collection {summary.collection}", as_json)  # fmt: skip


@contextmanager
def _store(settings: Settings, model: str | None, action: str) -> Iterator[VectorStore]:
    """The store, closed after; its errors as one line and their exit code."""
    # Milvus Lite logs a traceback when another process holds its file (the error below says
    # it), and pymilvus warns on every query iterator over Milvus Lite (no server timestamp).
    logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
    logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
    store = vector_store(settings)
    try:
        yield store
    except StoreUnavailable as exc:
        raise fail_with(type(exc)(_held_hint(settings, store, model, action, str(exc)))) from exc
    except SonicbusError as exc:
        raise fail_with(exc) from exc
    except KeyboardInterrupt:
        raise fail(f"{action} interrupted: nothing was written" if action == "export" else
                   "import interrupted: the rows loaded so far stay; import again to finish",
                   130) from None  # fmt: skip
    finally:
        store.close()


def _held_hint(
    settings: Settings, store: VectorStore, model: str | None, action: str, message: str
) -> str:
    if not (store.is_lite and "Open local milvus failed" in message):
        return message
    held = (
        f"Milvus Lite ({store.uri}) is held by another process (a running `sonicbus up` or "
        "`serve`?); it serves one process at a time."
    )
    if action == "import":
        return f"{held} Stop that process, then import (or import into a Milvus server)."
    host = settings.http.host if settings.http.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{host}:{settings.http.port}/api/export/{model}?format=npz"
    return (
        f"{held} Download the export from the running service instead (the dashboard's "
        f"download): {url}"
    )


@contextmanager
def _bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback: a bar on a terminal, nothing otherwise."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TaskProgressColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console, disable=not console.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _report(summary: TransferSummary, line: str, as_json: bool) -> None:
    if as_json:
        print(summary.model_dump_json(indent=2))
    else:
        console.print(line, highlight=False)


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"
