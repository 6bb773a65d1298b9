"""Dislikes and negative prompts: lower a candidate's score by how much it resembles them.

The rule of the older HTTP design, kept so results stay comparable:
``score x (1 - sim x (1 - penalty))`` for each penalising item, with the
similarity clipped to [0, 1] (an opposite track is not rewarded) and the
factor applied once per item. penalty = 1 disables penalties, 0 removes an
identical track's score entirely; the default 0.85 trims up to 15 %.

A negative score (cosine similarity can be below zero) is lowered by the
same amount, ``score - |score| x sim x (1 - penalty)``, so a penalty never
raises a score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.recommender.index import ModelIndex


def penalty_factors(similarities: np.ndarray, penalty: float) -> np.ndarray:
    """[n] product over items of (1 - clip(sim) x (1 - penalty)); sims are [n, items]."""
    if similarities.size == 0:
        return np.ones(len(similarities), np.float32)
    clipped = np.clip(similarities, 0.0, 1.0)
    return np.prod(1.0 - clipped * (1.0 - penalty), axis=1)


def apply_penalty(scores: np.ndarray, similarities: np.ndarray, penalty: float) -> np.ndarray:
    """Scores after the penalty of every item (see the module docstring for signs)."""
    factors = penalty_factors(similarities, penalty)
    return scores - np.abs(scores) * (1.0 - factors)


class PenaltySet:
    """What penalises candidates in one model's space: vectors, and tag-space prompts."""

    def __init__(self, vectors: np.ndarray | None = None, tag_weights: np.ndarray | None = None):
        self.vectors = vectors if vectors is not None and len(vectors) else None
        self.tag_weights = tag_weights if tag_weights is not None and len(tag_weights) else None

    def __bool__(self) -> bool:
        return self.vectors is not None or self.tag_weights is not None

    def similarities(self, index: ModelIndex, track_ids: Sequence[str]) -> np.ndarray:
        """[n, items]: each candidate's similarity with each penalising item."""
        columns = []
        if self.vectors is not None:
            found, matrix = index.vectors(track_ids)
            sims = np.zeros((len(track_ids), len(self.vectors)), np.float32)
            rows = {t: i for i, t in enumerate(found)}
            for i, track_id in enumerate(track_ids):
                if track_id in rows:
                    sims[i] = matrix[rows[track_id]] @ self.vectors.T
            columns.append(sims)
        if self.tag_weights is not None:
            columns.append(tag_similarities(index, track_ids, self.tag_weights))
        return np.concatenate(columns, axis=1) if columns else np.zeros((len(track_ids), 0))

    def rescore(
        self, index: ModelIndex, ranking: list[tuple[str, float]], penalty: float
    ) -> list[tuple[str, float]]:
        """The ranking with penalised scores, re-sorted."""
        if not self or not ranking:
            return ranking
        ids = [t for t, _ in ranking]
        scores = np.asarray([s for _, s in ranking], np.float32)
        rescored = apply_penalty(scores, self.similarities(index, ids), penalty)
        order = np.argsort(-rescored, kind="stable")
        return [(ids[i], float(rescored[i])) for i in order]


def tag_similarities(
    index: ModelIndex, track_ids: Sequence[str], tag_weights: np.ndarray
) -> np.ndarray:
    """[n, prompts]: cosine of each track's standardised tags with each prompt's tag weights."""
    view, z, tagged = index.tag_directions()
    directions = prompt_directions(tag_weights)
    out = np.zeros((len(track_ids), len(directions)), np.float32)
    for i, at in enumerate(index.positions(track_ids)):
        if at is not None and at < view.n and tagged[at]:
            out[i] = directions @ z[at]
    return out


def prompt_directions(tag_weights: np.ndarray) -> np.ndarray:
    """[P, T] unit, centred tag weights: a prompt about "metal" is as much "not the others",
    so in tag space an unrelated track scores near or below zero."""
    weights = np.atleast_2d(np.asarray(tag_weights, np.float32))
    centred = weights - weights.mean(axis=1, keepdims=True)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-9)
