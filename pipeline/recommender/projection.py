"""The music map's projection: a model's embeddings as points on a plane.

**Which method, and why** (measured by `bench/ui_map.py --compare`, 50,000 synthetic
600-d MusiCNN-shaped tracks in 200 clusters, 2 busy cores; quality on 2,000 random tracks:
trustworthiness, and the share of each track's 10 nearest neighbours that stay its 10
nearest on the map):

| method | time | trustworthiness | 10-NN kept |
|---|---|---|---|
| PCA | 0.3 s | 0.60 | 0.10 |
| t-SNE on 5,000 landmarks, the rest placed by their nearest landmarks | 27 s | 0.97 | 0.81 |
| UMAP (umap-learn 0.5.12, all 50,000) | 52 s | 0.95 | 0.80 |

PCA is instant but folds the library onto itself (neighbours on the map are mostly not
neighbours in sound). UMAP and landmark t-SNE draw equally faithful maps; landmark
t-SNE is twice as fast here, needs no dependency beyond scikit-learn, and its rule
for placing a track that was not among the landmarks is the very rule a new track is
placed by: a track embedded after the map was drawn lands where a full recompute would
put it (give or take the landmark draw), so placing new tracks needs no recompute.

**How a track is placed.** Vectors are reduced to (at most) 50 dimensions by PCA (the
usual first step of t-SNE; it also makes the neighbour search cheap); the landmarks'
t-SNE coordinates are scaled into [-0.95, 0.95]; any other track goes to the
inverse-distance weighted mean of its `PLACE_NEIGHBOURS` nearest landmarks. Libraries
under `MIN_TSNE_TRACKS` are drawn by PCA alone (t-SNE needs neighbours to work with).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Method = Literal["tsne-landmarks", "pca"]
REDUCED_DIM = 50
PLACE_NEIGHBOURS = 5
MIN_TSNE_TRACKS = 64
EXTENT = 0.95  # the map's points lie within [-EXTENT, EXTENT] on both axes
PCA_FIT_ROWS = 20_000
PLACE_CHUNK = 2048


@dataclass
class Projection:
    """A fitted projection: what placing a new track needs, and nothing more."""

    method: Method
    mean: np.ndarray  # [d]
    components: np.ndarray  # [k, d]: the reduction (PCA)
    landmarks: np.ndarray  # [L, k]: reduced landmark vectors (tsne-landmarks)
    landmark_xy: np.ndarray  # [L, 2]
    scale: np.ndarray  # [2]: reduced -> map units (pca)
    fitted_rows: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        return ((np.asarray(vectors, np.float32) - self.mean) @ self.components.T).astype(
            np.float32
        )

    def place(self, vectors: np.ndarray) -> np.ndarray:
        """[n, 2] map coordinates of `vectors` (rows of the model's dimension)."""
        if len(vectors) == 0:
            return np.zeros((0, 2), np.float32)
        reduced = self.reduce(vectors)
        if self.method == "pca":
            return np.clip(reduced[:, :2] * self.scale, -1.0, 1.0).astype(np.float32)
        return _weighted_nearest(reduced, self.landmarks, self.landmark_xy)

    def arrays(self) -> dict[str, np.ndarray]:
        """The projection as named arrays (saved beside the map, see `from_arrays`)."""
        return {
            "method": np.asarray(self.method), "mean": self.mean,
            "components": self.components, "landmarks": self.landmarks,
            "landmark_xy": self.landmark_xy, "scale": self.scale,
            "fitted_rows": np.asarray(self.fitted_rows),
        }  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Projection:
        method = str(arrays["method"])
        if method not in ("tsne-landmarks", "pca"):
            raise ValueError(f"unknown projection method {method!r}")
        return cls(
            method=method,  # type: ignore[arg-type]
            mean=arrays["mean"], components=arrays["components"],
            landmarks=arrays["landmarks"], landmark_xy=arrays["landmark_xy"],
            scale=arrays["scale"], fitted_rows=int(arrays["fitted_rows"]),
        )  # fmt: skip


def fit_projection(
    vectors: np.ndarray, landmarks: int = 5000, seed: int = 0
) -> tuple[Projection, np.ndarray]:
    """Fit a projection to the whole library; returns it and every row's [n, 2] coordinates.

    Blocking, seconds to a minute at 50,000 tracks (see the module docstring).
    """
    from sklearn.decomposition import PCA

    vectors = np.asarray(vectors, np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise ValueError("nothing to project: no vectors")
    rng = np.random.default_rng(seed)
    k = max(1, min(REDUCED_DIM, dim, n))
    fit_rows = vectors if n <= PCA_FIT_ROWS else vectors[rng.choice(n, PCA_FIT_ROWS, False)]
    if n >= 2:
        pca = PCA(k, random_state=seed).fit(fit_rows)
        mean, components = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
    else:
        mean, components = vectors[0].copy(), np.eye(1, dim, dtype=np.float32)
    if components.shape[0] < 2:  # a line (or a point): a second, empty axis
        components = np.vstack([components, np.zeros((2 - len(components), dim), np.float32)])
    reduced = ((vectors - mean) @ components.T).astype(np.float32)
    empty = np.zeros((0, components.shape[0]), np.float32)
    if n < MIN_TSNE_TRACKS:
        spread = np.abs(reduced[:, :2]).max(axis=0)
        scale = (EXTENT / np.where(spread > 1e-9, spread, 1.0)).astype(np.float32)
        projection = Projection("pca", mean, components, empty, np.zeros((0, 2), np.float32),
                                scale, n)  # fmt: skip
        return projection, projection.place(vectors)
    from sklearn.manifold import TSNE

    chosen = np.sort(rng.choice(n, min(landmarks, n), replace=False))
    perplexity = float(min(30.0, (len(chosen) - 1) / 3))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    xy = tsne.fit_transform(reduced[chosen]).astype(np.float32)
    xy -= (xy.max(axis=0) + xy.min(axis=0)) / 2
    xy *= EXTENT / max(float(np.abs(xy).max()), 1e-9)
    projection = Projection("tsne-landmarks", mean, components, reduced[chosen], xy,
                            np.ones(2, np.float32), n)  # fmt: skip
    coords = _weighted_nearest(reduced, projection.landmarks, xy)
    coords[chosen] = xy
    return projection, coords


def _weighted_nearest(reduced: np.ndarray, landmarks: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Each row at the inverse-distance weighted mean of its nearest landmarks' coordinates."""
    k = min(PLACE_NEIGHBOURS, len(landmarks))
    squares = (landmarks**2).sum(axis=1)
    out = np.empty((len(reduced), 2), np.float32)
    for start in range(0, len(reduced), PLACE_CHUNK):
        rows = reduced[start : start + PLACE_CHUNK]
        d2 = np.maximum((rows**2).sum(axis=1)[:, None] - 2 * rows @ landmarks.T + squares, 0)
        nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dist = np.sqrt(np.take_along_axis(d2, nearest, axis=1))
        weights = 1.0 / (dist + 1e-6)
        weights /= weights.sum(axis=1, keepdims=True)
        out[start : start + len(rows)] = (xy[nearest] * weights[:, :, None]).sum(axis=1)
    return out


def neighbour_quality(
    vectors: np.ndarray, coords: np.ndarray, sample: int = 2000, k: int = 10, seed: int = 1
) -> dict[str, float]:
    """Trustworthiness and the share of 10-NN kept, on a random sample (for the bench)."""
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(vectors), min(sample, len(vectors)), replace=False)
    high, low = vectors[chosen], coords[chosen]
    k = min(k, len(chosen) - 2)
    trust = float(trustworthiness(high, low, n_neighbors=k))
    a = NearestNeighbors(n_neighbors=k + 1).fit(high).kneighbors(high, return_distance=False)
    b = NearestNeighbors(n_neighbors=k + 1).fit(low).kneighbors(low, return_distance=False)
    kept = float(np.mean([len(set(p[1:]) & set(q[1:])) / k for p, q in zip(a, b, strict=True)]))
    return {"trustworthiness": round(trust, 3), "neighbours_kept": round(kept, 3)}
