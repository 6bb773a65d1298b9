"""Near-identical tracks: the same recording twice (a remaster, a copy in another folder).

Two tests, used by the `duplicates` request and by every result list:
- vectors: cosine distance below a threshold (0.02 by default);
- metadata: the same artist and the same title once version noise such as
  "(Remastered 2011)" is dropped.

Finding every pair compares every track with every other: at 50,000 x 600
that is ~18 s of one core here, longer than a request may wait. So each index
is scanned once in the background (`PairScan`), the first request gets what
was found so far with a warning, and later requests get the whole list, kept
current from the index's change log (a changed track is compared with all
others again: milliseconds). A cached index is compared exactly, block by
block in memory; a library too big to cache is read from Milvus page by page,
each track with its `NEIGHBOURS` nearest neighbours from a Milvus search.

The scans are kept here, one per index (`pair_scan`), not on the index: the
index knows nothing of this feature. They last as long as their index does;
an index rebuilt by `Library.reconcile` is a new index, scanned anew.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import weakref

import numpy as np

from pipeline.recommender.common import Candidate, Outcome, QueryContext
from pipeline.recommender.index import ModelIndex, TrackInfo, View
from pipeline.schemas.queries import DuplicatePair, ScoredTrack

BLOCK_ROWS = 256  # a block's similarities with 50,000 tracks take 51 MB
# Pairs are kept up to this distance (or the request's, if larger), so requests with
# any smaller threshold share one scan.
SCAN_THRESHOLD = 0.05
# Uncached libraries: neighbours asked of Milvus per track. A track with more near-copies
# than this keeps only its nearest ones (as many copies of one song are rare).
NEIGHBOURS = 16
log = logging.getLogger(__name__)
_starting = threading.Lock()


def run(ctx: QueryContext) -> Outcome:
    """The `duplicates` request: pairs closer than the threshold in the first model."""
    index = ctx.models()[0]
    if len(ctx.request.models) > 1:
        ctx.warn(f"duplicates compares tracks in one model: {index.model}")
    threshold = float(ctx.request.threshold)
    pairs = _pairs_from_scan(ctx, index, threshold)
    excluded = ctx.excluded()  # `exclude_track_ids` and `filters`: both tracks must pass
    pairs = [p for p in pairs if p[0] not in excluded and p[1] not in excluded]
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


class PairScan:
    """Every pair of an index's tracks closer than `threshold` (cosine distance).

    A thread compares the tracks: block by block over the upper triangle of the
    similarity matrix when the vectors are in memory (exact), else page by page
    from Milvus with a neighbour search per track. `pairs()` then brings the
    result up to the index's current version by comparing the tracks changed
    since with every track.
    """

    def __init__(self, index: ModelIndex, threshold: float) -> None:
        # Weak, so that the registry's entry (keyed weakly by the index) goes with the index.
        self._index = weakref.ref(index)
        self.threshold = threshold
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.scanned = 0
        self.total = 0
        self._pairs: dict[tuple[str, str], float] = {}
        self._version = -1  # the index version the pairs reflect, once done
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._scan, name=f"duplicates-{index.model}", daemon=True
        )

    def start(self) -> PairScan:
        self._thread.start()
        return self

    @property
    def index(self) -> ModelIndex:
        index = self._index()
        if index is None:  # unreachable: whoever holds a scan got it for an index they hold
            raise ReferenceError(f"the {self._thread.name} scan outlived its index")
        return index

    @property
    def usable(self) -> bool:
        """False once it failed or its index changed more than the change log remembers."""
        if self.error is not None:
            return False
        if not self.done.is_set():
            return True
        return self.index.changes_since(self._version)[1] is not None

    def _scan(self) -> None:
        try:
            self._scan_index(self.index)  # the argument holds the index for the whole scan
        except BaseException as exc:  # the waiting request reports it; the next one rescans
            _forget_locals(exc)
            self.error = exc
        finally:
            self.done.set()

    def _scan_index(self, index: ModelIndex) -> None:
        started = time.perf_counter()
        view, version = index.versioned_view()
        if view.vectors is None:
            self._scan_milvus()
        else:
            self._scan_memory(view)
        self._version = version
        log.info(
            "duplicates of %s: %d tracks compared in %.1f s, %d pair(s) within %.3f",
            index.model,
            self.total,
            time.perf_counter() - started,
            len(self._pairs),
            self.threshold,
            extra={"model": index.model},
        )

    def _scan_memory(self, view: View) -> None:
        assert view.vectors is not None
        vectors, alive, ids = view.vectors[: view.n], view.alive[: view.n], view.ids
        self.total = int(alive.sum())
        for start in range(0, view.n, BLOCK_ROWS):
            block = vectors[start : start + BLOCK_ROWS] @ vectors[start:].T
            rows, cols = np.nonzero(block > 1.0 - self.threshold)
            found = {}
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                i, j = start + r, start + c
                if j > i and alive[i] and alive[j]:
                    found[_pair(ids[i], ids[j])] = _distance(float(block[r, c]))
            with self._lock:
                self._pairs.update(found)
                self.scanned = min(start + BLOCK_ROWS, view.n) * self.total // max(view.n, 1)

    def _scan_milvus(self) -> None:
        """Changes made while the pages are read are in the change log after `version`
        (read before the first page), so `pairs()` compares those tracks again."""
        self.total = self.index.size
        for page in self.index.store.iterate(self.index.collection, with_vectors=True):
            ids = [row.track_id for row in page]
            found = self._neighbours(ids, np.stack([row.vector for row in page]))
            with self._lock:
                self._pairs.update(found)
                self.scanned = min(self.scanned + len(ids), self.total)

    def _neighbours(self, ids: list[str], vectors: np.ndarray) -> dict[tuple[str, str], float]:
        """Pairs of each given track with its nearest neighbours (a Milvus search)."""
        found = {}
        hits = self.index.search(vectors, k=NEIGHBOURS)
        for track_id, row in zip(ids, hits, strict=True):
            for other, score in row:
                if other != track_id and score > 1.0 - self.threshold:
                    found[_pair(track_id, other)] = _distance(score)
        return found

    def pairs(self) -> dict[tuple[str, str], float]:
        """The pairs as of now: all of them once done, else those found so far."""
        with self._lock:
            if self.done.is_set() and self.error is None:
                version, changed = self.index.changes_since(self._version)
                if changed:
                    self._refresh(changed)
                if changed is not None:
                    self._version = version
            return dict(self._pairs)

    def _refresh(self, changed: set[str]) -> None:
        """Forget the changed tracks' pairs and compare those still present with every track."""
        self._pairs = {pair: d for pair, d in self._pairs.items() if not changed.intersection(pair)}
        found, matrix = self.index.vectors(sorted(changed))
        if not found:
            return
        view = self.index.view()
        if view.vectors is None:
            self._pairs.update(self._neighbours(found, matrix))
            return
        sims = matrix @ view.vectors[: view.n].T
        rows, cols = np.nonzero(sims > 1.0 - self.threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            other = view.ids[c]
            if other != found[r] and view.alive[c]:
                self._pairs[_pair(found[r], other)] = _distance(float(sims[r, c]))


def _forget_locals(error: BaseException) -> None:
    """Clear the local variables of a failed scan's frames, and of the errors chained to it:
    they hold the index, which a scan kept in `_scans` must not (it would never go away).
    The tracebacks keep their lines, for the log of the request that reports the error."""
    pending: list[BaseException | None] = [error]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        pending += [exc.__cause__, exc.__context__]


def _pair(a: str, b: str) -> tuple[str, str]:
    """A pair's key: the same whichever track was found first."""
    return (a, b) if a <= b else (b, a)


def _distance(similarity: float) -> float:
    return round(max(0.0, 1.0 - similarity), 6)


# Each index's latest scan (see the module docstring).
_scans: weakref.WeakKeyDictionary[ModelIndex, PairScan] = weakref.WeakKeyDictionary()


def pair_scan(index: ModelIndex, threshold: float) -> PairScan:
    """The index's scan covering `threshold`, started now if there is none (or it is stale)."""
    with _starting:
        scan = _scans.get(index)
        if scan is None or scan.threshold < threshold or not scan.usable:
            scan = PairScan(index, max(threshold, SCAN_THRESHOLD)).start()
            _scans[index] = scan
        return scan


def scan_of(index: ModelIndex) -> PairScan | None:
    """The index's latest scan, if one was started (it starts none)."""
    with _starting:
        return _scans.get(index)


def _pairs_from_scan(
    ctx: QueryContext, index: ModelIndex, threshold: float
) -> list[tuple[str, str, float]]:
    """Pairs from the index's scan; while it runs, what it found up to the deadline
    (a tenth of the request's time is left for the reply: a partial answer beats a timeout)."""
    scan = pair_scan(index, threshold)
    if ctx.deadline is None:
        scan.done.wait()
    else:
        reserve = 0.1 * max(0.0, ctx.deadline - ctx.started)
        scan.done.wait(max(0.0, ctx.deadline - reserve - time.monotonic()))
    if scan.error is not None:
        raise scan.error
    found = scan.pairs()
    if not scan.done.is_set():
        ctx.warn(
            f"compared {scan.scanned} of {scan.total} tracks so far: the comparison goes on "
            "in the background, ask again in a moment for every pair"
        )
    return [(a, b, d) for (a, b), d in found.items() if d < threshold]
