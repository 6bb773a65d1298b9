"""`sonicbus navidrome install-plugin`: the sonicbus plugin into a Navidrome server.

Writes `sonicbus.ndp` for the given sonicbus address (pipeline/navidrome/plugin.py
says why a prebuilt package cannot know it) into Navidrome's plugin folder, or
into the current folder with a note where to copy it when Navidrome runs
elsewhere; then, through Navidrome's API, makes it known (rescan), sets its
config (sonicbus URL, client token) and enables it; and prints the `Agents`
line to add (Navidrome reads Agents at start: a change needs a restart).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.common import console, fail, fail_with
from pipeline.config import Settings
from pipeline.errors import SonicbusError
from pipeline.navidrome.plugin import (
    PLUGIN_ID,
    NavidromeAdmin,
    agents_line,
    manifest_for,
    plugin_config,
    read_inputs,
    sonicbus_host,
    write_package,
)

navidrome_app = typer.Typer(help="The sonicbus plugin for Navidrome.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(navidrome_app, name="navidrome")


@navidrome_app.command("install-plugin")
def install_plugin_command(
    ctx: typer.Context,
    sonicbus_url: Annotated[
        str,
        typer.Option(
            help="Where Navidrome reaches sonicbus' HTTP service, e.g. http://127.0.0.1:9002."
        ),
    ],
    navidrome_url: Annotated[
        str | None, typer.Option(help="Navidrome's URL (navidrome.url); unset: no API calls.")
    ] = None,
    user: Annotated[str | None, typer.Option(help="A Navidrome admin (navidrome.user).")] = None,
    plugin_folder: Annotated[
        Path | None,
        typer.Option(help="Navidrome's Plugins.Folder; unset: write here and say where to copy."),
    ] = None,
    client_token: Annotated[
        str | None, typer.Option(help="Token the plugin sends (default: http.client_token).")
    ] = None,
    package: Annotated[
        Path | None,
        typer.Option(
            help="A built sonicbus.ndp to start from (default: the "
            "build's dist/plugin.wasm and manifest.json)."
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option("--config", help="More plugin config, KEY=VALUE (models, timeout_ms, ...)."),
    ] = None,
    agents: Annotated[
        str | None, typer.Option(help="Navidrome's current Agents (to print the new line).")
    ] = None,
) -> None:
    """Package the plugin for SONICBUS_URL, install and enable it (password:
    SONICBUS_NAVIDROME__PASSWORD)."""
    settings: Settings = ctx.obj
    try:
        host = sonicbus_host(sonicbus_url)
        template, wasm = read_inputs(ndp=package)
        manifest = manifest_for(template, [host])
        token = client_token or (
            settings.http.client_token.get_secret_value() if settings.http.client_token else None
        )
        values = plugin_config(manifest.get("config") or {}, sonicbus_url, token,
                               _pairs(config or []))  # fmt: skip
        folder = plugin_folder or Path.cwd()
        written = write_package(folder, manifest, wasm)
    except SonicbusError as exc:
        raise fail_with(exc) from exc
    console.print(f"wrote {written} (requiredHosts: {host})")
    if plugin_folder is None:
        console.print(f"copy it into Navidrome's plugin folder (Plugins.Folder) as {PLUGIN_ID}.ndp")
    url = navidrome_url or settings.navidrome.url
    login = user or settings.navidrome.user
    if url and login:
        password = settings.navidrome.password
        if password is None:
            raise fail("the Navidrome password: set SONICBUS_NAVIDROME__PASSWORD")
        try:
            state = asyncio.run(_enable(url, login, password.get_secret_value(), values))
        except SonicbusError as exc:
            raise fail_with(exc) from exc
        console.print(f"enabled plugin {PLUGIN_ID} on {url} "
                      f"(enabled={state.get('enabled')}, config: {', '.join(values)})")  # fmt: skip
    else:
        shown = json.dumps({k: v for k, v in values.items() if k != "token"})
        console.print(f"no --navidrome-url/--user: enable it in Navidrome's UI (Plugins), "
                      f"config {shown} (and the token)")  # fmt: skip
    console.print("add to navidrome.toml (or ND_AGENTS), then restart Navidrome:")
    console.print(f'  Agents = "{agents_line(agents)}"', markup=False, highlight=False)


def _pairs(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail(f"--config {item!r}: expected KEY=VALUE")
        try:
            values[key] = json.loads(value)  # numbers stay numbers
        except ValueError:
            values[key] = value
    return values


async def _enable(url: str, user: str, password: str, values: dict[str, Any]) -> dict[str, Any]:
    async with NavidromeAdmin(url, user, password) as admin:
        await admin.rescan()
        await admin.plugin()  # NotFound-like errors name the call
        await admin.configure(values)
        return await admin.enable()
