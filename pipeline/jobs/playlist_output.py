"""Where the automatic playlists go: Navidrome (Subsonic API) and a folder of M3U8 files.

Neither is ever left half-replaced:
- Navidrome: the new set is created first, under names ending in the suffix
  (`jobs.clustering.suffix`); if any creation fails, the ones just created are
  deleted again and the previous set stays as it was. Only then are the
  previous automatic playlists (the user's playlists whose names end in the
  suffix) deleted. A deletion that fails leaves an old playlist behind, which
  the next run removes with the rest.
- M3U8: the files are written into a fresh folder next to `m3u_dir`, which
  takes the place of the old one by two renames once Navidrome took the set
  (`stage_m3u` then `commit_m3u`, or `discard_m3u`). The folder belongs to
  sonicbus: anything in it is replaced. It also holds `clusters.json`, every
  track's cluster before post-processing, for whoever wants to look closer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import NavidromeSettings
from pipeline.navidrome.subsonic import SubsonicClient
from pipeline.recommender.clustering import Playlist

log = logging.getLogger(__name__)


def stage_m3u(
    folder: Path,
    playlists: Sequence[Playlist],
    entries: dict[str, tuple[str, str, float]],
    clusters: dict[str, int],
) -> Path:
    """Write the set into a staging folder beside `folder`; returns it.

    `entries`: track id -> (path, "artist - title", duration in seconds)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.new-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    for playlist in playlists:
        lines = ["#EXTM3U", f"#PLAYLIST:{playlist.name}"]
        for track_id in playlist.track_ids:
            path, label, seconds = entries.get(track_id, ("", track_id, 0.0))
            lines.append(f"#EXTINF:{round(seconds)},{label}")
            lines.append(path or f"# {track_id} (no path known)")
        (staging / f"{playlist.name}.m3u8").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (staging / "clusters.json").write_text(json.dumps({"clusters": clusters}), encoding="utf-8")
    return staging


def commit_m3u(staging: Path, folder: Path) -> None:
    """The staged folder becomes `folder`; the previous one is removed."""
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def discard_m3u(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


async def replace_navidrome_playlists(
    navidrome: NavidromeSettings, playlists: Sequence[Playlist], suffix: str
) -> dict[str, Any]:
    """Create the new automatic set, then delete the previous one (see the module doc)."""
    async with SubsonicClient.from_settings(navidrome) as client:
        body = await client.call("getPlaylists")
        existing = (body.get("playlists") or {}).get("playlist") or []
        previous = [
            str(p["id"])
            for p in existing
            if str(p.get("name", "")).endswith(suffix) and p.get("owner") in (None, navidrome.user)
        ]
        created: list[str] = []
        try:
            for playlist in playlists:
                body = await client.call(
                    "createPlaylist", name=f"{playlist.name}{suffix}", songId=playlist.track_ids
                )
                created.append(str((body.get("playlist") or {}).get("id", "")))
        except BaseException:
            for playlist_id in created:
                with contextlib.suppress(Exception):
                    await client.call("deletePlaylist", id=playlist_id)
            raise
        left: list[str] = []
        for playlist_id in previous:
            try:
                await client.call("deletePlaylist", id=playlist_id)
            except Exception as exc:
                log.warning("previous automatic playlist %s not deleted: %s", playlist_id, exc)
                left.append(playlist_id)
    return {"created": created, "deleted": len(previous) - len(left), "left_behind": left}
