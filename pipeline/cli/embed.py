"""`sonicbus embed`: one model's embedding consumer."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from models.registry import available_models
from pipeline.config import Settings
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
            # The embedder with its upgrade check and replay watcher (pipeline.mainjob).
            from pipeline.mainjob import embedder_component

            supervisor = Supervisor({f"embed-{model}": embedder_component(settings, model)})
            supervisor.install_signal_handlers()
            await supervisor.run()

        asyncio.run(main())
