"""The `similar` request: tracks like one seed, ranked, or ordered as a "radius walk".

The radius walk turns a ranking into a listening order with smooth
transitions: the nearest candidates are cut into buckets by rank (rings of
growing radius around the seed); the walk starts at the seed and within
each ring always moves to the closest unvisited track, then continues into
the next ring, holding the artist cap throughout (default 2 per artist).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import NotFound
from pipeline.recommender.common import Candidate, Outcome, QueryContext
from pipeline.recommender.diversity import artist_key
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.merge import merge

POOL_FACTOR = 3  # the walk chooses among 3 x limit nearest tracks


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    indexes = ctx.models()
    seed = request.track_id
    exclude = {seed, *request.exclude_track_ids}
    rankings: dict[str, list[tuple[str, float]]] = {}
    pool = max(ctx.settings.candidate_pool, ctx.limit * POOL_FACTOR)
    for index in indexes:
        found, vectors = index.vectors([seed])
        if found:
            rankings[index.model] = index.search(vectors, pool, exclude)[0]
    if not rankings:
        raise NotFound(
            f"track {seed!r} is not embedded with {', '.join(i.model for i in indexes)} "
            "(unknown, removed, or not embedded yet)",
        )
    merged = merge(rankings, [i.model for i in indexes], "union")
    if request.ordering == "ranked":
        return Outcome(tracks=finish(ctx, indexes, merged, request_rules(ctx), avoid_ids=[seed]))
    cap = request.max_per_artist or ctx.settings.radius_walk_max_per_artist
    # Filter (artist cap, duplicates) over the whole pool first, then order by walking.
    rules = request_rules(ctx, limit=min(len(merged), ctx.limit * POOL_FACTOR), max_per_artist=cap)
    eligible = finish(ctx, indexes, merged, rules, avoid_ids=[seed], warn=False)
    return Outcome(tracks=radius_walk(ctx, indexes[0], seed, eligible, ctx.limit, cap))


def radius_walk(
    ctx: QueryContext,
    index: ModelIndex,
    seed: str,
    ranked: list[Candidate],
    limit: int,
    max_per_artist: int,
) -> list[Candidate]:
    """`limit` tracks from `ranked` (best first) in walking order (see the module docstring)."""
    found, matrix = index.vectors([seed, *(c.track_id for c in ranked)])
    vectors = dict(zip(found, matrix, strict=True))
    info = index.info(c.track_id for c in ranked)
    bucket = max(3, math.ceil(limit / 5))
    current = vectors.get(seed)
    walk: list[Candidate] = []
    artists: dict[str, int] = {}
    for start in range(0, len(ranked), bucket):
        ring = list(ranked[start : start + bucket])
        while ring and len(walk) < limit:
            nearest = _nearest(ring, vectors, current)
            candidate = ring.pop(nearest)
            artist = artist_key(info.get(candidate.track_id))
            if artist and artists.get(artist, 0) >= max_per_artist:
                continue
            artists[artist] = artists.get(artist, 0) + 1
            walk.append(candidate)
            current = vectors.get(candidate.track_id, current)
        if len(walk) >= limit:
            break
    return walk


def _nearest(
    ring: list[Candidate], vectors: dict[str, np.ndarray], current: np.ndarray | None
) -> int:
    if current is None:
        return 0
    sims = [float(vectors[c.track_id] @ current) if c.track_id in vectors else -2.0 for c in ring]
    return int(np.argmax(sims))
