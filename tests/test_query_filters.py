"""Filters on tempo, key, energy, year, genre and duration hold on every query type.

The synthetic library (tests/fixtures/library.py) gives each cluster known
figures: rock 120-142 BPM in A minor / C major from 1970, metal 160+ BPM in
E minor, jazz 90+ BPM, ambient 70 BPM in C major; the arc tracks have none
(like a track too short for a tempo), so any filter on a figure leaves them out.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter

import pytest

from pipeline.recommender.filters import track_test
from pipeline.recommender.index import TrackInfo
from pipeline.schemas.queries import QueryReply, TrackFilters
from tests.fixtures.library import Running

pytestmark = pytest.mark.timeout(120)

ROCK_FAST = {"bpm": [130, 142]}  # rock5 .. rock11


async def ask(running: Running, **request: object) -> QueryReply:
    request.setdefault("request_id", uuid.uuid4().hex)
    return await running.client.ask(request, timeout=20)


def figures(running: Running, reply: QueryReply) -> list[dict]:
    assert reply.ok, reply.error
    lib = running.library
    return [lib.tracks[t.track_id].analysis | {"year": lib.tracks[t.track_id].year,
            "genre": lib.tracks[t.track_id].genre} for t in reply.tracks]  # fmt: skip


@pytest.mark.parametrize(
    "request_fields",
    [
        {"type": "similar", "track_id": "jazz0"},
        {"type": "recommend", "seeds": [{"track_id": "ambient0"}]},
        {"type": "text", "prompt": "jazz"},
        {"type": "alchemy", "add_track_ids": ["jazz1"], "subtract_track_ids": ["ambient1"]},
        {"type": "fingerprint", "seeds": [{"track_id": "jazz2", "weight": 3}]},
    ],
    ids=lambda fields: fields["type"],
)
async def test_a_tempo_filter_holds_on_every_query_type(
    running: Running, request_fields: dict
) -> None:
    # Each request starts far from fast rock; the filter still returns only fast rock.
    reply = await ask(running, **request_fields, filters=ROCK_FAST, limit=5)
    found = figures(running, reply)
    assert found, reply.warnings
    assert all(130 <= f["bpm"] <= 142 and f["genre"] == "Rock" for f in found), found
    assert all(t.bpm and 130 <= t.bpm <= 142 for t in reply.tracks)  # the reply shows it


async def test_key_year_genre_and_energy_filters_combine(running: Running) -> None:
    filters = {"key": "Am", "year": [1970, 1990], "energy": [0.5, 1.0]}
    reply = await ask(running, type="similar", track_id="rock0", limit=20, filters=filters)
    found = figures(running, reply)
    assert found
    for f in found:
        assert (f["key"], f["mode"]) == ("A", "minor")
        assert 1970 <= f["year"] <= 1990 and f["energy"] >= 0.5
    reply = await ask(running, type="similar", track_id="rock0", limit=20,
                      filters={"genre": [" jazz", "AMBIENT"]})  # fmt: skip
    assert {f["genre"] for f in figures(running, reply)} == {"Jazz", "Ambient"}


async def test_a_path_keeps_its_ends_and_filters_the_steps(running: Running) -> None:
    reply = await ask(running, type="path", start_track_id="rock0", end_track_id="jazz0",
                      steps=5, filters={"bpm": [60, 100]})  # fmt: skip
    assert reply.ok, reply.error
    middle = [t.track_id for t in reply.tracks[1:-1]]
    assert middle and all(running.library.tracks[t].analysis["bpm"] <= 100 for t in middle)


async def test_a_filter_nothing_matches_answers_empty_and_says_so(running: Running) -> None:
    reply = await ask(running, type="similar", track_id="rock0", filters={"bpm": [300, 400]})
    assert reply.ok and reply.tracks == []
    assert any("no track matches the filters (bpm [300.0, 400.0])" in w for w in reply.warnings)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"bpm": [140, 120]}, "bpm: [140, 120] is an empty range"),
        ({"key": "H minor"}, "filters.key: not a key: 'H minor'"),
        ({"tempo": [1, 2]}, "tempo"),
    ],
)
async def test_contradictory_or_unknown_filters_get_a_clear_error(
    running: Running, filters: dict, message: str
) -> None:
    # Published as raw JSON: the Python client would refuse to send it (it validates too).
    request_id = uuid.uuid4().hex
    body = {"type": "similar", "request_id": request_id, "track_id": "rock0", "filters": filters}
    reply = await running.client.ask_raw(json.dumps(body).encode(), key=request_id, timeout=20)
    assert reply.error is not None and reply.error.code == "invalid_request", reply
    assert message in reply.error.message


def test_unknown_figures_fail_a_filter_on_them_and_a_key_without_mode_matches_both() -> None:
    unmeasured = TrackInfo("short")
    a_minor = TrackInfo("t", bpm=128.0, musical_key="A minor", energy=0.0, year=1999,
                        genre="Rock", duration=200.0)  # fmt: skip
    for filters in ({"bpm": [0, 500]}, {"energy": [0, 1]}, {"year": [0, 3000]},
                    {"key": "A"}, {"genre": ["rock"]}, {"duration": [0, 999]}):  # fmt: skip
        passes = track_test(TrackFilters.model_validate(filters))
        assert not passes(unmeasured), filters
        assert passes(a_minor), filters
    assert not track_test(TrackFilters(key="A major"))(a_minor)
    assert track_test(TrackFilters(key="a min"))(a_minor)


async def test_tempo_and_energy_words_in_a_text_prompt_become_filters_shown_in_the_reply(
    running: Running,
) -> None:
    calm = await ask(running, type="text", prompt="calm", limit=10)
    found = figures(running, calm)
    assert found and all(f["energy"] <= 0.4 for f in found), found
    assert calm.plan is not None and calm.plan.understood == ["calm -> energy [0, 0.4]"]

    slow_jazz = await ask(running, type="text", prompt="slow jazz", limit=10)
    assert all(f["bpm"] <= 95 for f in figures(running, slow_jazz))
    assert slow_jazz.tracks[0].genre == "Jazz"  # the words also stay in the prompt

    # A filter the request gives wins over the word's range, field by field.
    fast = await ask(running, type="text", prompt="fast", limit=10, filters={"bpm": [150, 200]})
    assert {f["genre"] for f in figures(running, fast)} == {"Metal"}
    assert fast.plan is not None and fast.plan.filters.bpm == (150, 200)  # type: ignore[union-attr]

    plain = await ask(running, type="text", prompt="rock", limit=5)
    assert plain.plan is None and plain.tracks


EXAMPLE = "20 minutes of calm piano, nothing before 1990, no more than two songs per artist"


async def test_instant_reads_the_example_sentence_and_its_answer_keeps_every_condition(
    running: Running,
) -> None:
    reply = await ask(running, type="instant", sentence=EXAMPLE)
    assert reply.ok, reply.error
    plan = reply.plan
    assert plan is not None
    assert plan.prompt == "calm piano" and plan.minutes == 20 and plan.max_per_artist == 2
    assert plan.filters is not None
    assert plan.filters.energy == (0.0, 0.4) and plan.filters.year[0] == 1990  # type: ignore[index]
    assert "nothing before 1990 -> year >= 1990" in plan.understood

    lib = running.library
    chosen = [lib.tracks[t.track_id] for t in reply.tracks]
    assert chosen
    assert all(t.year >= 1990 and t.analysis["energy"] <= 0.4 for t in chosen)
    assert max(Counter(t.artist for t in chosen).values()) <= 2
    total = sum(t.duration for t in chosen)
    assert abs(total - 20 * 60) <= max(t.duration for t in chosen) / 2, total


async def test_tempo_and_energy_words_no_track_meets_only_steer_the_search(
    running: Running,
) -> None:
    """No track is both slow (<= 95 BPM) and loud (energy >= 0.65): the words are dropped
    with a warning, in `text` and in `instant`, and the songs still come; a year the
    sentence states stays a condition."""
    text = await ask(running, type="text", prompt="slow loud", limit=5)
    assert text.ok and text.tracks and text.plan is not None and text.plan.filters is None
    said = "no track matches the tempo and energy words (slow -> bpm [30, 95]; loud"
    assert any(w.startswith(said) for w in text.warnings), text.warnings

    sentence = "five songs, slow and loud, nothing before 1980"
    reply = await ask(running, type="instant", sentence=sentence)
    assert reply.ok and reply.plan is not None and len(reply.tracks) == 5
    assert any(w.startswith(said) for w in reply.warnings), reply.warnings
    assert reply.plan.filters is not None and reply.plan.filters.bpm is None
    assert reply.plan.filters.energy is None and reply.plan.filters.year[0] == 1980  # type: ignore[index]
    assert all(f["year"] >= 1980 for f in figures(running, reply))


async def test_instant_with_a_count_a_key_and_a_tempo_range(running: Running) -> None:
    sentence = "three songs in A minor between 118 and 135 bpm"
    reply = await ask(running, type="instant", sentence=sentence)
    assert reply.plan is not None and reply.plan.count == 3 and reply.plan.prompt is None
    assert any("no sound described" in w for w in reply.warnings)
    found = figures(running, reply)
    assert len(found) == 3
    assert all(f["key"] == "A" and f["mode"] == "minor" and 118 <= f["bpm"] <= 135 for f in found)


@pytest.mark.parametrize("sentence", ["?!", "1234", "xyzzy", "asdf qwerty", "ruhige Klaviermusik"])
async def test_a_sentence_with_nothing_understood_says_so(running: Running, sentence: str) -> None:
    reply = await ask(running, type="instant", sentence=sentence)
    assert reply.ok and reply.tracks == []
    assert reply.plan is not None and reply.plan.understood == []
    assert any("understood nothing" in w for w in reply.warnings)


async def test_contradictory_sentence_conditions_are_named_not_guessed(running: Running) -> None:
    reply = await ask(running, type="instant", sentence="music from the 80s, nothing before 1995")
    assert reply.plan is not None
    assert any("contradicts an earlier year condition" in w for w in reply.warnings)
    assert reply.plan.filters is not None and reply.plan.filters.year == (1980, 1989)


async def test_a_sentence_in_another_language_names_the_words_not_understood(
    running: Running,
) -> None:
    reply = await ask(running, type="instant", sentence="vingt minutes de piano calme")
    assert reply.ok and reply.plan is not None
    assert reply.plan.minutes is None  # "vingt" is no number here: nothing is guessed
    [warning] = [w for w in reply.warnings if w.startswith("words not understood")]
    assert "vingt" in warning and "piano" not in warning


async def test_duplicates_keeps_the_pairs_whose_tracks_both_pass_the_filters(
    running: Running,
) -> None:
    rock = await ask(running, type="duplicates", filters={"genre": ["rock"]})
    assert [(p.first.track_id, p.second.track_id) for p in rock.pairs] == [("rock0", "rock0-copy")]
    jazz = await ask(running, type="duplicates", filters={"genre": ["jazz"]})
    assert jazz.ok and jazz.pairs == []
