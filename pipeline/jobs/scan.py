"""The `scan` job: one Navidrome scan (`sonicbus scan navidrome`), so a schedule can run it."""

from __future__ import annotations

import dataclasses
from typing import Any

from pipeline.errors import InvalidInput, Unavailable
from pipeline.jobs.context import JobContext
from pipeline.producers.navidrome import NavidromeScanner, source_from_settings


async def run_scan(ctx: JobContext) -> dict[str, Any]:
    if ctx.request.params:
        raise InvalidInput(f"the scan job takes no params, got {sorted(ctx.request.params)}")
    try:
        source = source_from_settings(ctx.settings.navidrome)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc
    ctx.progress(0, None, message="scanning Navidrome")
    report = await NavidromeScanner(ctx.settings, source, ctx.producer).scan_once()
    if report.error:
        raise Unavailable(f"Navidrome scan failed: {report.error}")
    figures = {k: v for k, v in dataclasses.asdict(report).items() if k != "started"}
    return {**figures, "message": report.summary()}
