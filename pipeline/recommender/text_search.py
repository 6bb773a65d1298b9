"""The `text` request: tracks for a prompt, in each model's terms (see `prompts.py`).

Per model, a prompt becomes:
- a search vector, for models with a text tower in their audio space (MuQ-MuLan);
- tag weights, for models whose rows carry tag probabilities (MusiCNN):
  tracks are ranked by the cosine of their standardised tags with the
  prompt's (centred) tag weights, blended with embedding similarity to the
  best tag matches, so tracks that sound like the matches rise too;
- nothing, for other models (a warning says so).
Negative prompts penalise candidates the same way (see `penalties.py`).
"""

from __future__ import annotations

import logging

import numpy as np

from models.base import ModelUnavailable
from models.text import NATIVE_TEXT_MODELS
from pipeline.errors import Unavailable
from pipeline.recommender.common import Candidate, Outcome, QueryContext, weighted_centroid
from pipeline.recommender.filters import filtered_out
from pipeline.recommender.finish import finish, request_rules
from pipeline.recommender.index import NEG_INF, ModelIndex
from pipeline.recommender.merge import merge
from pipeline.recommender.penalties import prompt_directions
from pipeline.recommender.prompts import TextSupport
from pipeline.recommender.sentence import figure_words
from pipeline.schemas.queries import InstantPlan, TrackFilters

log = logging.getLogger(__name__)

PROTOTYPE_TRACKS = 50  # best tag matches whose embeddings define "sounds like the prompt"
RERANK_TRACKS = 2000  # best tag matches re-ranked with embedding similarity


def tag_ranking(
    index: ModelIndex, tag_weights: np.ndarray, k: int, blend: float, exclude: set[str]
) -> list[tuple[str, float]]:
    """The k best tracks for a prompt's tag weights (see the module docstring).

    The blend with "sounds like the best matches" is computed for the
    `RERANK_TRACKS` best tag matches, not the whole library: with tags
    weighing 70 %, a track outside them does not reach the top anyway, and
    2,000 dot products cost a fraction of 50,000 (a query's largest cost).
    """
    view, z, tagged = index.tag_directions()
    scores = np.where(tagged, z @ prompt_directions(tag_weights)[0], NEG_INF).astype(np.float32)
    for at in index.positions(exclude):
        if at is not None and at < view.n:
            scores[at] = NEG_INF
    if blend <= 0 or view.vectors is None:
        return ModelIndex._top(scores, k, view.ids)
    rows = _best(scores, RERANK_TRACKS)
    rows = rows[scores[rows] != NEG_INF]
    best = rows[np.argsort(-scores[rows])[:PROTOTYPE_TRACKS]]
    best = best[scores[best] > 0]
    prototype = weighted_centroid(view.vectors[best], scores[best].tolist())
    if prototype is None:
        return ModelIndex._top(scores, k, view.ids)
    blended = (1 - blend) * scores[rows] + blend * (view.vectors[rows] @ prototype)
    return ModelIndex._top(blended.astype(np.float32), k, view.ids, rows)


def _best(scores: np.ndarray, count: int) -> np.ndarray:
    count = min(count, len(scores))
    return np.argpartition(scores, len(scores) - count)[len(scores) - count :]


def apply_figure_words(ctx: QueryContext) -> InstantPlan | None:
    """Tempo and energy words in the prompt become filters, as in an `instant` sentence.

    "fast" means bpm 120-300, "calm" energy 0-0.4 (`sentence.FIGURE_WORDS`); the
    words also stay in the prompt, where the tags know them. Filters the request
    gives itself win, field by field. When no track passes the word filters (the
    library's figures are not measured yet), they are dropped with a warning and
    the words only steer the text search. The reply's `plan` shows what was read."""
    request = ctx.request
    implied, understood = figure_words(request.prompt)
    if implied is None:
        return None
    given = request.filters.model_dump(exclude_none=True) if request.filters else {}
    merged = TrackFilters(**{**implied.model_dump(exclude_none=True), **given})
    if not words_match(ctx, implied, understood):
        return InstantPlan(prompt=request.prompt, understood=understood)
    ctx.request = request.model_copy(update={"filters": merged})
    return InstantPlan(prompt=request.prompt, filters=merged, understood=understood)


def words_match(ctx: QueryContext, implied: TrackFilters, understood: list[str]) -> bool:
    """Whether any track passes the filters tempo and energy words imply; if none does (the
    figures are not measured yet, or no track is that calm), a warning says the words
    only steer the text search, and the caller drops those filters."""
    if filtered_out(ctx.models(), implied)[1] > 0:
        return True
    ctx.warn(f"no track matches the tempo and energy words ({'; '.join(understood)}): "
             "they only steer the text search")  # fmt: skip
    return False


def run(ctx: QueryContext) -> Outcome:
    """The `text` request: its tempo and energy words as filters, then the text search."""
    plan = apply_figure_words(ctx)
    return Outcome(tracks=ranked_by_text(ctx), plan=plan)


def ranked_by_text(ctx: QueryContext) -> list[Candidate]:
    """The prompt (and negative prompts) over every requested model, finished (filters,
    artist cap, limit). `instant` calls it with the filters its sentence already gave."""
    request = ctx.request
    text: TextSupport = ctx.text
    indexes = ctx.models()
    penalty = request.penalty if request.penalty is not None else ctx.settings.penalty
    pool = ctx.pool_size(len(indexes))
    exclude = ctx.excluded()
    rankings: dict[str, list[tuple[str, float]]] = {}
    for index in indexes:
        ctx.check_deadline()
        if index.model in NATIVE_TEXT_MODELS:
            try:
                query = text.native(index.model).encode([request.prompt])
            except ModelUnavailable as exc:
                ctx.warn(f"{index.model} cannot answer text here: {exc}")
                continue
            ranking = index.search(query, pool, exclude)[0]
        elif index.has_tags:
            weights = text.tag_weights([request.prompt], index.tag_count)
            blend = ctx.settings.text_embedding_blend
            ranking = tag_ranking(index, weights, pool, blend, exclude)
        else:
            ctx.warn(f"{index.model} cannot answer text: no text tower and no tags")
            continue
        penalties = text.penalties(index, list(request.negative_prompts), ctx.warn)
        rankings[index.model] = penalties.rescore(index, ranking, penalty)
    if not rankings:
        raise_no_text(ctx)
    merged = merge(rankings, [i.model for i in indexes], "union")
    return finish(ctx, indexes, merged, request_rules(ctx))


def raise_no_text(ctx: QueryContext) -> None:
    raise Unavailable(
        "none of the requested models can answer text: "
        + "; ".join(ctx.warnings or ["use musicnn (tags) or muq (text tower)"]),
    )
