"""Near-identical tracks: the same recording twice (a remaster, a copy in another folder).

Two tests, used by the `duplicates` request and by every result list:
- vectors: cosine distance below a threshold (0.02 by default);
- metadata: the same artist and the same title once version noise such as
  "(Remastered 2011)" is dropped.
"""

from __future__ import annotations

import re
import time

import numpy as np

from pipeline.recommender.common import Candidate, Outcome, QueryContext
from pipeline.recommender.index import ModelIndex, TrackInfo
from pipeline.schemas.queries import DuplicatePair, ScoredTrack

_VERSION_NOISE = re.compile(
    r"[\(\[][^\)\]]*(remaster|version|edit|mono|stereo|mix|deluxe|bonus)[^\)\]]*[\)\]]"
    r"|\s-\s.*(remaster|version|edit|mono|stereo).*$",
    re.IGNORECASE,
)
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
BLOCK_ROWS = 256  # a block's similarities with 50,000 tracks take 51 MB


def _words(text: str) -> str:
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def same_song_key(info: TrackInfo | None) -> tuple[str, str] | None:
    """(artist, title) with version noise removed; None when the title is unknown."""
    if info is None or not info.title.strip():
        return None
    return _words(info.artist), _words(_VERSION_NOISE.sub(" ", info.title))


def run(ctx: QueryContext) -> Outcome:
    """The `duplicates` request: pairs closer than the threshold in the first model."""
    index = ctx.models()[0]
    if len(ctx.request.models) > 1:
        ctx.warn(f"duplicates compares tracks in one model: {index.model}")
    threshold = float(ctx.request.threshold)
    if index.cache_vectors:
        pairs = _pairs_in_memory(ctx, index, threshold)
    else:
        pairs = _pairs_via_milvus(ctx, index, threshold)
    pairs.sort(key=lambda p: (p[2], p[0], p[1]))
    pairs = pairs[: ctx.limit]
    info = index.info({t for a, b, _ in pairs for t in (a, b)})
    out = [
        DuplicatePair(first=_scored(info, a, 1 - d), second=_scored(info, b, 1 - d), distance=d)
        for a, b, d in pairs
    ]
    tracks = {}
    for a, b, d in pairs:
        for track_id in (a, b):
            tracks.setdefault(track_id, Candidate(track_id, 1 - d, {index.model: 1 - d}))
    return Outcome(tracks=list(tracks.values()), pairs=out)


def _scored(info: dict[str, TrackInfo], track_id: str, score: float) -> ScoredTrack:
    track = info.get(track_id, TrackInfo(track_id))
    return ScoredTrack(
        track_id=track_id,
        score=round(score, 6),
        artist=track.artist or None,
        title=track.title or None,
        album=track.album or None,
    )


def _pairs_in_memory(
    ctx: QueryContext, index: ModelIndex, threshold: float
) -> list[tuple[str, str, float]]:
    """Block by block over the upper triangle of the similarity matrix (exact)."""
    view = index.view()
    assert view.vectors is not None
    vectors = view.vectors[: view.n]
    alive = view.alive[: view.n]
    pairs = []
    for start in range(0, view.n, BLOCK_ROWS):
        if _out_of_time(ctx):
            ctx.warn(f"stopped at the deadline after comparing {start} of {view.n} tracks")
            break
        block = vectors[start : start + BLOCK_ROWS] @ vectors[start:].T
        rows, cols = np.nonzero(block > 1.0 - threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i, j = start + r, start + c
            if j > i and alive[i] and alive[j]:
                distance = max(0.0, 1.0 - float(block[r, c]))
                pairs.append((view.ids[i], view.ids[j], round(distance, 6)))
    return pairs


def _pairs_via_milvus(
    ctx: QueryContext, index: ModelIndex, threshold: float
) -> list[tuple[str, str, float]]:
    """Each stored vector's nearest neighbours, page by page (libraries too big to cache)."""
    pairs = {}
    scanned = 0
    for page in index.store.iterate(index.collection, with_vectors=True):
        if _out_of_time(ctx):
            ctx.warn(f"stopped at the deadline after comparing {scanned} tracks")
            break
        ids = [str(row["track_id"]) for row in page]
        hits = index.search(np.stack([row["embedding"] for row in page]), k=16)
        for track_id, row in zip(ids, hits, strict=True):
            for other, score in row:
                if other != track_id and score > 1.0 - threshold:
                    a, b = sorted((track_id, other))
                    pairs[(a, b)] = round(max(0.0, 1.0 - score), 6)
        scanned += len(ids)
    return [(a, b, d) for (a, b), d in pairs.items()]


def _out_of_time(ctx: QueryContext) -> bool:
    """Leave a tenth of the time for the reply: a partial answer beats a timeout."""
    if ctx.deadline is None:
        return False
    return time.monotonic() > ctx.deadline - 0.1 * max(0.0, ctx.deadline - ctx.started)
