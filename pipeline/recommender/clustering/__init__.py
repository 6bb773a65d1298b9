"""Playlists found by clustering the whole library (the `clustering` job's core; no IO).

- `search`: the evolutionary search over clustering runs and the best run applied to
  the whole library;
- `fitness`: the combined, normalised score of one run;
- `playlists`: post-processing (near-duplicates, sizes, the most different, artist cap,
  shuffle) and names from the dominant tags.
"""

from pipeline.recommender.clustering.fitness import FitnessWeights
from pipeline.recommender.clustering.playlists import Playlist, PlaylistOptions, build_playlists
from pipeline.recommender.clustering.search import (
    ClusteringInputError,
    ClusterSearch,
    LibraryData,
    SearchCancelled,
    SearchOptions,
    SearchResult,
)

__all__ = [
    "ClusterSearch",
    "ClusteringInputError",
    "FitnessWeights",
    "LibraryData",
    "Playlist",
    "PlaylistOptions",
    "SearchCancelled",
    "SearchOptions",
    "SearchResult",
    "build_playlists",
]
