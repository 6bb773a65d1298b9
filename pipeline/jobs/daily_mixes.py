"""The `daily_mixes` job: for each Navidrome user, mixes grown from their own listening.

Each mix (`jobs.daily_mixes.mixes`) is one query to the query service for that
user: `fingerprint` (plays x recency) or `recommend` in a seed mode (recent,
favorites, all, discovery), which read the user's plays, stars and ratings from
Navidrome. The answer then follows radio rules:

- no two songs of one artist in a row (the ranking is walked, and a song whose
  artist just played waits for the next place another artist cannot take);
- no song again in the same mix within `no_repeat_days`: the songs of this
  user's mix in earlier runs are read from the `job-events` topic (each run's
  final event lists them) and excluded from the query.

Writing: all mixes are computed first (a cancel is honoured until then), then
each is written as a playlist owned by its user: an existing one has its songs
replaced in one Subsonic call; a new one is made by the admin and handed to the
user (`pipeline.navidrome.admin`), and deleted again if the hand-over fails. A
playlist is never left half-written; a mix whose write failed is reported and
does not count as played for the no-repeat rule.

Reading other users' plays needs `navidrome.db_path` on the query service
(the Subsonic API answers for its own user only); writing needs an admin.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.client import QueryClient, QueryTimeout
from pipeline.errors import InvalidInput, Unavailable
from pipeline.job_settings import DailyMixSettings, MixSpec
from pipeline.jobs.context import JobContext
from pipeline.jobs.events import read_job_board
from pipeline.navidrome.admin import NavidromeAdmin
from pipeline.navidrome.database import NavidromeUnavailable
from pipeline.navidrome.subsonic import SubsonicClient
from pipeline.schemas.base import describe_validation_error, utc_now
from pipeline.schemas.jobs import JobBoard
from pipeline.schemas.queries import FingerprintRequest, RecommendRequest, ScoredTrack

log = logging.getLogger(__name__)

KIND = "daily_mixes"


class MixTrack(BaseModel):
    """A song of a written mix, as the job's result lists it (and the next run reads)."""

    id: str
    artist: str | None = None
    title: str | None = None


class WrittenMix(BaseModel):
    playlist_id: str
    created: bool
    tracks: list[MixTrack]


def mix_options(defaults: DailyMixSettings, params: dict[str, Any]) -> DailyMixSettings:
    """The settings with the job's params applied; unknown or invalid params: InvalidInput."""
    unknown = sorted(set(params) - set(DailyMixSettings.model_fields))
    if unknown:
        known = ", ".join(DailyMixSettings.model_fields)
        raise InvalidInput(f"unknown daily_mixes params {unknown}; known: {known}")
    try:
        options = DailyMixSettings.model_validate({**defaults.model_dump(), **params})
    except ValidationError as exc:
        raise InvalidInput(f"daily_mixes params: {describe_validation_error(exc)}") from exc
    names = [m.name for m in options.mixes]
    if len(set(names)) != len(names):
        raise InvalidInput(f"daily_mixes params: mix names must differ, got {names}")
    return options


def recent_mix_tracks(
    board: JobBoard, now: datetime, days: float
) -> dict[tuple[str, str], set[str]]:
    """(user, mix name) -> the songs it held in runs that ended within `days`."""
    since = now - timedelta(days=days)
    found: dict[tuple[str, str], set[str]] = {}
    for event in board.jobs.values():
        if event.kind != KIND or event.status != "done" or event.at < since:
            continue
        for user, report in ((event.result or {}).get("users") or {}).items():
            for name, mix in (report.get("mixes") or {}).items():
                ids = {str(t.get("id")) for t in mix.get("tracks") or [] if isinstance(t, dict)}
                found.setdefault((user, name), set()).update(ids)
    return found


def radio_order(ranked: list[ScoredTrack], size: int) -> list[ScoredTrack]:
    """Up to `size` songs, best first, never two of one artist in a row.

    At each place the best remaining song whose artist differs from the last
    one's is taken; when only the last artist's songs remain, the mix ends
    there (shorter, but the rule holds). Songs without an artist never clash."""
    remaining = list(ranked)
    chosen: list[ScoredTrack] = []
    last: str | None = None
    while remaining and len(chosen) < size:
        pick = next((t for t in remaining if not last or _artist(t) != last), None)
        if pick is None:
            break
        remaining.remove(pick)
        chosen.append(pick)
        last = _artist(pick)
    return chosen


def _artist(track: ScoredTrack) -> str:
    return (track.artist or "").strip().casefold()


def mix_request(
    spec: MixSpec, user: str, options: DailyMixSettings, exclude: set[str]
) -> FingerprintRequest | RecommendRequest:
    """The query of one user's mix: a pool twice the mix, so the radio rules have room."""
    common: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "user_id": user,
        "limit": min(2 * options.size, 500),
        "models": options.models,
        "exclude_track_ids": sorted(exclude)[:10_000],
    }
    if spec.source == "fingerprint":
        return FingerprintRequest(**common)
    return RecommendRequest(seed_mode=spec.source, **common)


async def plan_mixes(
    ctx: JobContext, options: DailyMixSettings, users: list[str], warnings: list[str]
) -> dict[str, dict[str, list[ScoredTrack]]]:
    """Every user's mixes, asked of the query service; a mix that cannot be made is a warning."""
    board = await read_job_board(ctx.settings.kafka, ctx.settings.topics)
    history = recent_mix_tracks(board, utc_now(), options.no_repeat_days)
    planned: dict[str, dict[str, list[ScoredTrack]]] = {}
    async with QueryClient(ctx.settings) as client:
        for done, user in enumerate(users):
            ctx.check_cancelled()
            ctx.progress(done, len(users), message=f"mixes of {user}")
            for spec in options.mixes:
                recent = history.get((user, spec.name), set())
                request = mix_request(spec, user, options, recent)
                try:
                    reply = await client.ask(request, timeout=options.answer_timeout_s)
                except QueryTimeout as exc:
                    raise Unavailable(
                        f"the query service did not answer in {options.answer_timeout_s:g} s "
                        "(is `sonicbus query` or `sonicbus up` running?)"
                    ) from exc
                label = f"{user}: {spec.name}"
                if not reply.ok:
                    reason = reply.error.message if reply.error else "no answer"
                    warnings.append(f"{label}: not made: {reason}")
                    continue
                warnings.extend(f"{label}: {w}" for w in reply.warnings)
                tracks = radio_order(reply.tracks, options.size)
                if not tracks:
                    why = "no songs left to choose from"
                    if recent:  # a small library runs out of songs the window allows
                        why += (
                            f" (its {len(recent)} songs of the last {options.no_repeat_days:g} "
                            "days are not repeated: jobs.daily_mixes.no_repeat_days)"
                        )
                    warnings.append(f"{label}: not made: {why}")
                    continue
                if len(tracks) < options.size:
                    warnings.append(f"{label}: {len(tracks)} songs of {options.size} wanted")
                planned.setdefault(user, {})[spec.name] = tracks
    ctx.progress(len(users), len(users), message="writing the playlists")
    return planned


async def write_mix(
    subsonic: SubsonicClient,
    admin: NavidromeAdmin,
    existing: list[dict[str, Any]],
    owner: tuple[str, str],
    name: str,
    track_ids: list[str],
) -> tuple[str, bool]:
    """(playlist id, created?) after the user's playlist `name` holds exactly `track_ids`."""
    user, user_id = owner
    mine = [p for p in existing if p.get("name") == name and p.get("owner") == user]
    if mine:
        playlist_id = str(mine[0]["id"])
        await subsonic.call("createPlaylist", playlistId=playlist_id, songId=track_ids)
        return playlist_id, False
    body = await subsonic.call("createPlaylist", name=name, songId=track_ids)
    playlist_id = str((body.get("playlist") or {}).get("id", ""))
    if user != subsonic.user:
        try:
            await admin.give_playlist(playlist_id, user_id)
        except BaseException:
            with contextlib.suppress(Exception):
                await subsonic.call("deletePlaylist", id=playlist_id)
            raise
    return playlist_id, True


async def run_daily_mixes(ctx: JobContext) -> dict[str, Any]:
    options = mix_options(ctx.settings.jobs.daily_mixes, ctx.request.params)
    navidrome = ctx.settings.navidrome
    warnings: list[str] = []
    async with NavidromeAdmin(navidrome) as admin:
        known = await admin.users()
    users = options.users or sorted(known)
    for user in [u for u in users if u not in known]:
        warnings.append(f"Navidrome has no user {user!r}: no mixes for it")
    users = [u for u in users if u in known]
    if not users:
        raise InvalidInput("; ".join(warnings) or "Navidrome has no users")

    planned = await plan_mixes(ctx, options, users, warnings)

    report: dict[str, dict[str, Any]] = {}
    written = failed = 0
    first_failure = ""
    async with (
        SubsonicClient.from_settings(navidrome) as subsonic,
        NavidromeAdmin(navidrome) as admin,
    ):
        body = await subsonic.call("getPlaylists")
        existing = (body.get("playlists") or {}).get("playlist") or []
        for user, mixes in planned.items():
            for name, tracks in mixes.items():
                ids = [t.track_id for t in tracks]
                try:
                    playlist_id, created = await write_mix(
                        subsonic, admin, existing, (user, known[user]), name, ids
                    )
                except NavidromeUnavailable as exc:
                    failed += 1
                    first_failure = first_failure or str(exc)
                    warnings.append(f"{user}: {name}: not written: {exc}")
                    continue
                written += 1
                mix = WrittenMix(
                    playlist_id=playlist_id,
                    created=created,
                    tracks=[
                        MixTrack(id=t.track_id, artist=t.artist, title=t.title) for t in tracks
                    ],
                )
                report.setdefault(user, {"mixes": {}})["mixes"][name] = mix.model_dump()
    if failed and not written:
        raise Unavailable(f"no mix could be written: {first_failure}")
    for warning in warnings:
        log.warning("daily mixes: %s", warning)
    return {
        "users": report,
        "written": written,
        "warnings": warnings,
        "message": f"{written} mixes written for {len(report)} of {len(users)} users"
        + (f"; {len(warnings)} warnings" if warnings else ""),
    }
