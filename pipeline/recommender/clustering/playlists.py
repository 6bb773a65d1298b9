"""From clusters to playlists: post-processing and names.

Per cluster, members are ordered by closeness to the cluster's centre; then
near-duplicates (cosine above `duplicate_similarity`, or the same artist and
title) are removed, an artist keeps at most `max_per_artist` songs, and the
list is cut at `max_size`. Playlists under `min_size` are dropped; of the rest
the `keep` most different are chosen (farthest-point selection on their
centres, starting from the largest), and each is shuffled.

Names come from the dominant tags ("Ambient_Instrumental_Chillout"): ASCII,
15-35 characters, unique within the set. Without tags, from the most frequent
artists ("Mix_Artist_Other").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.recommender.clustering.search import LibraryData

NAME_MIN, NAME_MAX = 15, 35


@dataclass(frozen=True)
class PlaylistOptions:
    duplicate_similarity: float = 0.995
    min_size: int = 8
    max_size: int = 100
    keep: int = 20
    max_per_artist: int = 3
    top_k_tags: int = 3


@dataclass
class Playlist:
    name: str
    track_ids: list[str]
    tags: list[str]
    cluster: int


def _token(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = [w for w in re.split(r"[^A-Za-z0-9]+", ascii_text) if w]
    return "".join(w[:1].upper() + w[1:] for w in words)


def _compose(tokens: list[str], limit: int) -> str:
    """Join the first tokens while the name stays within NAME_MAX; at least `limit` of them
    when they fit, more while the name is shorter than NAME_MIN."""
    name = ""
    for i, token in enumerate(tokens):
        candidate = f"{name}_{token}" if name else token
        if len(candidate) > NAME_MAX:
            break
        if i >= limit and len(name) >= NAME_MIN:
            break
        name = candidate
    if not name:
        name = tokens[0][:NAME_MAX] if tokens else "Mix"
    while len(name) < NAME_MIN:
        name = f"{name}_Mix"[:NAME_MAX]
    return name


def playlist_name(tokens: list[str], limit: int, taken: set[str]) -> str:
    """A unique name from ranked tokens (see the module docstring)."""
    tokens = [t for t in (_token(t) for t in tokens) if t] or ["Mix"]
    name = _compose(tokens, limit)
    for shift in range(1, len(tokens)):  # another tag in the last place
        if name not in taken:
            break
        name = _compose([*tokens[: limit - 1], *tokens[limit - 1 + shift :]], limit)
    number = 2
    base = name
    while name in taken:
        suffix = f"_{number}"
        name = base[: NAME_MAX - len(suffix)] + suffix
        number += 1
    taken.add(name)
    return name


def _clean_members(members: np.ndarray, data: LibraryData, options: PlaylistOptions) -> list[int]:
    vectors = data.vectors[members]
    centre = vectors.mean(axis=0)
    ordered = members[np.argsort(-(vectors @ centre))]
    kept: list[int] = []
    per_artist: Counter[str] = Counter()
    seen_songs: set[tuple[str, str]] = set()
    for row in ordered:
        artist = (data.artists[row] if data.artists else "").strip().lower()
        title = (data.titles[row] if data.titles else "").strip().lower()
        if artist and title and (artist, title) in seen_songs:
            continue
        if kept and float((data.vectors[kept] @ data.vectors[row]).max()) > (
            options.duplicate_similarity
        ):
            continue
        if artist and per_artist[artist] >= options.max_per_artist:
            continue
        kept.append(int(row))
        per_artist[artist] += 1
        if artist and title:
            seen_songs.add((artist, title))
        if len(kept) >= options.max_size:
            break
    return kept


def _most_different(centres: np.ndarray, sizes: list[int], keep: int) -> list[int]:
    chosen = [int(np.argmax(sizes))]
    while len(chosen) < min(keep, len(centres)):
        similarity = (centres @ centres[chosen].T).max(axis=1)
        similarity[chosen] = np.inf
        chosen.append(int(np.argmin(similarity)))
    return chosen


def build_playlists(
    data: LibraryData,
    labels: np.ndarray,
    options: PlaylistOptions,
    rng: np.random.Generator,
) -> list[Playlist]:
    """The post-processed, named playlists of a clustering of the whole library."""
    candidates: list[tuple[int, list[int]]] = []
    for cluster in np.unique(labels):
        if cluster < 0:
            continue
        kept = _clean_members(np.flatnonzero(labels == cluster), data, options)
        if len(kept) >= options.min_size:
            candidates.append((int(cluster), kept))
    if not candidates:
        return []
    centres = np.stack([data.vectors[rows].mean(axis=0) for _, rows in candidates])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-9)
    chosen = _most_different(centres, [len(rows) for _, rows in candidates], options.keep)
    taken: set[str] = set()
    playlists = []
    for index in chosen:
        cluster, rows = candidates[index]
        if data.tags is not None and data.tag_names:
            ranked = np.argsort(-data.tags[rows].mean(axis=0))
            tokens = [data.tag_names[i] for i in ranked[:8]]
            tags = tokens[: options.top_k_tags]
        else:
            artists = Counter(data.artists[r] for r in rows if data.artists and data.artists[r])
            tokens = ["Mix", *[a for a, _ in artists.most_common(4)]]
            tags = []
        name = playlist_name(tokens, options.top_k_tags, taken)
        order = list(rows)
        rng.shuffle(order)
        playlists.append(Playlist(name, [data.ids[r] for r in order], tags, cluster))
    return playlists
