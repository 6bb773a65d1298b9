"""The last step every list-returning operation shares: select the tracks the user sees.

Diversity, the artist cap and near-duplicate filtering compare tracks by
their vectors in the first requested model (vectors of different models live
in different spaces, so they are never compared with each other); seeds are
passed as `avoid` so that the same song from another file is not returned
in place of a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.recommender.common import Candidate, QueryContext
from pipeline.recommender.diversity import Avoid, SelectionRules, same_song_key, select
from pipeline.recommender.index import ModelIndex, TrackInfo

DEFAULT_DUPLICATE_DISTANCE = 0.02


def request_rules(ctx: QueryContext, **overrides: object) -> SelectionRules:
    """Selection rules from the request's own fields (and the clamped limit)."""
    request = ctx.request
    threshold = getattr(request, "duplicate_threshold", DEFAULT_DUPLICATE_DISTANCE)
    rules = SelectionRules(
        limit=ctx.limit,
        diversity=float(getattr(request, "diversity", 0.0)),
        max_per_artist=request.max_per_artist,
        duplicate_threshold=threshold,
    )
    for name, value in overrides.items():
        setattr(rules, name, value)
    return rules


def finish(
    ctx: QueryContext,
    indexes: Sequence[ModelIndex],
    candidates: Sequence[Candidate],
    rules: SelectionRules,
    avoid_ids: Sequence[str] = (),
    warn: bool = True,
) -> list[Candidate]:
    """The selected candidates (see `diversity.select`); warns when filters shortened the list."""
    ctx.check_deadline()
    primary = indexes[0]

    def lookup(ids: list[str]) -> tuple[dict[str, np.ndarray], dict[str, TrackInfo]]:
        found, matrix = primary.vectors(ids)
        return dict(zip(found, matrix, strict=True)), ctx.info(indexes, ids)

    avoid = Avoid()
    if avoid_ids:
        vectors, info = lookup(list(avoid_ids))
        avoid = Avoid(
            vectors=np.stack(list(vectors.values())) if vectors else None,
            keys=frozenset(k for t in avoid_ids if (k := same_song_key(info.get(t))) is not None),
        )
    chosen, dropped = select(candidates, rules, lookup, avoid)
    if warn and len(chosen) < rules.limit and dropped:
        reasons = ", ".join(f"{n} by {why.replace('_', ' ')}" for why, n in sorted(dropped.items()))
        ctx.warn(f"{len(chosen)} of {rules.limit} results: candidates were filtered ({reasons})")
    return chosen
