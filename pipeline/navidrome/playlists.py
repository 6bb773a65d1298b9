"""Results as Navidrome playlists, through the Subsonic API: every playlist mode for users
of a vanilla Navidrome (no plugin).

`createPlaylist` with `songId`s makes a new playlist; with the `playlistId` of
an existing one it replaces its songs. So writing "Discover weekly" again
refreshes the user's playlist instead of adding another one of that name.
"""

from __future__ import annotations

from pipeline.config import NavidromeSettings
from pipeline.navidrome.subsonic import SubsonicClient


async def navidrome_playlist(
    navidrome: NavidromeSettings, name: str, track_ids: list[str]
) -> tuple[str, bool]:
    """(playlist id, created?) after writing the user's playlist `name`."""
    n = navidrome
    async with SubsonicClient.from_settings(n) as client:
        body = await client.call("getPlaylists")
        playlists = (body.get("playlists") or {}).get("playlist") or []
        mine = [p for p in playlists if p.get("name") == name and p.get("owner") in (None, n.user)]
        if mine:
            playlist_id = str(mine[0]["id"])
            await client.call("createPlaylist", playlistId=playlist_id, songId=track_ids)
            return playlist_id, False
        body = await client.call("createPlaylist", name=name, songId=track_ids)
        return str((body.get("playlist") or {}).get("id", "")), True
