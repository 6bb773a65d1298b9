"""Query filters: the tracks a request's `filters` rule out, for every query type.

Every operation searches with an exclusion set (`QueryContext.excluded`); the
tracks that fail the filters join it, so a filter holds the same way for
`recommend`, `similar`, `text`, `path`, `alchemy` and `fingerprint`, and the
candidate pools are drawn from the matching tracks only (a narrow filter does
not leave a reply short because the nearest tracks were filtered afterwards).

The scan is over the index's in-memory metadata: ~10 ms for 50,000 tracks in
Python, paid only by requests that carry filters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.errors import InvalidInput
from pipeline.recommender.index import ModelIndex, TrackInfo
from pipeline.schemas.queries import TrackFilters


def _words(text: str) -> str:
    return " ".join(text.casefold().split())


def _parse_key(text: str) -> tuple[str, str | None]:
    """(tonic, mode or None): a key typed without a mode matches both modes."""
    from models.analysis import parse_key  # librosa: only for requests that filter by key

    tonic, mode = parse_key(text)
    has_mode = any(w in text.casefold() for w in ("maj", "min")) or text.strip().endswith("m")
    return tonic, mode if has_mode else None


def track_test(filters: TrackFilters) -> Callable[[TrackInfo], bool]:
    """A predicate true for tracks that meet every filter (unknown figures fail)."""
    tests: list[Callable[[TrackInfo], bool]] = []
    if filters.bpm is not None:
        low, high = filters.bpm
        tests.append(lambda t: t.bpm > 0 and low <= t.bpm <= high)
    if filters.energy is not None:
        e_low, e_high = filters.energy
        tests.append(lambda t: t.energy >= 0 and e_low <= t.energy <= e_high)
    if filters.year is not None:
        y_low, y_high = filters.year
        tests.append(lambda t: t.year > 0 and y_low <= t.year <= y_high)
    if filters.duration is not None:
        d_low, d_high = filters.duration
        tests.append(lambda t: t.duration > 0 and d_low <= t.duration <= d_high)
    if filters.genre is not None:
        genres = {_words(g) for g in filters.genre}
        tests.append(lambda t: _words(t.genre) in genres)
    if filters.key is not None:
        try:
            tonic, mode = _parse_key(filters.key)
        except InvalidInput as exc:
            raise InvalidInput(f"filters.key: {exc}") from exc
        stored_keys: dict[str, tuple[str, str] | None] = {}

        def same_key(t: TrackInfo) -> bool:
            if t.musical_key not in stored_keys:
                tonic_mode = t.musical_key.split()
                stored_keys[t.musical_key] = (
                    (tonic_mode[0], tonic_mode[1]) if len(tonic_mode) == 2 else None
                )
            found = stored_keys[t.musical_key]
            return found is not None and found[0] == tonic and mode in (None, found[1])

        tests.append(same_key)
    return lambda track: all(test(track) for test in tests)


def filtered_out(indexes: Sequence[ModelIndex], filters: TrackFilters) -> tuple[set[str], int]:
    """(ids of the tracks the filters rule out, how many tracks pass) over `indexes`."""
    passes = track_test(filters)
    failing: set[str] = set()
    passing: set[str] = set()
    for index in indexes:
        for track in index.live_info():
            (passing if passes(track) else failing).add(track.track_id)
    return failing - passing, len(passing)
