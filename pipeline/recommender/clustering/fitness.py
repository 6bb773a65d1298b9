"""How good one clustering run is: five measures, each normalised to [0, 1], and their
weighted mean.

- tag purity: within a cluster, how much of each member's own top-K tags lies in the
  cluster's top-K tags (size-weighted over clusters);
- tag diversity: unique dominant tags across clusters / clusters;
- silhouette (s + 1) / 2; Davies-Bouldin 1 / (1 + DB); Calinski-Harabasz
  log1p(CH) / log1p(10,000), clipped.
Without tags the two tag measures drop out and the weights of the rest are
renormalised. Noise (DBSCAN's -1) is left out of every measure, and the score
is multiplied by the share of points that are not noise, so a run that calls
most of the library noise cannot win.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

CH_SCALE = np.log1p(10_000.0)
SILHOUETTE_SAMPLE = 1000


@dataclass(frozen=True)
class FitnessWeights:
    purity: float = 1.0
    diversity: float = 1.0
    silhouette: float = 1.0
    davies_bouldin: float = 0.5
    calinski_harabasz: float = 0.5


@dataclass(frozen=True)
class Fitness:
    score: float
    measures: dict[str, float]
    clusters: int


def top_tags(mean_tags: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, largest first."""
    return np.argsort(-mean_tags)[:k]


def tag_purity_and_diversity(
    labels: np.ndarray, tags: np.ndarray, top_k: int
) -> tuple[float, float]:
    clusters = [c for c in np.unique(labels) if c >= 0]
    if not clusters:
        return 0.0, 0.0
    k = min(top_k, tags.shape[1])
    own_top = np.sort(tags, axis=1)[:, -k:].sum(axis=1) + 1e-9
    purity_sum, members, dominant = 0.0, 0, set()
    for c in clusters:
        rows = tags[labels == c]
        chosen = top_tags(rows.mean(axis=0), k)
        dominant.add(int(chosen[0]))
        purity_sum += float((rows[:, chosen].sum(axis=1) / own_top[labels == c]).sum())
        members += len(rows)
    return min(1.0, purity_sum / max(members, 1)), len(dominant) / len(clusters)


def evaluate(
    points: np.ndarray,
    labels: np.ndarray,
    tags: np.ndarray | None,
    weights: FitnessWeights,
    top_k: int,
    rng: np.random.Generator,
) -> Fitness:
    """The fitness of `labels` over `points` (the run's space), 0 for fewer than 2 clusters."""
    kept = labels >= 0
    clusters = len(np.unique(labels[kept]))
    if clusters < 2 or clusters >= kept.sum():
        return Fitness(0.0, {}, clusters)
    z, lab = points[kept], labels[kept]
    sample = min(SILHOUETTE_SAMPLE, len(z))
    measures = {
        "silhouette": (float(silhouette_score(z, lab, sample_size=sample,
                                              random_state=int(rng.integers(1 << 31)))) + 1) / 2,
        "davies_bouldin": 1.0 / (1.0 + float(davies_bouldin_score(z, lab))),
        "calinski_harabasz": min(1.0, float(np.log1p(calinski_harabasz_score(z, lab)) / CH_SCALE)),
    }  # fmt: skip
    if tags is not None:
        purity, diversity = tag_purity_and_diversity(lab, tags[kept], top_k)
        measures["purity"], measures["diversity"] = purity, diversity
    total_weight = sum(getattr(weights, name) for name in measures)
    if total_weight <= 0:
        return Fitness(0.0, measures, clusters)
    score = sum(getattr(weights, name) * value for name, value in measures.items()) / total_weight
    return Fitness(score * float(kept.mean()), measures, clusters)
