"""The web UI: the operations dashboard at `/`, the library at `/library` and `/track/<id>`
(library_api.py is their API), the jobs page at `/jobs` (jobs_api.py), and the login
page at `/login`.

Plain HTML, CSS and JavaScript modules in `pipeline/http/web/` (shipped as package
data), no framework and no third-party code: the page is one screen of live figures,
which the browser's own parts draw well (EventSource for the live stream, inline SVG
for the chart, <progress>-like bars in CSS), so nothing is downloaded at install or at
run time and there is no build step. Every action of the page is a call of the
HTTP API (`/api/*`, `/reembed/*`, `/auth/*`), with the session of auth.py.

`sonicbus up --no-web` / `serve --no-web` leave this router out: the API stays.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from pipeline.config import Settings
from pipeline.http.auth import browser_session, login_required

ASSETS = Path(__file__).with_name("web")
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".html": "text/html; charset=utf-8",
}
# Only our own files, from our own origin: an injected script or frame has nowhere to load from.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def asset_names() -> set[str]:
    """The files the UI serves (a fixed list: no path from a URL ever reaches the disk)."""
    return {p.name for p in ASSETS.iterdir() if p.suffix in MEDIA_TYPES and p.suffix != ".html"}


def web_router(settings: Settings) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    assets = asset_names()
    required = login_required(settings.http)

    def page(name: str) -> FileResponse:
        return FileResponse(ASSETS / name, media_type=MEDIA_TYPES[".html"], headers=PAGE_HEADERS)

    @router.get("/")
    async def dashboard(request: Request) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("index.html")

    @router.get("/library")
    async def library(request: Request) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("library.html")

    @router.get("/track/{track_id}")
    async def track(request: Request, track_id: str) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("track.html")  # the page reads its id from the address

    @router.get("/map")
    async def music_map(request: Request) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("map.html")

    @router.get("/builder")
    async def builder(request: Request) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("builder.html")  # the playlist builder; playlists_api.py is its API

    @router.get("/jobs")
    async def jobs(request: Request) -> Response:
        if required and browser_session(request) is None:
            return RedirectResponse("/login", status_code=303)
        return page("jobs.html")  # start, follow and cancel jobs, schedules; jobs_api.py

    @router.get("/login")
    async def login_page() -> Response:
        return page("login.html")

    @router.get("/assets/{name}")
    async def asset(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no asset {name!r}")
        path = ASSETS / name
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=PAGE_HEADERS)

    return router
