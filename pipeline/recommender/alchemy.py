"""The `alchemy` request: "like these, but not like those", with a dash of chance.

1. The add set's centroid minus the subtract set's centroid is the direction
   to search (vector arithmetic, as with word vectors).
2. Candidates closer than `subtract_threshold` (cosine distance) to the
   subtract centroid are filtered out: they still sound like what the user
   took away. They come back in `extra["filtered_out"]`, so a client can
   show why they are missing.
3. From the rest, `limit` tracks are drawn without replacement with
   probability softmax(score / temperature) (Gumbel top-k); temperature 0
   is the plain top-k. The draw is repeatable with `random_seed`.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import NotFound
from pipeline.recommender.common import (
    Candidate,
    Outcome,
    QueryContext,
    warn_unknown,
    weighted_centroid,
)
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import ModelIndex

POOL_FACTOR = 4


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    indexes = ctx.models()
    index = indexes[0]
    if len(indexes) > 1:
        ctx.warn(f"alchemy mixes vectors of one model: {index.model}")
    warn_unknown(ctx, [index], [*request.add_track_ids, *request.subtract_track_ids])
    found, add_vectors = index.vectors(list(dict.fromkeys(request.add_track_ids)))
    add = weighted_centroid(add_vectors, [1.0] * len(found))
    if add is None:
        raise NotFound(f"none of add_track_ids is embedded with {index.model}")
    taken, sub_vectors = index.vectors(list(dict.fromkeys(request.subtract_track_ids)))
    subtract = weighted_centroid(sub_vectors, [1.0] * len(taken))
    query = add if subtract is None else weighted_centroid(np.stack([add, subtract]), [1.0, -1.0])
    if query is None:  # add and subtract cancel out: fall back to the add direction
        ctx.warn("the add and subtract sets are the same direction; searched the add set alone")
        query = add
    exclude = ctx.excluded(request.add_track_ids, request.subtract_track_ids)
    pool = max(ctx.limit * POOL_FACTOR, 40)
    hits = index.search(query[None, :], pool, exclude)[0]
    kept, filtered = split_by_subtract(index, hits, subtract, request.subtract_threshold)
    order = sample_order(kept, request.temperature, request.random_seed)
    rules = request_rules(ctx, diversity=0.0, keep_order=True)
    chosen = finish(ctx, indexes, [kept[i] for i in order], rules, avoid_ids=found)
    chosen.sort(key=lambda c: -c.score)
    filtered = filtered[: ctx.limit]
    return Outcome(tracks=chosen, extra={"kept": list(chosen), "filtered_out": filtered})


def split_by_subtract(
    index: ModelIndex,
    hits: list[tuple[str, float]],
    subtract: np.ndarray | None,
    threshold: float,
) -> tuple[list[Candidate], list[Candidate]]:
    """(kept, filtered out): filtered tracks lie within `threshold` of the subtract centroid."""
    model = index.model
    candidates = [Candidate(t, s, {model: s}) for t, s in hits]
    if subtract is None or not candidates:
        return candidates, []
    found, vectors = index.vectors([c.track_id for c in candidates])
    distance = dict(zip(found, (1.0 - vectors @ subtract).tolist(), strict=True))
    kept = [c for c in candidates if distance.get(c.track_id, 2.0) > threshold]
    filtered = [c for c in candidates if distance.get(c.track_id, 2.0) <= threshold]
    return kept, filtered


def sample_order(candidates: list[Candidate], temperature: float, seed: int | None) -> list[int]:
    """Indices in draw order: softmax(score / T) sampling without replacement (T=0: by score)."""
    scores = np.asarray([c.score for c in candidates], np.float64)
    if temperature <= 0 or len(scores) < 2:
        return list(np.argsort(-scores, kind="stable"))
    rng = np.random.default_rng(seed)
    keys = scores / temperature + rng.gumbel(size=len(scores))
    return list(np.argsort(-keys, kind="stable"))
