"""The `control` topic: operator commands every embedder follows (pause and resume).

One record per key, the topic compacted, so its latest value per key is the
standing order. Keys: `pause:*` for every model, `pause:<model>` for one. A
model's own key, when present, overrides the `*` one: "pause everything, then
resume musicnn" leaves musicnn running and the rest paused. Pausing or
resuming everything writes `*` and clears (tombstones) the per-model keys, so
the newest command is what holds, whichever way it was given.

`PauseBoard` folds the records into that answer; it is pure (no IO) because the
embedders (`pipeline.control.PauseFollower`) and the ops commands
(`pipeline.ops.pause`) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import Field

from pipeline.schemas.base import Record, SchemaError, utc_now

EVERY_MODEL = "*"
PAUSE_PREFIX = "pause:"


def pause_key(model: str | None) -> str:
    """The record key of a pause command for one model, or for all (None)."""
    return f"{PAUSE_PREFIX}{model or EVERY_MODEL}"


class PauseCommand(Record):
    """Hold (paused) or release embedding, for one model or every model ("*")."""

    model: str = Field(EVERY_MODEL, description='A model name, or "*" for every model.')
    paused: bool
    at: datetime = Field(default_factory=utc_now, description="When the command was given.")
    by: str = Field("", description="Who gave it (cli, http, ...), for the logs.")

    @property
    def key(self) -> str:
        return pause_key(None if self.model == EVERY_MODEL else self.model)


@dataclass
class PauseBoard:
    """The standing pause commands, latest per key (see the module docstring)."""

    commands: dict[str, PauseCommand] = field(default_factory=dict)

    def apply(self, key: bytes | str | None, value: bytes | None) -> None:
        """One record of the control topic; unknown keys and invalid values are ignored
        (a newer sonicbus may add commands; a bad record must not stop an embedder)."""
        if key is None:
            return
        text = key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key
        if not text.startswith(PAUSE_PREFIX):
            return
        if value is None:
            self.commands.pop(text, None)
            return
        try:
            self.commands[text] = PauseCommand.from_bytes(value)
        except SchemaError:
            return

    def command_for(self, model: str) -> PauseCommand | None:
        """The command that holds for `model`: its own, else the one for every model."""
        return self.commands.get(pause_key(model)) or self.commands.get(pause_key(None))

    def is_paused(self, model: str) -> bool:
        command = self.command_for(model)
        return command is not None and command.paused

    @property
    def everything_paused(self) -> bool:
        command = self.commands.get(pause_key(None))
        return command is not None and command.paused

    def named_models(self) -> list[str]:
        """Models that have a command of their own."""
        return sorted(k.removeprefix(PAUSE_PREFIX) for k in self.commands if k != pause_key(None))

    def paused_since(self, models: list[str]) -> datetime | None:
        """When the oldest pause that still holds for one of `models` (or for all) began."""
        moments = [c.at for m in models if (c := self.command_for(m)) is not None and c.paused]
        if self.everything_paused:
            moments.append(self.commands[pause_key(None)].at)
        return min(moments) if moments else None
