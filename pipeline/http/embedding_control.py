"""/api/embedding: pause and resume embedding, and the embedders' CPU cap.

- GET /api/embedding -> {"paused", "threads", "models", "since"} (reader access);
- POST /api/embedding/pause and /api/embedding/resume, with an optional body
  {"models": [...]} (none: every model) -> the same shape (admin access).

The commands go on the bus (`pipeline.ops.pause`), so the embedders obey them
whichever process runs them. An unknown model answers 404, a bad body 422,
the broker down 503 (the SonicbusError handler of the app), and nothing is
written unless every named model exists.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from pipeline.config import Settings
from pipeline.http.auth import admin_access, reader_access
from pipeline.http.bridge import MODEL_NAME
from pipeline.ops.pause import PauseState, pause, pause_state, resume

ModelName = Annotated[str, Field(pattern=MODEL_NAME)]


class EmbeddingCommand(BaseModel):
    """The optional body of pause/resume."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelName] | None = Field(
        None, max_length=64, description="Models to pause/resume; none, [] or null: every model."
    )


def _models(command: EmbeddingCommand | None) -> list[str] | None:
    return (command.models or None) if command is not None else None


def embedding_router(settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/api/embedding", tags=["embedding"])
    reader = [Depends(reader_access(settings.http))]
    admin = [Depends(admin_access(settings.http))]

    @router.get("", response_model=PauseState, dependencies=reader)
    async def embedding_state() -> PauseState:
        return await pause_state(settings)

    @router.post("/pause", response_model=PauseState, dependencies=admin)
    async def embedding_pause(body: EmbeddingCommand | None = None) -> PauseState:
        return await pause(settings, _models(body), by="http")

    @router.post("/resume", response_model=PauseState, dependencies=admin)
    async def embedding_resume(body: EmbeddingCommand | None = None) -> PauseState:
        return await resume(settings, _models(body), by="http")

    return router
