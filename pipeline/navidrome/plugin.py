"""The sonicbus plugin for Navidrome: its package for one sonicbus address, and enabling it.

Navidrome (0.63.2) lets a plugin call only the hosts its manifest lists in
`permissions.http.requiredHosts` (matched against the host name, without the
port; loopback and private addresses are refused unless listed), so a
prebuilt package cannot know where the user's sonicbus answers. `package`
writes `sonicbus.ndp` (a zip of manifest.json and plugin.wasm, both with a
fixed date and mode, so the same inputs give the same bytes) with the
sonicbus host filled in; the plugin id is the file name, `sonicbus`.

`NavidromeAdmin` speaks Navidrome's native API as its web UI does: `POST
/auth/login` gives a JWT, sent as `X-ND-Authorization: Bearer <jwt>`; `POST
/api/plugin/rescan` makes a new package known, `PUT /api/plugin/sonicbus`
with `{"config": "<JSON text>"}` sets the plugin's configuration (checked
against the manifest's config schema) and with `{"enabled": true}` enables
it (new plugins are stored disabled). An admin user is needed.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.errors import InvalidInput, NotFound, Unavailable

PLUGIN_ID = "sonicbus"
REPO_PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "navidrome"
DEFAULT_WASM = REPO_PLUGIN / "dist" / "plugin.wasm"
DEFAULT_MANIFEST = REPO_PLUGIN / "manifest.json"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class NavidromeAdminError(Unavailable):
    """Navidrome refused or could not be reached; the message says which call and why."""


def sonicbus_host(url: str) -> str:
    """The host name the manifest must list for `url` (Navidrome matches without the port)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"--sonicbus-url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:9002"
        )
    return parts.hostname


def manifest_for(template: dict[str, Any], hosts: list[str]) -> dict[str, Any]:
    """The manifest with `hosts` as permissions.http.requiredHosts (other fields kept)."""
    manifest = json.loads(json.dumps(template))
    permissions = manifest.setdefault("permissions", {})
    http = permissions.setdefault("http", {})
    http.setdefault("reason", "Asks sonicbus' HTTP service for similar songs and sonic paths")
    http["requiredHosts"] = list(dict.fromkeys(hosts))
    return manifest


def package_bytes(manifest: dict[str, Any], wasm: bytes) -> bytes:
    """The .ndp: manifest.json then plugin.wasm, fixed date and mode (reproducible)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        text = json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n"
        for name, data in (("manifest.json", text), ("plugin.wasm", wasm)):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data, compresslevel=9)
    return buffer.getvalue()


def read_inputs(
    wasm: Path | None = None, manifest: Path | None = None, ndp: Path | None = None
) -> tuple[dict[str, Any], bytes]:
    """(manifest template, plugin.wasm bytes) from a built package or from the build's files
    (plugins/navidrome/build.sh writes dist/plugin.wasm; manifest.json is the template)."""
    if ndp is not None:
        if not ndp.is_file():
            raise NotFound(f"package {ndp} not found")
        with zipfile.ZipFile(ndp) as z:
            return json.loads(z.read("manifest.json")), z.read("plugin.wasm")
    wasm, manifest = wasm or DEFAULT_WASM, manifest or DEFAULT_MANIFEST
    for path in (wasm, manifest):
        if not path.is_file():
            raise NotFound(f"{path} not found: build the plugin first (plugins/navidrome/build.sh)")
    return json.loads(manifest.read_text()), wasm.read_bytes()


def write_package(target_folder: Path, manifest: dict[str, Any], wasm: bytes) -> Path:
    """`sonicbus.ndp` in the folder, replaced atomically (Navidrome may be watching it)."""
    target_folder.mkdir(parents=True, exist_ok=True)
    target = target_folder / f"{PLUGIN_ID}.ndp"
    tmp = target_folder / f".{PLUGIN_ID}.ndp.tmp"
    tmp.write_bytes(package_bytes(manifest, wasm))
    tmp.replace(target)
    return target


def plugin_config(
    schema: dict[str, Any], sonicbus_url: str, token: str | None, extra: dict[str, Any]
) -> dict[str, Any]:
    """The plugin's config values: the sonicbus URL and client token, plus `extra`; keys the
    manifest's config schema does not have are refused (Navidrome would refuse them too)."""
    values: dict[str, Any] = {"sonicbus_url": sonicbus_url.rstrip("/"), **extra}
    if token:
        values["token"] = token
    known = set((schema.get("schema") or {}).get("properties") or {})
    unknown = sorted(set(values) - known) if known else []
    if unknown:
        raise InvalidInput(f"the plugin's config has no {', '.join(unknown)} "
                           f"(it has: {', '.join(sorted(known))})")  # fmt: skip
    return values


def agents_line(current: str | None) -> str:
    """Navidrome's `Agents` setting with sonicbus first (the order is the priority)."""
    agents = [a.strip() for a in (current or "lastfm,spotify,deezer").split(",") if a.strip()]
    return ",".join([PLUGIN_ID, *(a for a in agents if a != PLUGIN_ID)])


@dataclass
class NavidromeAdmin:
    """Navidrome's native API as an admin user (see the module docstring)."""

    url: str
    user: str
    password: str
    timeout_s: float = 30.0

    async def __aenter__(self) -> NavidromeAdmin:
        self._http = httpx.AsyncClient(base_url=self.url.rstrip("/"), timeout=self.timeout_s)
        body = {"username": self.user, "password": self.password}
        data = await self._call("POST", "/auth/login", body, auth=False)
        if not isinstance(data, dict) or not data.get("token"):
            raise NavidromeAdminError(f"{self.url}/auth/login answered no token")
        if not data.get("isAdmin", True):
            raise NavidromeAdminError(f"{self.user} is not a Navidrome admin: plugins need one")
        self._token = str(data["token"])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        headers = {"X-ND-Authorization": f"Bearer {self._token}"} if auth else {}
        try:
            response = await self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise NavidromeAdminError(
                f"{method} {self.url}{path}: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code >= 400:
            detail = response.text.strip()[:500]
            hint = " (is Plugins.Enabled on?)" if response.status_code == 404 else ""
            raise NavidromeAdminError(
                f"{method} {self.url}{path}: HTTP {response.status_code}{hint}: {detail}"
            )
        return response.json() if response.content else None

    async def rescan(self) -> None:
        await self._call("POST", "/api/plugin/rescan")

    async def plugin(self) -> dict[str, Any]:
        data = await self._call("GET", f"/api/plugin/{PLUGIN_ID}")
        return data if isinstance(data, dict) else {}

    async def configure(self, values: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PUT", f"/api/plugin/{PLUGIN_ID}", {"config": json.dumps(values)})  # type: ignore[no-any-return]

    async def enable(self) -> dict[str, Any]:
        return await self._call("PUT", f"/api/plugin/{PLUGIN_ID}", {"enabled": True})  # type: ignore[no-any-return]
