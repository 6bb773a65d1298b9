"""Choosing the final list: MMR diversity, the artist cap, and near-duplicate filtering.

One greedy pass does all three, because they interact: a track skipped for
its artist must not count as "already selected" for diversity, and a
near-duplicate of an earlier pick is only known once that pick is made.

MMR (maximal marginal relevance) picks, at each step, the candidate that
maximises ``(1 - d) x relevance - d x max similarity to the tracks already
picked``; d = 0 is pure similarity ranking, d = 1 maximally spread.

Without diversity (the common case) candidates are taken in rank order and
looked up a chunk at a time, so a 25-track answer reads the vectors and
metadata of about 25 candidates, not of the whole candidate pool.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.recommender.common import Candidate
from pipeline.recommender.index import TrackInfo

Lookup = Callable[[list[str]], tuple[dict[str, np.ndarray], dict[str, TrackInfo]]]


@dataclass
class SelectionRules:
    limit: int
    diversity: float = 0.0
    max_per_artist: int | None = None
    duplicate_threshold: float | None = None  # cosine distance below which two are one song
    keep_order: bool = False  # without diversity: take candidates in the given order


@dataclass
class Avoid:
    """Tracks results must not duplicate (the seeds): their vectors and song keys."""

    vectors: np.ndarray | None = None
    keys: frozenset[tuple[str, str]] = frozenset()


def artist_key(info: TrackInfo | None) -> str:
    return info.artist_key if info is not None else ""


def same_song_key(info: TrackInfo | None) -> tuple[str, str] | None:
    """(artist, title) with version noise removed; None when the title is unknown."""
    return info.song_key if info is not None else None


def lookup_in(vectors: dict[str, np.ndarray], info: dict[str, TrackInfo]) -> Lookup:
    """A lookup over ready-made maps (tests, small lists)."""
    return lambda ids: ({t: vectors[t] for t in ids if t in vectors}, info)


@dataclass
class Selection:
    """The list being built, and why candidates were turned away."""

    rules: SelectionRules
    avoid: Avoid
    chosen: list[Candidate] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    artists: Counter[str] = field(default_factory=Counter)
    keys: set[tuple[str, str]] = field(default_factory=set)
    picked: list[np.ndarray] = field(default_factory=list)  # unit vectors of the chosen
    # The same vectors as rows of one matrix: a candidate is checked against all of them in
    # one product (a Python loop of dot products was a tenth of the service's GIL time).
    _stack: np.ndarray | None = None
    _stacked: int = 0

    @property
    def full(self) -> bool:
        return len(self.chosen) >= self.rules.limit

    def refuse(
        self, candidate: Candidate, vector: np.ndarray | None, info: TrackInfo | None
    ) -> str:
        """Why the candidate cannot join ('' when it can)."""
        cap = self.rules.max_per_artist
        artist = artist_key(info)
        if cap and artist and self.artists[artist] >= cap:
            return "artist_cap"
        key = same_song_key(info)
        if key is not None and (key in self.keys or key in self.avoid.keys):
            return "duplicate"
        threshold = self.rules.duplicate_threshold
        if threshold is not None and vector is not None:
            nearest = self._nearest_picked(vector)
            if self.avoid.vectors is not None and self.avoid.vectors.shape[1] == len(vector):
                nearest = max(nearest, float((self.avoid.vectors @ vector).max()))
            if nearest > 1.0 - threshold:
                return "duplicate"
        return ""

    def take(self, candidate: Candidate, vector: np.ndarray | None, info: TrackInfo | None) -> bool:
        reason = self.refuse(candidate, vector, info)
        if reason:
            self.dropped[reason] += 1
            return False
        self.chosen.append(candidate)
        self.artists[artist_key(info)] += 1
        key = same_song_key(info)
        if key is not None:
            self.keys.add(key)
        if vector is not None:
            self.picked.append(vector)
            self._stack_up(vector)
        return True

    def _nearest_picked(self, vector: np.ndarray) -> float:
        """Highest similarity of `vector` to a chosen track (-1 when none is comparable)."""
        stack = self._stack
        if stack is None or not self._stacked or stack.shape[1] != len(vector):
            return -1.0
        return float((stack[: self._stacked] @ vector).max())

    def _stack_up(self, vector: np.ndarray) -> None:
        if self._stack is None:
            self._stack = np.empty((max(self.rules.limit, 1), len(vector)), np.float32)
        if self._stack.shape[1] != len(vector):
            return  # another model's space: not comparable (as before, such vectors are skipped)
        if self._stacked == len(self._stack):
            self._stack = np.concatenate([self._stack, np.empty_like(self._stack)])
        self._stack[self._stacked] = vector
        self._stacked += 1


def select(
    candidates: Sequence[Candidate],
    rules: SelectionRules,
    lookup: Lookup,
    avoid: Avoid | None = None,
) -> tuple[list[Candidate], Counter[str]]:
    """Up to `rules.limit` candidates, tier by tier; also counts what was skipped and why."""
    selection = Selection(rules, avoid or Avoid())
    for tier in sorted({c.tier for c in candidates}):
        pool = [c for c in candidates if c.tier == tier]
        if rules.diversity > 0:
            _mmr(pool, selection, lookup)
        else:
            _in_order(pool, selection, lookup)
        if selection.full:
            break
    return selection.chosen, selection.dropped


def _in_order(pool: list[Candidate], selection: Selection, lookup: Lookup) -> None:
    order = pool if selection.rules.keep_order else sorted(pool, key=lambda c: -c.score)
    at = 0
    while at < len(order) and not selection.full:
        chunk = order[at : at + max(16, 2 * (selection.rules.limit - len(selection.chosen)))]
        at += len(chunk)
        vectors, info = lookup([c.track_id for c in chunk])
        for candidate in chunk:
            if selection.full:
                return
            selection.take(candidate, vectors.get(candidate.track_id), info.get(candidate.track_id))


def _mmr(pool: list[Candidate], selection: Selection, lookup: Lookup) -> None:
    vectors, info = lookup([c.track_id for c in pool])
    dim = next((len(v) for v in vectors.values()), 0)
    matrix = np.zeros((len(pool), dim), np.float32)
    has_vector = np.zeros(len(pool), bool)
    for i, candidate in enumerate(pool):
        vector = vectors.get(candidate.track_id)
        if vector is not None and len(vector) == dim:
            matrix[i], has_vector[i] = vector, True
    relevance = np.asarray([c.score for c in pool], np.float32)
    picked_sim = np.full(len(pool), -1.0, np.float32)
    for vector in selection.picked:
        if len(vector) == dim:
            picked_sim = np.maximum(picked_sim, matrix @ vector)
    picked_sim[~has_vector] = -1.0
    available = np.ones(len(pool), bool)
    d = selection.rules.diversity
    while not selection.full and available.any():
        if selection.picked:
            objective = (1 - d) * relevance - d * np.maximum(picked_sim, 0.0)
        else:
            objective = relevance.copy()
        objective[~available] = -np.inf
        i = int(np.argmax(objective))
        available[i] = False
        vector = matrix[i] if has_vector[i] else None
        if selection.take(pool[i], vector, info.get(pool[i].track_id)) and vector is not None:
            sims = matrix @ vector
            sims[~has_vector] = -1.0
            picked_sim = np.maximum(picked_sim, sims)
