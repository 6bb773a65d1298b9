"""Pause and resume embedding: a home server sometimes needs its CPU back.

`pause` writes a command to the compacted `control` topic (see
`pipeline.schemas.control` for its keys and `pipeline.control` for why the bus);
every embedder follows that topic and, while paused, fetches nothing new and
commits nothing new. The batch in hand is finished and committed first, so
nothing is lost, and the consumers stay in their groups: `resume` goes on from
the committed offsets and works the backlog off. The same commands serve the
CLI (`sonicbus pause|resume`), the HTTP API (/api/embedding) and the dashboard,
from any process that reaches the broker.

`threads` in the state is this process's `embed.threads` (the CPU cap of the
embedders it runs, or the one it was configured with); None: not capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, Field

from pipeline.config import Settings
from pipeline.control import publish, read_board
from pipeline.ops.replay import check_model
from pipeline.schemas.control import PauseBoard, PauseCommand, pause_key


class PauseState(BaseModel):
    """What GET /api/embedding answers (and the overview's `embedding`)."""

    paused: bool = Field(
        description="True while any embedder holds: everything paused, or one model paused."
    )
    threads: int | None = Field(description="embed.threads: the embedders' CPU cap (None: all).")
    models: dict[str, bool] = Field(
        default_factory=dict,
        description="Per model (the configured ones and any named in a command): paused?",
    )
    since: datetime | None = Field(None, description="When the oldest pause that holds began.")


def state_of(settings: Settings, board: PauseBoard) -> PauseState:
    names = sorted({*settings.embed.models, *board.named_models()})
    models = {name: board.is_paused(name) for name in names}
    return PauseState(
        paused=board.everything_paused or any(models.values()),
        threads=settings.embed.threads,
        models=models,
        since=board.paused_since(names),
    )


async def pause_state(settings: Settings) -> PauseState:
    """The standing pause orders, read from the bus (ControlUnavailable if it is down)."""
    return state_of(settings, await read_board(settings.kafka, settings.topics.control))


async def pause(
    settings: Settings, models: Sequence[str] | None = None, by: str = ""
) -> PauseState:
    """Hold embedding for `models` (None: every model); see the module docstring."""
    return await _command(settings, models, paused=True, by=by)


async def resume(
    settings: Settings, models: Sequence[str] | None = None, by: str = ""
) -> PauseState:
    """Let the embedders of `models` (None: every model) go on where they stopped."""
    return await _command(settings, models, paused=False, by=by)


async def _command(
    settings: Settings, models: Sequence[str] | None, *, paused: bool, by: str
) -> PauseState:
    for model in models or ():  # every name checked before anything is written
        check_model(model)
    board = await read_board(settings.kafka, settings.topics.control)
    records: list[tuple[str, bytes | None]]
    if models:
        commands = [PauseCommand(model=m, paused=paused, by=by) for m in dict.fromkeys(models)]
        records = [(c.key, c.to_bytes()) for c in commands]
    else:
        # Everything: the newest order holds for all, so the per-model ones are cleared.
        everything = PauseCommand(paused=paused, by=by)
        records = [(pause_key(m), None) for m in board.named_models()]
        records.append((everything.key, everything.to_bytes()))
    await publish(settings.kafka, settings.topics, records)
    for key, value in records:
        board.apply(key, value)
    return state_of(settings, board)
