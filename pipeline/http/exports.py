"""GET /api/export/{model}?format=npz: a model's collection as a file download.

The same file as `sonicbus export --model MODEL FILE` (`pipeline.ops.export`),
written with the running service's own store: while `sonicbus up` holds Milvus
Lite this is the way to a backup, and the dashboard's download. The file is
written to a scratch folder under `home`, sent, then deleted; a failed export
leaves nothing behind. An unknown model, or one with nothing embedded, is 404;
access follows `reader_access` (the file holds the library's paths and tags).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from pipeline.config import Settings
from pipeline.http.auth import reader_access
from pipeline.http.runtime import OpsRuntime
from pipeline.ops.export import export_collection
from pipeline.ops.replay import check_model


def export_router(settings: Settings, runtime_of: Callable[[], OpsRuntime]) -> APIRouter:
    router = APIRouter(
        prefix="/api", tags=["export"], dependencies=[Depends(reader_access(settings.http))]
    )

    @router.get(
        "/export/{model}",
        response_class=FileResponse,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "The file."}},
    )
    async def export_download(
        model: str,
        format: Annotated[Literal["npz"], Query(description="The file format.")] = "npz",
    ) -> FileResponse:
        """Every row of the model's active collection: ids, metadata, tags and vectors."""
        check_model(model)  # 404 before any scratch folder exists
        settings.home.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=".export-", dir=settings.home))
        target = folder / f"{model}.{format}"
        try:
            await asyncio.to_thread(export_collection, runtime_of().store, model, target)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return FileResponse(
            target,
            media_type="application/octet-stream",
            filename=f"sonicbus-{model}-{stamp}.{format}",
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    return router
