"""What every query operation shares: its context and candidate tracks.

An operation is a small function `run(ctx) -> Outcome`. It reads the request
and the library through `QueryContext`, adds warnings (an unknown seed, a
clamped limit) instead of failing when the rest can still be answered, and
raises one of the kinds of `pipeline.errors` when nothing sensible can be
(`NotFound`, `InvalidInput`, `Unavailable`, `Timeout`): the kind's `code`
is the reply's error code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import QuerySettings
from pipeline.errors import Timeout, Unavailable
from pipeline.recommender.filters import filtered_out
from pipeline.recommender.index import ModelIndex, TrackInfo
from pipeline.recommender.library import Library, NotEmbedded
from pipeline.schemas.queries import DuplicatePair, InstantPlan

if TYPE_CHECKING:
    from pipeline.recommender.prompts import TextSupport
    from pipeline.recommender.seeds import SeedSource


@dataclass(slots=True)
class Candidate:
    """A track on its way into a reply: its score, and each model's score for it."""

    track_id: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    tier: int = 0  # `priority` merging: lower tiers are used up first

    @property
    def found_by(self) -> list[str]:
        return list(self.scores)


@dataclass
class Outcome:
    """What an operation returns; the engine turns it into a QueryReply."""

    tracks: list[Candidate]
    extra: dict[str, list[Candidate]] = field(default_factory=dict)
    pairs: list[DuplicatePair] = field(default_factory=list)
    plan: InstantPlan | None = None


@dataclass
class QueryContext:
    """One request being answered: request, settings, library, warnings, deadline."""

    request: Any
    settings: QuerySettings
    library: Library
    text: TextSupport
    seeds: SeedSource | None = None
    deadline: float | None = None  # time.monotonic() value
    started: float = field(default_factory=time.monotonic)
    warnings: list[str] = field(default_factory=list)
    limit: int = 25
    _excluded: set[str] | None = field(default=None, init=False, repr=False)

    def pool_size(self, models: int) -> int:
        """Candidates fetched per model: headroom for the filters; more when merging models,
        because agreement between models is only seen within their pools."""
        if models == 1:
            return max(self.limit * 4, 50)
        return max(self.settings.candidate_pool, self.limit * 4)

    def excluded(self, *more: Iterable[str]) -> set[str]:
        """Ids no result may be: `more` (seeds, dislikes), the request's `exclude_track_ids`,
        and the tracks its `filters` rule out (computed once; warns when none passes)."""
        if self._excluded is None:
            excluded = set(self.request.exclude_track_ids)
            filters = getattr(self.request, "filters", None)
            if filters is not None:
                failing, passing = filtered_out(self.models(), filters)
                if passing == 0:
                    self.warn(f"no track matches the filters ({filters.describe()})")
                excluded |= failing
            self._excluded = excluded
        return self._excluded.union(*more)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Timeout("the request's deadline passed while it was answered")

    def models(self, names: Sequence[str] | None = None) -> list[ModelIndex]:
        """Indexes of the requested models that have tracks; warns about the others.

        Fails (`unavailable`) when none has: a model not embedded yet, or an
        empty library.
        """
        indexes, problems = [], []
        for name in dict.fromkeys(names if names is not None else self.request.models):
            try:
                index = self.library.index(name)
            except NotEmbedded as exc:
                problems.append(str(exc))
                continue
            if index.size == 0:
                problems.append(f"model {name!r}: the library is empty (no tracks embedded yet)")
                continue
            indexes.append(index)
        if not indexes:
            raise Unavailable("; ".join(problems) or "no model to search")
        for problem in problems:
            self.warn(f"{problem}; answered without it")
        return indexes

    def info(self, indexes: Sequence[ModelIndex], track_ids: Iterable[str]) -> dict[str, TrackInfo]:
        """Metadata of tracks from whichever index knows them first."""
        wanted = list(dict.fromkeys(track_ids))
        found: dict[str, TrackInfo] = {}
        for index in indexes:
            missing = [t for t in wanted if t not in found]
            if not missing:
                break
            found.update(index.info(missing))
        return found


def warn_unknown(
    ctx: QueryContext, indexes: Sequence[ModelIndex], track_ids: Iterable[str]
) -> set[str]:
    """Ids no model knows (unknown, or removed since): one warning; returns them."""
    wanted = list(dict.fromkeys(track_ids))
    known: set[str] = set()
    for index in indexes:
        known.update(index.known(wanted))
    unknown = [t for t in wanted if t not in known]
    if unknown:
        shown = ", ".join(unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        ctx.warn(f"unknown or removed track ids (ignored): {shown}")
    return set(unknown)


def weighted_centroid(vectors: np.ndarray, weights: Sequence[float]) -> np.ndarray | None:
    """Unit vector of sum(w * v); None when it vanishes (no rows, or they cancel)."""
    if len(vectors) == 0:
        return None
    total = (np.asarray(weights, np.float32)[:, None] * vectors).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if not np.isfinite(norm) or norm < 1e-8:
        return None
    return (total / norm).astype(np.float32)


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of unit rows of `a` with unit vector `b`."""
    return 1.0 - a @ b
