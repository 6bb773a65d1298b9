"""`sonicbus pause` and `sonicbus resume`: give the CPU back, then take it again.

The command goes on the bus (pipeline.ops.pause), so every embedder obeys it:
the ones `sonicbus up` runs and any `sonicbus embed` elsewhere. Paused
embedders finish and commit the batch in hand, then fetch nothing; resume goes
on from there. Works from a second terminal while `up` runs.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from pipeline.cli.common import console
from pipeline.config import Settings
from pipeline.ops.pause import PauseState, pause, resume

ModelOption = Annotated[
    list[str] | None,
    typer.Option("--model", "-m", help="Only this model (repeatable); default: every model."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the state as JSON.")]


def describe(state: PauseState) -> str:
    """One line: what is paused, what runs, and the CPU cap."""
    held = [m for m, paused in state.models.items() if paused]
    running = [m for m, paused in state.models.items() if not paused]
    if not state.paused:
        what = "embedding runs" + (f" ({', '.join(running)})" if running else "")
    elif not running:
        what = "embedding paused" + (f" ({', '.join(held)})" if held else "")
    else:
        others = ", ".join(held) or "every other model"
        what = f"embedding paused for {others}; runs for {', '.join(running)}"
    cap = f"{state.threads} threads (embed.threads)" if state.threads else "all cores"
    return f"{what} · CPU: {cap}"


def _show(state: PauseState, as_json: bool, hint: str) -> None:
    if as_json:
        print(state.model_dump_json(indent=2))
        return
    console.print(describe(state), highlight=False)
    if hint:
        console.print(hint, highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("pause")
    def pause_command(
        ctx: typer.Context, model: ModelOption = None, json: JsonOption = False
    ) -> None:
        """Pause embedding (every model, or --model M): the batch in hand is finished and
        committed, then nothing is fetched until `sonicbus resume`. Nothing is lost."""
        settings: Settings = ctx.obj
        state = asyncio.run(pause(settings, model or None, by="cli"))
        _show(state, json, "the batch in hand finishes first; `sonicbus resume` goes on")

    @app.command("resume")
    def resume_command(
        ctx: typer.Context, model: ModelOption = None, json: JsonOption = False
    ) -> None:
        """Resume embedding (every model, or --model M) where it stopped."""
        settings: Settings = ctx.obj
        state = asyncio.run(resume(settings, model or None, by="cli"))
        _show(state, json, "")
