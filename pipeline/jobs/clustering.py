"""The `clustering` job: the library's playlists, found by an evolutionary clustering search.

Reads the model's collection (vectors, tags, artists, titles, paths), runs the
search (`pipeline.recommender.clustering`) in a thread with progress (runs done
/ total, best score so far), post-processes and names the playlists, then
writes them: M3U8 files staged, Navidrome's automatic set replaced (when
`navidrome.url` is set and `write_navidrome`), then the M3U8 folder swapped in.
A cancel is honoured until the writing starts; after that the job finishes, so
nothing is half-written. Params: any field of `jobs.clustering`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from pipeline.errors import InvalidInput, NotFound, SonicbusError, Unavailable
from pipeline.job_settings import ClusteringSettings
from pipeline.jobs.context import JobCancelled, JobContext
from pipeline.jobs.playlist_output import (
    commit_m3u,
    discard_m3u,
    replace_navidrome_playlists,
    stage_m3u,
)
from pipeline.recommender.clustering import (
    ClusterSearch,
    FitnessWeights,
    LibraryData,
    Playlist,
    PlaylistOptions,
    SearchCancelled,
    SearchOptions,
    build_playlists,
)
from pipeline.schemas.base import describe_validation_error
from pipeline.store import VectorStore


def clustering_options(defaults: ClusteringSettings, params: dict[str, Any]) -> ClusteringSettings:
    """The settings with the job's params applied; unknown or invalid params: InvalidInput."""
    unknown = sorted(set(params) - set(ClusteringSettings.model_fields))
    if unknown:
        raise InvalidInput(
            f"unknown clustering params {unknown}; "
            f"known: {', '.join(ClusteringSettings.model_fields)}"
        )
    try:
        options = ClusteringSettings.model_validate({**defaults.model_dump(), **params})
    except ValidationError as exc:
        raise InvalidInput(f"clustering params: {describe_validation_error(exc)}") from exc
    if options.min_clusters > options.max_clusters:
        raise InvalidInput("clustering params: min_clusters is above max_clusters")
    return options


def search_options(o: ClusteringSettings) -> SearchOptions:
    return SearchOptions(
        runs=o.runs, algorithms=tuple(o.algorithms), space=o.space, min_clusters=o.min_clusters,
        max_clusters=o.max_clusters, max_pca_components=o.max_pca_components,
        sample_size=o.sample_size, sample_perturbation=o.sample_perturbation, elites=o.elites,
        explore_share=o.explore_share, mutation_probability=o.mutation_probability,
        top_k_tags=o.top_k_tags, seed=o.seed,
        weights=FitnessWeights(o.weight_purity, o.weight_diversity, o.weight_silhouette,
                               o.weight_davies_bouldin, o.weight_calinski_harabasz),
    )  # fmt: skip


def load_library(
    store: VectorStore, model: str
) -> tuple[LibraryData, dict[str, tuple[str, str, float]]]:
    """The model's rows as the search reads them, and each track's M3U8 entry."""
    from models.musicnn_net import MSD_TAGS

    collection = store.active_collection(model)
    if not store.has_collection(collection):
        raise NotFound(f"no collection for model {model!r}: embed the library first")
    ids, vectors, tags, artists, titles = [], [], [], [], []
    entries: dict[str, tuple[str, str, float]] = {}
    for page in store.iterate(collection, with_vectors=True):
        for row in page:
            ids.append(row.track_id)
            vectors.append(row.vector)
            tags.append(row.extra.get("tags"))
            artists.append(row.artist)
            titles.append(row.title)
            label = f"{row.artist or '?'} - {row.title or row.track_id}"
            entries[row.track_id] = (str(row.extra.get("path") or ""), label, row.duration)
    if not ids:
        raise InvalidInput(f"library too small to cluster: the {model} collection is empty")
    tag_matrix = None
    if all(isinstance(t, list) and len(t) == len(MSD_TAGS) for t in tags):
        tag_matrix = np.asarray(tags, dtype=np.float32)
    data = LibraryData(ids, np.stack(vectors).astype(np.float32), tag_matrix,
                       MSD_TAGS if tag_matrix is not None else (), artists, titles)  # fmt: skip
    return data, entries


def listed_songs(
    data: LibraryData, playlists: Sequence[Playlist], budget: int
) -> list[list[dict[str, str]]]:
    """Each playlist's songs as people read them (the web UI's jobs page lists them from the
    done event), in order, within `budget` bytes of JSON in all: the event must fit in one
    record, so a huge set lists its first songs only (the M3U8 files and Navidrome have all)."""
    known = {tid: (artist, title) for tid, artist, title
             in zip(data.ids, data.artists, data.titles, strict=True)}  # fmt: skip
    listed: list[list[dict[str, str]]] = []
    for playlist in playlists:
        songs: list[dict[str, str]] = []
        for track_id in playlist.track_ids:
            artist, title = known.get(track_id, ("", ""))
            song = {"track_id": track_id, "artist": artist or "", "title": title or ""}
            budget -= len(json.dumps(song)) + 2
            if budget < 0:
                break
            songs.append(song)
        listed.append(songs)
    return listed


async def run_clustering(ctx: JobContext) -> dict[str, Any]:
    settings = ctx.settings
    o = clustering_options(settings.jobs.clustering, ctx.request.params)
    store = ctx.require_store()
    ctx.progress(0, o.runs, message="reading the library")
    data, entries = await asyncio.to_thread(load_library, store, o.model)

    def on_progress(done: int, total: int, best: float) -> None:
        ctx.progress(done, total, best, f"run {done}/{total}")

    def search() -> Any:
        return ClusterSearch(data, search_options(o)).run(on_progress, ctx.should_stop)

    try:
        result = await asyncio.to_thread(search)
    except SearchCancelled as exc:
        ctx.check_cancelled()
        raise JobCancelled(str(exc)) from exc
    ctx.check_cancelled()  # the last moment to stop: the writing below is never half-done
    rng = np.random.default_rng(o.seed)
    options = PlaylistOptions(o.duplicate_similarity, o.min_playlist_size, o.max_playlist_size,
                              o.playlists, o.max_per_artist, o.top_k_tags)  # fmt: skip
    playlists = build_playlists(data, result.labels, options, rng)
    if not playlists:
        raise InvalidInput(
            f"no playlist of {o.min_playlist_size} or more songs left after post-processing "
            f"({len(data.ids)} tracks in {result.figures()['clusters']} clusters)"
        )
    folder = o.m3u_dir or settings.home / "playlists"
    clusters = {tid: int(label) for tid, label in zip(data.ids, result.labels, strict=True)}
    staging = await asyncio.to_thread(stage_m3u, folder, playlists, entries, clusters)
    navidrome: dict[str, Any] | None = None
    try:
        if o.write_navidrome and settings.navidrome.url:
            ctx.progress(o.runs, o.runs, result.best.fitness.score, "writing Navidrome playlists")
            navidrome = await replace_navidrome_playlists(settings.navidrome, playlists, o.suffix)
    except SonicbusError as exc:
        discard_m3u(staging)
        raise Unavailable(
            f"the playlists were not written (the previous automatic set on Navidrome and the "
            f"M3U8 files are unchanged): {exc}"
        ) from exc
    except BaseException:
        discard_m3u(staging)
        raise
    await asyncio.to_thread(commit_m3u, staging, folder)
    figures = result.figures()
    songs = listed_songs(data, playlists, settings.kafka.max_message_bytes // 2)
    return {
        **figures,
        "tracks": len(data.ids),
        "space_has_tags": data.tags is not None,
        "playlists": [{"name": p.name, "tracks": len(p.track_ids), "tags": p.tags,
                       "songs": listed} for p, listed in zip(playlists, songs, strict=True)],
        "m3u_dir": str(folder),
        "navidrome": navidrome,
        "message": f"{len(playlists)} playlists from {len(data.ids)} tracks, best score "
        f"{figures['best_score']} ({figures['best']['algorithm']}, {figures['clusters']} clusters)",
    }
