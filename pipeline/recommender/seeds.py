"""Seeds from a user's listening: Navidrome's plays, stars and ratings.

The seed modes of the Navidrome design, built from its `annotation` table
(read-only SQLite, or the Subsonic API when only a URL is configured):

- `recent`: the most recently played tracks, weighted by recency;
- `favorites`: starred tracks and tracks rated 4 or 5;
- `all`: everything the user interacted with: plays (log-scaled, decayed by
  age), stars and ratings together;
- `discovery`: the seeds of `all`, but results exclude every track the user
  has already played, so only unheard music comes back.

In every mode tracks rated 1 or 2 become dislike seeds (penalties). The
fingerprint request uses `top_plays`: play count x recency, with a
half-life (30 days by default).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.config import NavidromeSettings
from pipeline.navidrome.database import NavidromeDatabase, NavidromeUnavailable, TrackAnnotation
from pipeline.navidrome.subsonic import SubsonicClient

Annotations = list[tuple[str, TrackAnnotation]]


@dataclass
class SeedPlan:
    """Seeds of one request: track id -> weight, dislikes, and tracks to leave out."""

    positive: dict[str, float] = field(default_factory=dict)
    dislikes: dict[str, float] = field(default_factory=dict)
    exclude: set[str] = field(default_factory=set)

    def add(self, track_id: str, weight: float) -> None:
        """A positive weight seeds, a negative one dislikes; repeated ids add up."""
        if weight > 0:
            self.positive[track_id] = self.positive.get(track_id, 0.0) + weight
        elif weight < 0:
            self.dislikes[track_id] = self.dislikes.get(track_id, 0.0) - weight


def recency(played: datetime | None, now: datetime, half_life_days: float) -> float:
    """0.5 ** (age / half-life): 1 for a play now, 0.5 after one half-life; 0 if never."""
    if played is None:
        return 0.0
    if played.tzinfo is None:
        played = played.replace(tzinfo=UTC)
    age_days = max(0.0, (now - played).total_seconds() / 86400)
    return 0.5 ** (age_days / half_life_days)


# What each seed mode reads, for the error that says a user has none of it.
MODE_READS = {
    "recent": "plays",
    "favorites": "stars or ratings of 4-5",
    "all": "plays, stars or ratings",
    "discovery": "plays, stars or ratings",
}


def mode_seeds(
    mode: str,
    annotations: Annotations,
    now: datetime,
    limit: int,
    half_life_days: float = 30.0,
) -> SeedPlan:
    """The seed plan of a Navidrome seed mode (see the module docstring)."""
    plan = SeedPlan()
    scored: list[tuple[float, str]] = []
    for track_id, a in annotations:
        if 0 < a.rating <= 2:
            plan.dislikes[track_id] = 1.0 if a.rating == 1 else 0.5
            continue
        if mode == "recent":
            weight = recency(a.play_date, now, half_life_days) if a.play_count else 0.0
        elif mode == "favorites":
            weight = max(1.0 if a.starred else 0.0, {5: 1.0, 4: 0.7}.get(a.rating, 0.0))
        else:  # all, discovery
            plays = math.log1p(a.play_count) * max(recency(a.play_date, now, half_life_days), 0.1)
            weight = plays + (1.0 if a.starred else 0.0) + max(0, a.rating - 2) * 0.3
        if weight > 0:
            scored.append((weight, track_id))
        if mode == "discovery" and a.play_count > 0:
            plan.exclude.add(track_id)
    scored.sort(key=lambda item: (-item[0], item[1]))
    plan.positive = {track_id: round(weight, 6) for weight, track_id in scored[:limit]}
    return plan


def top_plays(
    annotations: Annotations, now: datetime, limit: int, half_life_days: float
) -> dict[str, float]:
    """The user's sonic fingerprint seeds: play count x recency, the top `limit`.

    Tracks rated 1 or 2 are left out: played, but not liked.
    """
    scored = [
        (a.play_count * recency(a.play_date, now, half_life_days), track_id)
        for track_id, a in annotations
        if a.play_count > 0 and not 0 < a.rating <= 2
    ]
    scored = [(w, t) for w, t in scored if w > 0]
    scored.sort(key=lambda item: (-item[0], item[1]))
    return {track_id: round(weight, 6) for weight, track_id in scored[:limit]}


class SeedSource:
    """Reads one user's annotations from Navidrome, cached briefly (a listing is not free)."""

    def __init__(self, navidrome: NavidromeSettings, ttl_s: float = 60.0) -> None:
        self.navidrome = navidrome
        self.ttl_s = ttl_s
        self._cache: dict[str | None, tuple[float, Annotations]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, navidrome: NavidromeSettings) -> SeedSource | None:
        """None when neither a database nor a Subsonic URL with credentials is configured."""
        if navidrome.db_path is None and not (navidrome.url and navidrome.user):
            return None
        return cls(navidrome)

    def default_user(self) -> str | None:
        return self.navidrome.user

    def annotations(self, user: str | None) -> Annotations:
        """(track id, annotation) of every track `user` played, starred or rated (blocking)."""
        with self._lock:
            cached = self._cache.get(user)
            if cached and time.monotonic() - cached[0] < self.ttl_s:
                return cached[1]
        if self.navidrome.db_path is not None:
            database = NavidromeDatabase.from_settings(self.navidrome)
            tracks = database.read(user).tracks
        else:
            tracks = asyncio.run(self._subsonic_tracks(user))
        found = [(t.id, t.annotation) for t in tracks if t.annotation is not None]
        found = [(i, a) for i, a in found if a.play_count or a.starred or a.rating]
        with self._lock:
            self._cache[user] = (time.monotonic(), found)
        return found

    async def _subsonic_tracks(self, user: str | None):  # type: ignore[no-untyped-def]
        n = self.navidrome
        if user is not None and user != n.user:
            raise NavidromeUnavailable(
                f"the Subsonic API answers for its own user ({n.user}) only, not {user!r}; "
                "configure navidrome.db_path to read other users' plays"
            )
        async with SubsonicClient.from_settings(n) as client:
            return (await client.library(n.page_size)).tracks
