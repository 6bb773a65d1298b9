"""The `path` request: a playlist that travels from one track to another in N steps.

Step i of N aims at the point t = i / (N - 1) between the start and end
vectors: linear interpolation (then normalised), or spherical (slerp, which
moves at constant angular speed, so the middle steps are not crowded near
the chord's midpoint). Each step takes the track nearest its point.

A step "fails" when the track nearest its point is already on the path
(neighbouring points often share a nearest track in a sparse region). By
default a failed step is merged into the previous one, so the path is
shorter and never repeats a track; with `exact_length` the step takes the
nearest track not yet used, so the path has exactly N tracks. Start and end
are always the first and last track.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import InvalidInput, NotFound
from pipeline.recommender.common import Candidate, Outcome, QueryContext
from pipeline.recommender.diversity import artist_key
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.songs import resolve_song


def interpolate(start: np.ndarray, end: np.ndarray, t: float, spherical: bool) -> np.ndarray:
    """The unit vector a fraction t of the way from `start` to `end` (both unit)."""
    if spherical:
        cos = float(np.clip(start @ end, -1.0, 1.0))
        angle = float(np.arccos(cos))
        if angle > 1e-4 and abs(np.pi - angle) > 1e-4:
            sin = np.sin(angle)
            point = (np.sin((1 - t) * angle) * start + np.sin(t * angle) * end) / sin
            return (point / np.linalg.norm(point)).astype(np.float32)
    point = (1 - t) * start + t * end
    norm = float(np.linalg.norm(point))
    return (point / norm if norm > 1e-8 else start).astype(np.float32)


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    indexes = ctx.models()
    index = indexes[0]
    if len(indexes) > 1:
        ctx.warn(f"path travels through one model's space: {index.model}")
    start, end = request.start_track_id, request.end_track_id
    refs = {"start": request.start, "end": request.end}
    if request.start is not None:
        start = resolve_song(indexes, request.start)
    if request.end is not None:
        end = resolve_song(indexes, request.end)
    unresolved = [f"{n} song {r.describe()}" for n, r in refs.items() if r is not None and
                  (start if n == "start" else end) is None]  # fmt: skip
    if unresolved:
        ctx.warn(
            f"not in sonicbus' library (unknown, or not embedded yet): {'; '.join(unresolved)}"
        )
        return Outcome(tracks=[])
    if start == end and request.start is not None and index.known([start]):
        ctx.warn("start and end are the same song: the path is that song alone")
        return Outcome(tracks=[Candidate(start, 1.0, {index.model: 1.0})])
    if start == end:
        raise InvalidInput("start and end are the same track: a path needs two tracks")
    found, vectors = index.vectors([start, end])
    missing = [t for t in (start, end) if t not in found]
    if missing:
        raise NotFound(f"not embedded with {index.model}: {', '.join(missing)}")
    a, b = vectors[found.index(start)], vectors[found.index(end)]
    steps = request.steps
    spherical = request.interpolation == "spherical"
    excluded = ctx.excluded((start, end))
    used: set[str] = set()
    cap = request.max_per_artist
    info = index.info([start, end])
    artists = {artist_key(info.get(start)): 1}
    artists[artist_key(info.get(end))] = artists.get(artist_key(info.get(end)), 0) + 1
    middle: list[Candidate] = []
    merged_steps = 0
    for i in range(1, steps - 1):
        ctx.check_deadline()
        point = interpolate(a, b, i / (steps - 1), spherical)
        choice = _step(index, point, excluded, used, artists, cap, request.exact_length, steps)
        if choice is None:
            merged_steps += 1
            continue
        track_id, score = choice
        used.add(track_id)
        artist = artist_key(index.info([track_id]).get(track_id))
        artists[artist] = artists.get(artist, 0) + 1
        middle.append(Candidate(track_id, score, {index.model: score}))
    if merged_steps:
        how = "no unused track was left" if request.exact_length else "they repeated a track"
        ctx.warn(f"{merged_steps} of {steps - 2} steps merged into their neighbours: {how}")
    ends = (Candidate(start, 1.0, {index.model: 1.0}), Candidate(end, 1.0, {index.model: 1.0}))
    return Outcome(tracks=[ends[0], *middle, ends[1]])


def _step(
    index: ModelIndex,
    point: np.ndarray,
    excluded: set[str],
    used: set[str],
    artists: dict[str, int],
    cap: int | None,
    exact: bool,
    steps: int,
) -> tuple[str, float] | None:
    """The step's track, or None when the step fails (see the module docstring)."""
    hits = index.search(
        point[None, :], k=len(used) + 10 + (steps if exact else 0), exclude=excluded
    )[0]
    infos = index.info(t for t, _ in hits) if cap else {}
    for rank, (track_id, score) in enumerate(hits):
        if track_id in used:
            if not exact and rank == 0:
                return None
            continue
        if cap and artists.get(artist_key(infos.get(track_id)), 0) >= cap:
            continue
        return track_id, score
    return None
