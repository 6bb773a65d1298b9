"""Combining several models' rankings into one: union, intersection, priority, K-agreement.

Each model contributes its nearest tracks (its candidate pool) with cosine
scores. A track is "found by" a model when it is in that model's pool.

- `union`: every track any model found, ranked by its best score (max).
  Recall first: each model's strengths count.
- `intersection`: only tracks every model found, ranked by the mean score.
  Precision first: models must agree.
- `priority`: the intersection first; when it cannot fill the list, the
  first-priority model's own ranking fills the rest (then the second's...).
  Candidates carry a `tier` so selection uses up tier 0 before tier 1.
- `min_model_agreement` K: whatever the strategy, a track must have been
  found by at least K models.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pipeline.recommender.common import Candidate

Strategy = Literal["union", "intersection", "priority"]
Ranking = list[tuple[str, float]]


def merge(
    rankings: dict[str, Ranking],
    order: Sequence[str],
    strategy: Strategy,
    min_agreement: int = 1,
) -> list[Candidate]:
    """One candidate list from per-model rankings (models in `order` of priority)."""
    models = [m for m in order if m in rankings]
    if len(models) == 1:  # nothing to merge: the model's ranking as it is
        model = models[0]
        return [Candidate(t, s, {model: s}) for t, s in rankings[model]]
    scores: dict[str, dict[str, float]] = {}
    for model in models:
        for track_id, score in rankings[model]:
            scores.setdefault(track_id, {})[model] = score
    if min_agreement > 1:
        scores = {t: s for t, s in scores.items() if len(s) >= min_agreement}
    if strategy == "union":
        merged = [Candidate(t, max(s.values()), s) for t, s in scores.items()]
    elif strategy == "intersection":
        merged = [
            Candidate(t, sum(s.values()) / len(s), s)
            for t, s in scores.items()
            if len(s) == len(models)
        ]
    else:
        merged = _priority(scores, models)
    merged.sort(key=lambda c: (c.tier, -c.score, c.track_id))
    return merged


def _priority(scores: dict[str, dict[str, float]], models: Sequence[str]) -> list[Candidate]:
    merged = []
    for track_id, per_model in scores.items():
        if len(per_model) == len(models):
            merged.append(Candidate(track_id, sum(per_model.values()) / len(per_model), per_model))
            continue
        # Not agreed on: ranked by the highest-priority model that found it.
        tier, model = next((i + 1, m) for i, m in enumerate(models) if m in per_model)
        merged.append(Candidate(track_id, per_model[model], per_model, tier=tier))
    return merged
