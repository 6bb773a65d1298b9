"""The `similar` request: tracks like one seed, ranked, or ordered as a "radius walk".

The radius walk turns a ranking into a listening order with smooth
transitions: the nearest candidates are cut into buckets by rank (rings of
growing radius around the seed); the walk starts at the seed and within
each ring always moves to the closest unvisited track, then continues into
the next ring, holding the artist cap throughout (default 2 per artist).

The seed may be a Navidrome song, album or artist (`songs.py` resolves it);
an album's or artist's tracks are equal seeds, ranked with the artist cap.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.errors import NotFound
from pipeline.recommender.common import Candidate, Outcome, QueryContext, weighted_centroid
from pipeline.recommender.diversity import artist_key
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.merge import merge
from pipeline.recommender.songs import resolve_album, resolve_artist, resolve_song

POOL_FACTOR = 3  # the walk chooses among 3 x limit nearest tracks


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    indexes = ctx.models()
    if request.song is not None:
        seed = resolve_song(indexes, request.song)
        if seed is None:
            ctx.warn(f"song {request.song.describe()} is not in sonicbus' library "
                     "(unknown, or not embedded yet): nothing to answer with")  # fmt: skip
            return Outcome(tracks=[])
        return similar_to(ctx, indexes, seed)
    if request.album is not None or request.artist is not None:
        return similar_to_many(ctx, indexes)
    return similar_to(ctx, indexes, request.track_id)


def similar_to_many(ctx: QueryContext, indexes: list[ModelIndex]) -> Outcome:
    """An album's or an artist's tracks as equal seeds; they are never returned, and the
    artist cap (2 unless the request sets one) keeps the radio from being one artist."""
    request = ctx.request
    if request.album is not None:
        what, seeds = f"album {request.album.name!r}", resolve_album(indexes, request.album)
    else:
        what, seeds = f"artist {request.artist.name!r}", resolve_artist(indexes, request.artist)
    if not seeds:
        ctx.warn(f"{what} has no track in sonicbus' library (unknown, or not embedded yet)")
        return Outcome(tracks=[])
    seeds = seeds[: ctx.settings.seed_limit]
    exclude = ctx.excluded(seeds)
    rankings: dict[str, list[tuple[str, float]]] = {}
    for index in indexes:
        ctx.check_deadline()
        found, vectors = index.vectors(seeds)
        query = weighted_centroid(vectors, [1.0] * len(found))
        if query is not None:
            rankings[index.model] = index.search(query[None, :], ctx.pool_size(1), exclude)[0]
    if not rankings:
        ctx.warn(f"{what}: its tracks have no vector in the requested models")
        return Outcome(tracks=[])
    merged = merge(rankings, [i.model for i in indexes], "union")
    cap = request.max_per_artist or ctx.settings.radius_walk_max_per_artist
    rules = request_rules(ctx, max_per_artist=cap)
    return Outcome(tracks=finish(ctx, indexes, merged, rules, avoid_ids=seeds))


def similar_to(ctx: QueryContext, indexes: list[ModelIndex], seed: str) -> Outcome:
    request = ctx.request
    exclude = ctx.excluded((seed,))
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
