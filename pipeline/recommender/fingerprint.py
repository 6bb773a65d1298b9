"""The `fingerprint` request: a user's "sonic fingerprint" and the tracks that match it.

The fingerprint is the weighted centroid of the user's top plays, each
weighted by play count x 0.5 ** (age / half-life) (30 days by default), so
this month's favourites count more than last year's. The plays come from
Navidrome's annotations (`user_id`, or the configured user), or from the
request's own seeds (weight = plays, `played_at` = last play). The seeds
themselves are not returned; they come back in `extra["seeds"]`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipeline.errors import NotFound, Unavailable
from pipeline.recommender.common import (
    Candidate,
    Outcome,
    QueryContext,
    warn_unknown,
    weighted_centroid,
)
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.merge import merge
from pipeline.recommender.seeds import recency, top_plays


def fingerprint_seeds(ctx: QueryContext, now: datetime) -> dict[str, float]:
    """Track id -> weight: the request's seeds if any, else the user's Navidrome plays."""
    request = ctx.request
    half_life = request.half_life_days
    if request.seeds:
        weights: dict[str, float] = {}
        for seed in request.seeds:
            decay = recency(seed.played_at, now, half_life) if seed.played_at else 1.0
            if seed.weight * decay > 0:
                weights[seed.track_id] = weights.get(seed.track_id, 0.0) + seed.weight * decay
        ranked = sorted(weights.items(), key=lambda item: (-item[1], item[0]))
        return dict(ranked[: ctx.settings.seed_limit])
    if ctx.seeds is None:
        raise Unavailable(
            "fingerprint needs seeds in the request, or Navidrome's plays: configure "
            "navidrome.db_path (or navidrome.url, user and password)",
        )
    user = request.user_id or ctx.seeds.default_user()
    if user is None:
        ctx.warn("no user_id: the fingerprint is of every user's plays together")
    seeds = top_plays(ctx.seeds.annotations(user), now, ctx.settings.seed_limit, half_life)
    if not seeds:
        raise NotFound(f"user {user or '(all)'} has no plays to fingerprint")
    return seeds


def run(ctx: QueryContext) -> Outcome:
    indexes = ctx.models()
    seeds = fingerprint_seeds(ctx, datetime.now(UTC))
    unknown = warn_unknown(ctx, indexes, seeds)
    exclude = ctx.excluded(seeds)
    pool = ctx.pool_size(len(indexes))
    rankings = {}
    for index in indexes:
        found, vectors = index.vectors(list(seeds))
        centroid = weighted_centroid(vectors, [seeds[t] for t in found])
        if centroid is not None:
            rankings[index.model] = index.search(centroid[None, :], pool, exclude)[0]
    if not rankings:
        raise NotFound("none of the fingerprint's tracks is embedded")
    merged = merge(rankings, [i.model for i in indexes], "union")
    tracks = finish(ctx, indexes, merged, request_rules(ctx), avoid_ids=list(seeds))
    used = [Candidate(t, w) for t, w in seeds.items() if t not in unknown]
    return Outcome(tracks=tracks, extra={"seeds": used})
