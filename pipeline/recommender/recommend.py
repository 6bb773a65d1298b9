"""The `recommend` request: seeds (and direct vectors) -> tracks like them, per model, merged.

Stages, each a small function:
1. `plan`: the seeds: the request's weighted seeds (a negative weight is a
   dislike), its dislikes, and a Navidrome seed mode's seeds;
2. `model_query`: per model, the weighted centroid of the seeds' vectors plus
   any direct embedding given for that model (dimension checked);
3. search each model's candidate pool without seeds, dislikes and exclusions;
   penalise by dislikes and negative prompts (`penalties.py`);
4. `merge` the models (union / intersection / priority, K-agreement);
5. `finish`: MMR diversity, artist cap, near-duplicates (seeds included).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from pipeline.errors import InvalidInput, NotFound, Unavailable
from pipeline.recommender.common import (
    Candidate,
    Outcome,
    QueryContext,
    warn_unknown,
    weighted_centroid,
)
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.merge import merge
from pipeline.recommender.penalties import PenaltySet
from pipeline.recommender.seeds import MODE_READS, SeedPlan, mode_seeds
from pipeline.recommender.songs import resolve_album, resolve_artist, resolve_song
from pipeline.schemas.queries import DirectEmbedding


def run(ctx: QueryContext) -> Outcome:
    request = ctx.request
    indexes = ctx.models()
    plan = seed_plan(ctx)
    refs = ref_seeds(ctx, indexes, plan)
    unknown = warn_unknown(ctx, indexes, [*plan.positive, *plan.dislikes])
    embeddings = usable_embeddings(ctx, indexes)
    if refs and not plan.positive and not embeddings and not request.seeds:
        return Outcome(tracks=[])  # Navidrome seeds unknown here: warned, an empty answer
    if not plan.positive and not embeddings:
        if request.embeddings and not plan.positive:
            raise InvalidInput("no usable embedding: " + "; ".join(ctx.warnings))
        if unknown or request.seeds or request.seed_mode != "explicit":
            raise NotFound("none of the seed tracks is embedded (or known)")
        raise InvalidInput("recommend needs seeds, embeddings or a seed_mode")
    penalty = request.penalty if request.penalty is not None else ctx.settings.penalty
    exclude = ctx.excluded(plan.positive, plan.dislikes, plan.exclude)
    pool = ctx.pool_size(len(indexes))
    rankings: dict[str, list[tuple[str, float]]] = {}
    for index in indexes:
        ctx.check_deadline()
        query = model_query(index, plan, embeddings.get(index.model, []))
        if query is None:
            ctx.warn(f"model {index.model!r}: none of the seeds is embedded with it; skipped")
            continue
        ranking = index.search(query[None, :], pool, exclude)[0]
        penalties = model_penalties(ctx, index, plan)
        rankings[index.model] = penalties.rescore(index, ranking, penalty)
    if not rankings:
        raise NotFound("no requested model has a vector for any seed")
    agreement = request.min_model_agreement
    if agreement > len(rankings):
        ctx.warn(
            f"min_model_agreement {agreement} is more than the {len(rankings)} model(s) "
            f"searched; using {len(rankings)}"
        )
        agreement = len(rankings)
    order = [i.model for i in indexes]
    merged = merge(rankings, order, request.merge, agreement)
    if request.merge == "priority" and merged and merged[0].tier > 0:
        ctx.warn("the models agree on no track: priority fell back to the first model's ranking")
    tracks = finish(ctx, indexes, merged, request_rules(ctx), avoid_ids=list(plan.positive))
    seeds = [Candidate(t, w) for t, w in plan.positive.items() if t not in unknown]
    return Outcome(tracks=tracks, extra={"seeds": seeds} if request.seed_mode != "explicit" else {})


def seed_plan(ctx: QueryContext) -> SeedPlan:
    """Explicit seeds and dislikes, plus the seed mode's (from Navidrome annotations)."""
    request = ctx.request
    plan = SeedPlan()
    if request.seed_mode != "explicit":
        if ctx.seeds is None:
            raise Unavailable(
                f"seed_mode {request.seed_mode!r} reads Navidrome's plays, stars and ratings: "
                "configure navidrome.db_path (or navidrome.url, user and password)",
            )
        user = request.user_id or ctx.seeds.default_user()
        if user is None:
            ctx.warn("no user_id: seeds come from every user's plays, stars and ratings")
        annotations = ctx.seeds.annotations(user)
        plan = mode_seeds(
            request.seed_mode, annotations, datetime.now(UTC), ctx.settings.seed_limit
        )
        if not plan.positive and not request.seeds and not request.embeddings:
            raise NotFound(
                f"user {user or '(all)'} has no {MODE_READS[request.seed_mode]} for seed mode "
                f"{request.seed_mode!r}",
            )
    for seed in request.seeds:
        plan.add(seed.track_id, seed.weight)
    for track_id in request.dislike_track_ids:
        plan.dislikes.setdefault(track_id, 1.0)
    for track_id in plan.dislikes:
        plan.positive.pop(track_id, None)
    return plan


def ref_seeds(ctx: QueryContext, indexes: Sequence[ModelIndex], plan: SeedPlan) -> bool:
    """Adds the request's Navidrome songs (weight 1) and albums' and artists' tracks (weight
    1 / their count each) to `plan`; warns about those that resolve to nothing. True when
    the request had any."""
    request = ctx.request
    for song in request.songs:
        track_id = resolve_song(indexes, song)
        if track_id is None:
            ctx.warn(f"song {song.describe()} is not in sonicbus' library; ignored")
        else:
            plan.add(track_id, 1.0)
    groups = [(f"album {a.name!r}", resolve_album(indexes, a)) for a in request.albums]
    groups += [(f"artist {a.name!r}", resolve_artist(indexes, a)) for a in request.artists]
    for what, ids in groups:
        if not ids:
            ctx.warn(f"{what} has no track in sonicbus' library; ignored")
        for track_id in ids[: ctx.settings.seed_limit]:
            plan.add(track_id, 1.0 / min(len(ids), ctx.settings.seed_limit))
    return bool(request.songs or request.albums or request.artists)


def usable_embeddings(
    ctx: QueryContext, indexes: Sequence[ModelIndex]
) -> dict[str, list[DirectEmbedding]]:
    """Direct embeddings by model; those for other models or of the wrong size are skipped."""
    dims = {i.model: i.dim for i in indexes}
    usable: dict[str, list[DirectEmbedding]] = {}
    for at, embedding in enumerate(ctx.request.embeddings):
        if embedding.model not in dims:
            ctx.warn(f"embeddings[{at}] is for {embedding.model!r}, not a searched model; ignored")
        elif len(embedding.vector) != dims[embedding.model]:
            ctx.warn(
                f"embeddings[{at}] has {len(embedding.vector)} dimensions but "
                f"{embedding.model} vectors have {dims[embedding.model]}; ignored"
            )
        elif not np.any(embedding.vector):
            ctx.warn(f"embeddings[{at}] is all zeros; ignored")
        else:
            usable.setdefault(embedding.model, []).append(embedding)
    return usable


def model_query(
    index: ModelIndex, plan: SeedPlan, embeddings: Sequence[DirectEmbedding]
) -> np.ndarray | None:
    """Unit query vector in this model's space, or None if it has nothing to go on."""
    found, vectors = index.vectors(list(plan.positive))
    weights = [plan.positive[t] for t in found]
    for embedding in embeddings:
        vector = np.asarray(embedding.vector, np.float32)
        vectors = np.vstack([vectors, vector / np.linalg.norm(vector)])
        weights.append(embedding.weight)
    return weighted_centroid(vectors, weights)


def model_penalties(ctx: QueryContext, index: ModelIndex, plan: SeedPlan) -> PenaltySet:
    """Dislike vectors in this model, plus the negative prompts in this model's terms."""
    _, dislikes = index.vectors(list(plan.dislikes))
    prompts = ctx.text.penalties(index, list(ctx.request.negative_prompts), ctx.warn)
    vectors = dislikes if prompts.vectors is None else np.vstack([dislikes, prompts.vectors])
    return PenaltySet(vectors=vectors, tag_weights=prompts.tag_weights)
