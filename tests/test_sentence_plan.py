"""What `instant` makes of typed sentences (the grammar alone, no services)."""

from __future__ import annotations

import pytest

from pipeline.recommender.sentence import read_sentence

CASES = [
    (
        "20 minutes of calm piano, nothing before 1990, no more than two songs per artist",
        {"prompt": "calm piano", "minutes": 20.0, "max_per_artist": 2,
         "filters": {"energy": (0.0, 0.4), "year": (1990, 3000)}},
    ),
    (
        "an hour of fast drums from the 80s without vocals",
        {"prompt": "fast drums", "minutes": 60.0, "negative_prompts": ["vocals"],
         "filters": {"bpm": (120.0, 300.0), "year": (1980, 1989)}},
    ),
    (
        "ten songs in A minor between 100 and 120 bpm",
        {"prompt": None, "count": 10, "filters": {"bpm": (100.0, 120.0), "key": "A minor"}},
    ),
    (
        "half an hour of energetic rock but not metal, since 2001, one song per artist",
        {"prompt": "energetic rock", "minutes": 30.0, "max_per_artist": 1,
         "negative_prompts": ["metal"], "filters": {"energy": (0.6, 1.0), "year": (2001, 3000)}},
    ),
    (
        "music from before 1970 around 90 bpm",
        {"prompt": None, "filters": {"year": (0, 1969), "bpm": (85.0, 95.0)}},
    ),
    (
        "jazz in a minute",  # "a minute" is a length, not the key of A minor
        {"prompt": "jazz", "minutes": 1.0, "filters": None},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("sentence", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_sentences_become_typed_plans(sentence: str, expected: dict) -> None:
    plan = read_sentence(sentence)
    found = plan.model_dump()
    if found["filters"] is not None:
        found["filters"] = {k: v for k, v in found["filters"].items() if v is not None}
    for name, value in expected.items():
        assert found[name] == value, (name, plan)
    assert plan.understood and not plan.warnings


def test_every_phrase_read_is_shown_and_contradictions_are_warned() -> None:
    assert "slow -> bpm [30, 95]" in read_sentence("slow songs").understood
    plan = read_sentence("slow songs, 140 bpm")  # the number is read first, "slow" refused
    assert plan.filters is not None and plan.filters.bpm == (135.0, 145.0)
    assert any("'slow' contradicts an earlier bpm condition" in w for w in plan.warnings)
    assert read_sentence("?!").understood == []
    assert read_sentence("a 900-hour mix").warnings  # a length over a day is refused
