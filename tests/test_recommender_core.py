"""The recommender's building blocks on their own: merging, penalties, selection, paths,
sampling, Navidrome seed modes, and the zero-shot mapping of prompts onto MusiCNN tags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from pipeline.navidrome.database import TrackAnnotation
from pipeline.recommender.alchemy import sample_order
from pipeline.recommender.common import Candidate
from pipeline.recommender.diversity import Avoid, SelectionRules, lookup_in, same_song_key, select
from pipeline.recommender.index import TrackInfo
from pipeline.recommender.merge import merge
from pipeline.recommender.path import interpolate
from pipeline.recommender.penalties import apply_penalty
from pipeline.recommender.seeds import mode_seeds, recency, top_plays

RANKINGS = {
    "a": [("x", 0.9), ("y", 0.8), ("only-a", 0.7)],
    "b": [("y", 0.62), ("x", 0.5), ("only-b", 0.95)],
}


def test_union_takes_each_tracks_best_score_and_intersection_the_mean() -> None:
    union = merge(RANKINGS, ["a", "b"], "union")
    assert [(c.track_id, c.score) for c in union] == [
        ("only-b", 0.95), ("x", 0.9), ("y", 0.8), ("only-a", 0.7)
    ]  # fmt: skip
    assert union[1].found_by == ["a", "b"]
    intersection = merge(RANKINGS, ["a", "b"], "intersection")
    assert [(c.track_id, round(c.score, 6)) for c in intersection] == [("y", 0.71), ("x", 0.7)]
    assert {c.track_id for c in intersection} <= {c.track_id for c in union}


def test_priority_uses_the_agreed_tracks_then_the_first_models_ranking() -> None:
    ranked = merge(RANKINGS, ["b", "a"], "priority")
    assert [(c.track_id, c.tier) for c in ranked] == [
        ("y", 0), ("x", 0), ("only-b", 1), ("only-a", 2)
    ]  # fmt: skip


def test_min_model_agreement_keeps_tracks_found_by_k_models() -> None:
    three = {**RANKINGS, "c": [("x", 0.4), ("only-b", 0.3)]}
    agreed = merge(three, ["a", "b", "c"], "union", min_agreement=2)
    assert {c.track_id for c in agreed} == {"x", "y", "only-b"}
    assert {c.track_id for c in merge(three, ["a", "b", "c"], "union", 3)} == {"x"}


def test_penalty_rule_matches_the_older_design() -> None:
    scores = np.array([0.8, 0.8, 0.8, -0.4], np.float32)
    sims = np.array([[1.0], [0.5], [-0.3], [1.0]], np.float32)
    out = apply_penalty(scores, sims, penalty=0.85)
    assert out[0] == pytest.approx(0.8 * (1 - 1.0 * 0.15))
    assert out[1] == pytest.approx(0.8 * (1 - 0.5 * 0.15))
    assert out[2] == pytest.approx(0.8)  # an opposite track is not rewarded
    assert out[3] == pytest.approx(-0.4 - 0.4 * 0.15)  # a negative score still goes down
    two = apply_penalty(np.array([1.0]), np.array([[1.0, 1.0]]), penalty=0.5)
    assert two[0] == pytest.approx(0.25)  # one factor per penalising item


def candidates(n: int) -> list[Candidate]:
    return [Candidate(f"t{i}", 1.0 - i * 0.01) for i in range(n)]


def test_selection_caps_artists_and_drops_near_duplicates_and_seed_copies() -> None:
    cands = candidates(8)
    info = {c.track_id: TrackInfo(c.track_id, f"Artist {int(c.track_id[1:]) % 2}", c.track_id)
            for c in cands}  # fmt: skip
    info["t3"] = TrackInfo("t3", "Seed Artist", "Seed Song (Remastered)")
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(8, 6))
    vectors = {c.track_id: v / np.linalg.norm(v) for c, v in zip(cands, raw, strict=True)}
    vectors["t1"] = vectors["t0"] * 0.9999 + 0.0001  # the same song as t0, another file
    avoid = Avoid(keys=frozenset({("seed artist", "seed song")}))
    rules = SelectionRules(limit=8, max_per_artist=2, duplicate_threshold=0.02)
    chosen, dropped = select(cands, rules, lookup_in(vectors, info), avoid)
    # t1 is t0's copy, t3 a seed's copy (same artist and title), t4 and t6 a third "Artist 0".
    assert [c.track_id for c in chosen] == ["t0", "t2", "t5", "t7"]
    assert dropped == {"duplicate": 2, "artist_cap": 2}


def test_mmr_diversity_zero_is_pure_ranking_and_positive_spreads() -> None:
    cands = candidates(4)
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = {"t0": a, "t1": a, "t2": b, "t3": b}
    info: dict[str, TrackInfo] = {}
    plain, _ = select(cands, SelectionRules(limit=2), lookup_in(vectors, info))
    spread, _ = select(cands, SelectionRules(limit=2, diversity=0.5), lookup_in(vectors, info))
    assert [c.track_id for c in plain] == ["t0", "t1"]
    assert [c.track_id for c in spread] == ["t0", "t2"]


def test_same_song_key_ignores_version_noise() -> None:
    a = same_song_key(TrackInfo("1", "The Beatles", "Let It Be (Remastered 2009)"))
    b = same_song_key(TrackInfo("2", "the beatles", "Let It Be"))
    c = same_song_key(TrackInfo("3", "The Beatles", "Let It Be - 2009 Remaster"))
    assert a == b == c
    assert same_song_key(TrackInfo("4", "The Beatles", "Let It Be (Live)")) != a
    assert same_song_key(TrackInfo("5", "X", "")) is None


def test_interpolation_linear_and_spherical() -> None:
    start, end = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    mid = interpolate(start, end, 0.5, spherical=True)
    assert mid == pytest.approx(np.array([np.sqrt(0.5), np.sqrt(0.5)]), abs=1e-6)
    third = interpolate(start, end, 1 / 3, spherical=True)
    assert np.degrees(np.arctan2(third[1], third[0])) == pytest.approx(30.0, abs=1e-4)
    linear = interpolate(start, end, 1 / 3, spherical=False)
    assert np.degrees(np.arctan2(linear[1], linear[0])) == pytest.approx(26.565, abs=1e-3)
    assert np.linalg.norm(linear) == pytest.approx(1.0)


def test_temperature_sampling() -> None:
    cands = [Candidate(f"t{i}", s) for i, s in enumerate([0.9, 0.5, 0.1])]
    assert sample_order(cands, 0.0, None) == [0, 1, 2]
    assert sample_order(cands, 0.3, 42) == sample_order(cands, 0.3, 42)
    cold = [sample_order(cands, 0.01, seed)[0] for seed in range(50)]
    hot = [sample_order(cands, 100.0, seed)[0] for seed in range(300)]
    assert set(cold) == {0}
    assert set(hot) == {0, 1, 2}  # near-uniform at a high temperature


NOW = datetime(2026, 6, 1, tzinfo=UTC)


def annotation(plays: int = 0, days: float | None = None, rating: int = 0, starred: bool = False):
    played = NOW - timedelta(days=days) if days is not None else None
    return TrackAnnotation(play_count=plays, play_date=played, rating=rating, starred=starred)


ANNOTATIONS = [
    ("fresh", annotation(3, days=1)),
    ("steady", annotation(40, days=10)),
    ("old", annotation(100, days=365)),
    ("loved", annotation(0, rating=5, starred=True)),
    ("liked", annotation(0, rating=4)),
    ("hated", annotation(5, days=3, rating=1)),
    ("meh", annotation(0, rating=2)),
]


def test_recency_halves_every_half_life() -> None:
    assert recency(NOW, NOW, 30) == 1.0
    assert recency(NOW - timedelta(days=30), NOW, 30) == pytest.approx(0.5)
    assert recency(NOW - timedelta(days=90), NOW, 30) == pytest.approx(0.125)
    assert recency(None, NOW, 30) == 0.0


def test_seed_modes_from_plays_stars_and_ratings() -> None:
    recent = mode_seeds("recent", ANNOTATIONS, NOW, limit=10)
    assert list(recent.positive) == ["fresh", "steady", "old"]
    assert recent.dislikes == {"hated": 1.0, "meh": 0.5}
    assert list(mode_seeds("favorites", ANNOTATIONS, NOW, 10).positive) == ["loved", "liked"]
    everything = mode_seeds("all", ANNOTATIONS, NOW, 10)
    assert set(everything.positive) == {"fresh", "steady", "old", "loved", "liked"}
    assert not everything.exclude
    discovery = mode_seeds("discovery", ANNOTATIONS, NOW, 10)
    assert discovery.positive == everything.positive
    assert discovery.exclude == {"fresh", "steady", "old"}
    assert list(mode_seeds("recent", ANNOTATIONS, NOW, limit=1).positive) == ["fresh"]


def test_fingerprint_seeds_are_plays_times_recency() -> None:
    seeds = top_plays(ANNOTATIONS, NOW, limit=10, half_life_days=30)
    assert list(seeds) == ["steady", "fresh", "old"]  # "hated" was played but rated 1
    assert seeds["steady"] == pytest.approx(40 * 0.5 ** (10 / 30), rel=1e-4)
    assert seeds["old"] == pytest.approx(100 * 0.5 ** (365 / 30), rel=1e-3)


@pytest.fixture(scope="module")
def tag_encoder():  # type: ignore[no-untyped-def]
    from models.text import SentenceEncoder, TagTextEncoder

    return TagTextEncoder(SentenceEncoder())


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("upbeat rock with guitar", {"rock", "guitar"}),
        ("calm piano instrumental", {"instrumental"}),
        ("90s hip hop", {"Hip-Hop", "90s"}),
        ("relaxing ambient soundscape", {"ambient"}),
        ("heavy metal", {"heavy metal", "metal"}),
    ],
)
def test_prompts_map_onto_the_musicnn_tags_they_mean(tag_encoder, prompt, expected) -> None:  # type: ignore[no-untyped-def]
    top = {tag for tag, _ in tag_encoder.top_tags(prompt, k=3)}
    assert expected <= top, tag_encoder.top_tags(prompt, k=5)
    weights = tag_encoder.weights(prompt)
    assert weights.shape == (50,) and weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_the_sentence_model_is_all_minilm_l6_v2_from_the_wheel() -> None:
    from sentence_transformers import SentenceTransformer

    from models.text import SentenceEncoder, default_minilm_dir

    texts = ["a song for a rainy day", "x"]
    exact = SentenceEncoder(precision="float32").encode(texts)
    fast = SentenceEncoder(precision="bfloat16").encode(texts)
    assert exact.shape == fast.shape == (2, 384)
    reference = SentenceTransformer(str(default_minilm_dir()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert np.abs(exact - reference).max() < 1e-5
    assert (fast * reference).sum(axis=1).min() > 0.999
