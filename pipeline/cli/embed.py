"""`sonicbus embed`: one model's embedding consumer."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from models.registry import available_models
from pipeline.config import Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.supervisor import Supervisor


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_command(
        ctx: typer.Context,
        model: Annotated[
            str, typer.Option("--model", "-m", help=f"One of: {', '.join(available_models())}.")
        ] = "musicnn",
    ) -> None:
        """Run one model's embedding consumer (group embed-MODEL); start more to scale out."""
        settings: Settings = ctx.obj
        if model not in available_models():
            raise typer.BadParameter(f"unknown model {model!r}", param_hint="--model")

        async def main() -> None:
            supervisor = Supervisor(
                {f"embed-{model}": lambda stop: run_embedder(settings, model, stop)}
            )
            supervisor.install_signal_handlers()
            await supervisor.run()

        asyncio.run(main())
