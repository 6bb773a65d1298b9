"""Navidrome's own (native) API as its admin: the users, and giving a playlist to one of them.

The Subsonic API makes a playlist for the user who calls it, and sonicbus knows
one password: the configured user's. Per-user mixes must belong to each user, so
they are made through the Subsonic API (as the admin) and then handed over with
the native API's `PUT /api/playlist/{id} {"ownerId": ...}`, which Navidrome
allows its admins only. Replacing the songs of a user's playlist later needs no
hand-over: Subsonic `createPlaylist` with a `playlistId` works for an admin on
any playlist, in one transaction.
"""

from __future__ import annotations

from typing import Any

import httpx

from pipeline.config import NavidromeSettings
from pipeline.navidrome.database import NavidromeUnavailable


class NavidromeAdmin:
    """A logged-in admin session of the native API; every failure is NavidromeUnavailable."""

    def __init__(self, navidrome: NavidromeSettings) -> None:
        n = navidrome
        if not (n.url and n.user and n.password):
            raise NavidromeUnavailable(
                "per-user playlists need navidrome.url, navidrome.user and navidrome.password "
                "of a Navidrome admin"
            )
        self.url = n.url.rstrip("/")
        self.user = n.user
        self._password = n.password.get_secret_value()
        self.timeout_s = n.timeout_s
        self._http: httpx.AsyncClient | None = None
        self._token = ""

    async def __aenter__(self) -> NavidromeAdmin:
        self._http = httpx.AsyncClient(timeout=self.timeout_s)
        try:
            answer = await self._http.post(
                f"{self.url}/auth/login",
                json={"username": self.user, "password": self._password},
            )
        except httpx.HTTPError as exc:
            await self.__aexit__()
            raise NavidromeUnavailable(f"Navidrome {self.url}: cannot log in: {exc}") from exc
        if answer.status_code != 200:
            await self.__aexit__()
            raise NavidromeUnavailable(
                f"Navidrome {self.url}: login of {self.user} refused (HTTP {answer.status_code})"
            )
        body = answer.json()
        if not body.get("isAdmin"):
            await self.__aexit__()
            raise NavidromeUnavailable(
                f"Navidrome user {self.user} is not an admin: only an admin can write "
                "playlists owned by other users"
            )
        self._token = str(body.get("token", ""))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._http is None:
            raise RuntimeError("use `async with NavidromeAdmin(...)`")
        try:
            answer = await self._http.request(
                method,
                f"{self.url}/api/{path}",
                json=body,
                headers={"X-ND-Authorization": f"Bearer {self._token}"},
            )
        except httpx.HTTPError as exc:
            raise NavidromeUnavailable(
                f"Navidrome {self.url}: {method} /api/{path}: {exc}"
            ) from exc
        if answer.status_code >= 400:
            raise NavidromeUnavailable(
                f"Navidrome {self.url}: {method} /api/{path} answered HTTP {answer.status_code}"
            )
        return answer.json() if answer.content else None

    async def users(self) -> dict[str, str]:
        """User name -> Navidrome user id, for every user."""
        listed = await self._call("GET", "user")
        return {str(u["userName"]): str(u["id"]) for u in listed or []}

    async def give_playlist(self, playlist_id: str, owner_id: str) -> None:
        await self._call("PUT", f"playlist/{playlist_id}", {"ownerId": owner_id})
