"""The evolutionary search over clustering runs.

A run is a `Genome`: an algorithm (K-Means, GMM, DBSCAN, spectral), its
parameters, the space it clusters (the embeddings or the tag vector) and a
PCA to a sampled number of components. Each run fits a stratified sample of
the library (strata: the dominant tag, or a coarse K-Means without tags),
which drifts slowly: between runs a share of it is swapped for other tracks
of the same strata, so the search does not overfit one sample. The first
`explore_share` of the runs are drawn at random; after that a run mutates one
of the `elites` best genomes with `mutation_probability`, else it is random.

The best run is then applied to the whole library: K-Means and GMM predict,
DBSCAN and spectral clustering (which cannot) assign each track to the
nearest centroid of the sample's clusters, in the run's space.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import DBSCAN, KMeans, MiniBatchKMeans, SpectralClustering
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

from pipeline.errors import InvalidInput
from pipeline.recommender.clustering.fitness import Fitness, FitnessWeights, evaluate

SPECTRAL_MAX_POINTS = 800
Progress = Callable[[int, int, float], None]


class ClusteringInputError(InvalidInput):
    """The library cannot be clustered as it is (too small, all tracks identical)."""


class SearchCancelled(Exception):
    """The search was asked to stop; nothing was written."""


@dataclass
class LibraryData:
    """What the search reads: one row per track."""

    ids: list[str]
    vectors: np.ndarray  # unit rows
    tags: np.ndarray | None = None
    tag_names: tuple[str, ...] = ()
    artists: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SearchOptions:
    runs: int = 300
    algorithms: tuple[str, ...] = ("kmeans", "gmm", "dbscan", "spectral")
    space: str = "auto"
    min_clusters: int = 4
    max_clusters: int = 40
    max_pca_components: int = 32
    sample_size: int = 2000
    sample_perturbation: float = 0.1
    elites: int = 10
    explore_share: float = 0.3
    mutation_probability: float = 0.7
    top_k_tags: int = 3
    weights: FitnessWeights = field(default_factory=FitnessWeights)
    seed: int | None = None


@dataclass(frozen=True)
class Genome:
    algorithm: str
    clusters: int
    space: str
    pca: int  # 0: none
    eps_scale: float = 1.0
    min_samples: int = 5
    covariance: str = "diag"


@dataclass
class RunResult:
    genome: Genome
    fitness: Fitness


@dataclass
class SearchResult:
    best: RunResult
    labels: np.ndarray  # the whole library, before post-processing
    runs: int
    seconds: float
    elites: list[RunResult]

    def figures(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "seconds": round(self.seconds, 3),
            "runs_per_s": round(self.runs / self.seconds, 3) if self.seconds else None,
            "best_score": round(self.best.fitness.score, 4),
            "best": dataclasses.asdict(self.best.genome),
            "measures": {k: round(v, 4) for k, v in self.best.fitness.measures.items()},
            "clusters": len(np.unique(self.labels)),
        }


def check_library(data: LibraryData, options: SearchOptions) -> None:
    n = len(data.ids)
    if n < options.min_clusters + 1:
        raise ClusteringInputError(
            f"library too small to cluster: {n} tracks, at least {options.min_clusters + 1} "
            f"needed for {options.min_clusters} clusters (jobs.clustering.min_clusters)"
        )
    if float(np.ptp(data.vectors, axis=0).max()) < 1e-6:
        raise ClusteringInputError(f"all {n} tracks have the same embedding: nothing to cluster")


class ClusterSearch:
    """One search over one library; `run()` returns the best clustering."""

    def __init__(self, data: LibraryData, options: SearchOptions) -> None:
        check_library(data, options)
        self.data = data
        self.options = options
        self.rng = np.random.default_rng(options.seed)
        self.n = len(data.ids)
        self.spaces = self._spaces()
        self.strata = self._strata()
        self.sample = self._initial_sample()
        self.max_k = max(2, min(options.max_clusters, self.n - 1))
        self.min_k = min(options.min_clusters, self.max_k)

    # -- the sample ---------------------------------------------------------------------------

    def _spaces(self) -> list[str]:
        has_tags = self.data.tags is not None
        if self.options.space == "tags" and not has_tags:
            raise ClusteringInputError("space 'tags' asked for, but the rows carry no tags")
        if self.options.space != "auto":
            return [self.options.space]
        return ["embeddings", "tags"] if has_tags else ["embeddings"]

    def _strata(self) -> np.ndarray:
        if self.data.tags is not None:
            return np.asarray(self.data.tags.argmax(axis=1))
        k = min(16, max(2, self.n // 50))
        model = MiniBatchKMeans(k, n_init=1, random_state=int(self.rng.integers(1 << 31)))
        return np.asarray(model.fit_predict(self.data.vectors))

    def _initial_sample(self) -> np.ndarray:
        size = min(self.options.sample_size, self.n)
        if size >= self.n:
            return np.arange(self.n)
        chosen: list[int] = []
        for stratum in np.unique(self.strata):
            members = np.flatnonzero(self.strata == stratum)
            take = max(1, round(size * len(members) / self.n))
            chosen.extend(self.rng.choice(members, min(take, len(members)), replace=False))
        sample = np.unique(np.asarray(chosen))
        if len(sample) > size:
            sample = self.rng.choice(sample, size, replace=False)
        return np.sort(sample)

    def _perturb(self) -> None:
        """Swap a share of the sample for other tracks of the same strata."""
        if len(self.sample) >= self.n or self.options.sample_perturbation <= 0:
            return
        swaps = max(1, int(len(self.sample) * self.options.sample_perturbation))
        inside = np.zeros(self.n, bool)
        inside[self.sample] = True
        for position in self.rng.choice(len(self.sample), swaps, replace=False):
            stratum = self.strata[self.sample[position]]
            outside = np.flatnonzero(~inside & (self.strata == stratum))
            if len(outside) == 0:
                continue
            new = int(self.rng.choice(outside))
            inside[self.sample[position]], inside[new] = False, True
            self.sample[position] = new

    # -- genomes -----------------------------------------------------------------------------

    def random_genome(self) -> Genome:
        o, r = self.options, self.rng
        space = str(r.choice(self.spaces))
        dims = self._space(space).shape[1]
        top = min(o.max_pca_components, dims - 1)
        pca = int(r.integers(2, top + 1)) if top >= 2 and r.random() < 0.8 else 0
        return Genome(
            algorithm=str(r.choice(o.algorithms)),
            clusters=int(r.integers(self.min_k, self.max_k + 1)),
            space=space,
            pca=pca,
            eps_scale=float(r.uniform(0.5, 2.0)),
            min_samples=int(r.integers(3, 12)),
            covariance=str(r.choice(["diag", "spherical", "full"])),
        )

    def mutate(self, genome: Genome) -> Genome:
        r = self.rng
        dims = self._space(genome.space).shape[1]
        top = min(self.options.max_pca_components, dims - 1)
        clusters = int(np.clip(genome.clusters + r.integers(-3, 4), self.min_k, self.max_k))
        pca = genome.pca
        if pca and top >= 2:
            pca = int(np.clip(pca + r.integers(-4, 5), 2, top))
        return dataclasses.replace(
            genome,
            clusters=clusters,
            pca=pca,
            eps_scale=float(np.clip(genome.eps_scale * r.uniform(0.8, 1.25), 0.2, 4.0)),
            min_samples=int(np.clip(genome.min_samples + r.integers(-2, 3), 2, 30)),
        )

    # -- one run -----------------------------------------------------------------------------

    def _space(self, name: str) -> np.ndarray:
        if name == "tags" and self.data.tags is not None:
            return self.data.tags
        return self.data.vectors

    def fit(self, genome: Genome, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        """(points, labels, pca, model) of `genome` fitted on the library rows `rows`."""
        seed = int(self.rng.integers(1 << 31))
        points = self._space(genome.space)[rows]
        pca = None
        if genome.pca and genome.pca < min(points.shape):
            pca = PCA(genome.pca, random_state=seed)
            points = pca.fit_transform(points)
        k = min(genome.clusters, len(points) - 1)
        model: Any
        if genome.algorithm == "kmeans":
            model = KMeans(k, n_init=1, random_state=seed)
            labels = model.fit_predict(points)
        elif genome.algorithm == "gmm":
            model = GaussianMixture(k, covariance_type=genome.covariance, random_state=seed,
                                    max_iter=60, reg_covar=1e-4)  # fmt: skip
            labels = model.fit_predict(points)
        elif genome.algorithm == "dbscan":
            neighbours = NearestNeighbors(n_neighbors=min(genome.min_samples, len(points) - 1))
            distances, _ = neighbours.fit(points).kneighbors(points)
            eps = max(float(np.median(distances[:, -1])) * genome.eps_scale, 1e-6)
            model = DBSCAN(eps=eps, min_samples=genome.min_samples)
            labels = model.fit_predict(points)
        else:
            model = SpectralClustering(k, affinity="nearest_neighbors", random_state=seed,
                                       n_neighbors=min(10, len(points) - 1),
                                       assign_labels="cluster_qr")  # fmt: skip
            labels = model.fit_predict(points)
        return points, np.asarray(labels), pca, model

    def run_once(self, genome: Genome) -> RunResult:
        rows = self.sample
        if genome.algorithm == "spectral" and len(rows) > SPECTRAL_MAX_POINTS:
            rows = np.sort(self.rng.choice(rows, SPECTRAL_MAX_POINTS, replace=False))
        try:
            with warnings.catch_warnings():  # convergence, disconnected graphs: a poor score
                warnings.simplefilter("ignore")
                points, labels, _, _ = self.fit(genome, rows)
        except (ValueError, np.linalg.LinAlgError):
            return RunResult(genome, Fitness(0.0, {}, 0))
        tags = self.data.tags[rows] if self.data.tags is not None else None
        o = self.options
        return RunResult(genome, evaluate(points, labels, tags, o.weights, o.top_k_tags, self.rng))

    # -- the search --------------------------------------------------------------------------

    def run(
        self, on_progress: Progress | None = None, should_stop: Callable[[], bool] | None = None
    ) -> SearchResult:
        started = time.perf_counter()
        o = self.options
        elites: list[RunResult] = []
        explore = int(o.runs * o.explore_share)
        for i in range(o.runs):
            if should_stop is not None and should_stop():
                raise SearchCancelled(f"cancelled after {i} of {o.runs} runs")
            if i >= explore and elites and self.rng.random() < o.mutation_probability:
                genome = self.mutate(elites[int(self.rng.integers(len(elites)))].genome)
            else:
                genome = self.random_genome()
            result = self.run_once(genome)
            elites = sorted([*elites, result], key=lambda r: -r.fitness.score)[: o.elites]
            self._perturb()
            if on_progress is not None:
                on_progress(i + 1, o.runs, elites[0].fitness.score)
        best = elites[0]
        if best.fitness.score <= 0:
            raise ClusteringInputError(
                f"no run of {o.runs} found two or more clusters in {self.n} tracks"
            )
        labels = self.assign(best.genome)
        return SearchResult(best, labels, o.runs, time.perf_counter() - started, elites)

    def assign(self, genome: Genome) -> np.ndarray:
        """The best genome applied to the whole library (see the module docstring)."""
        rows = self.sample
        if genome.algorithm == "spectral" and len(rows) > SPECTRAL_MAX_POINTS:
            rows = np.sort(self.rng.choice(rows, SPECTRAL_MAX_POINTS, replace=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points, labels, pca, model = self.fit(genome, rows)
        everything = self._space(genome.space)
        if pca is not None:
            everything = pca.transform(everything)
        if genome.algorithm in ("kmeans", "gmm"):
            return np.asarray(model.predict(everything))
        clusters = [c for c in np.unique(labels) if c >= 0]
        centroids = np.stack([points[labels == c].mean(axis=0) for c in clusters])
        # |x - c|^2 without the n x k x d array: |c|^2 - 2 x.c (|x|^2 is the same for every c)
        distances = (centroids**2).sum(axis=1)[None, :] - 2.0 * everything @ centroids.T
        return np.asarray(distances.argmin(axis=1))
