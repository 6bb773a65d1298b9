"""Every request type over the real broker, answered from Milvus Lite by the query service.

The library has known geometry (tests/query_library.py), so each answer is
checked on its content: seeds never come back, the artist cap holds, the
intersection is inside the union, K-agreement filters, negative prompts and
dislikes lower the penalised tracks, paths start and end right without
repeats, alchemy stays away from what was subtracted.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from datetime import timedelta

import numpy as np
import pytest

from pipeline.schemas.queries import QueryReply
from tests.fixtures.library import NOW, Running, axis

pytestmark = pytest.mark.timeout(120)


async def ask(running: Running, **request: object) -> QueryReply:
    request.setdefault("request_id", uuid.uuid4().hex)
    return await running.client.ask(request, timeout=20)


def ids(reply: QueryReply) -> list[str]:
    assert reply.ok, reply.error
    return [t.track_id for t in reply.tracks]


def scores(reply: QueryReply) -> dict[str, float]:
    return {t.track_id: t.score for t in reply.tracks}


async def test_recommend_leaves_out_seeds_and_their_copies_and_caps_artists(
    running: Running,
) -> None:
    lib = running.library
    seeds = [{"track_id": "rock0"}, {"track_id": "rock1"}]
    reply = await ask(running, type="recommend", seeds=seeds, max_per_artist=2, limit=10)
    got = ids(reply)
    assert len(got) == 10
    assert not {"rock0", "rock1", "rock0-copy"} & set(got)
    artists = Counter(lib.tracks[t].artist for t in got)
    assert max(artists.values()) == 2
    # Two per rock artist (three artists), then the nearest other cluster: metal.
    assert {lib.tracks[t].cluster for t in got[:6]} == {"rock"}
    assert {lib.tracks[t].cluster for t in got[6:]} == {"metal"}
    assert [t.score for t in reply.tracks] == sorted((t.score for t in reply.tracks), reverse=True)
    assert (
        reply.tracks[0].artist and reply.tracks[0].title and reply.tracks[0].found_by == ["musicnn"]
    )


async def test_without_diversity_the_list_is_the_exact_cosine_ranking(running: Running) -> None:
    lib = running.library
    reply = await ask(running, type="recommend", seeds=[{"track_id": "jazz2"}], limit=8)
    query = lib.vector("jazz2")
    expected = sorted(
        (t for t in lib.tracks if t != "jazz2"), key=lambda t: -float(lib.vector(t) @ query)
    )[:8]
    assert ids(reply) == expected
    for track in reply.tracks:
        assert track.score == pytest.approx(float(lib.vector(track.track_id) @ query), abs=1e-4)


async def test_diversity_spreads_the_list_over_more_of_the_library(running: Running) -> None:
    lib = running.library

    def spread(reply: QueryReply) -> float:
        vectors = np.stack([lib.vector(t) for t in ids(reply)])
        sims = vectors @ vectors.T
        return float(sims[np.triu_indices(len(vectors), 1)].mean())

    seeds = [{"track_id": "rock4"}]
    plain = await ask(running, type="recommend", seeds=seeds, limit=10, diversity=0.0)
    diverse = await ask(running, type="recommend", seeds=seeds, limit=10, diversity=0.7)
    assert spread(diverse) < spread(plain) - 0.1
    assert ids(diverse)[0] == ids(plain)[0]  # MMR starts with the most relevant track
    assert len({lib.tracks[t].cluster for t in ids(diverse)}) > len(
        {lib.tracks[t].cluster for t in ids(plain)}
    )


async def test_unknown_seeds_are_named_in_a_warning_and_the_rest_answered(
    running: Running,
) -> None:
    reply = await ask(running, type="recommend", seeds=[{"track_id": "jazz1"},
                      {"track_id": "gone-track"}], limit=5)  # fmt: skip
    assert set(ids(reply)) <= set(running.library.cluster("jazz"))
    assert any("gone-track" in w for w in reply.warnings)

    nothing = await ask(running, type="recommend", seeds=[{"track_id": "gone-track"}])
    assert not nothing.ok and nothing.error.code == "not_found"


async def test_dislikes_and_negative_prompts_lower_the_tracks_they_resemble(
    running: Running,
) -> None:
    lib = running.library
    metal, rock = set(lib.cluster("metal")), set(lib.cluster("rock"))
    seeds = [{"track_id": t} for t in ("rock0", "rock1", "rock2")]
    base = scores(await ask(running, type="recommend", seeds=seeds, limit=40))
    assert metal <= set(base)

    prompted = await ask(running, type="recommend", seeds=seeds, limit=40,
                         negative_prompts=["heavy metal"])  # fmt: skip
    after = scores(prompted)
    assert all(after[t] < base[t] - 0.01 for t in metal)
    assert all(after[t] == pytest.approx(base[t], abs=1e-4) for t in rock & set(after))

    disliked = scores(await ask(running, type="recommend", seeds=seeds, limit=40,
                                dislike_track_ids=["metal0"]))  # fmt: skip
    assert "metal0" not in disliked
    assert all(disliked[t] < base[t] - 0.01 for t in metal - {"metal0"})

    # The rule: score x (1 - sim x (1 - penalty)); penalty 1 switches it off.
    off = scores(await ask(running, type="recommend", seeds=seeds, limit=40,
                           dislike_track_ids=["metal0"], penalty=1.0))  # fmt: skip
    assert all(off[t] == pytest.approx(base[t], abs=1e-5) for t in off if t in base)
    half = scores(await ask(running, type="recommend", seeds=seeds, limit=40,
                            dislike_track_ids=["metal0"], penalty=0.5))  # fmt: skip
    for t in ("metal3", "rock5"):
        sim = max(0.0, float(lib.vector(t) @ lib.vector("metal0")))
        assert half[t] == pytest.approx(base[t] * (1 - sim * 0.5), abs=1e-4)


async def test_direct_embeddings_search_and_bad_ones_are_reported(running: Running) -> None:
    ambient = set(running.library.cluster("ambient"))
    direct = [{"model": "musicnn", "vector": axis(3).tolist()}]
    reply = await ask(running, type="recommend", embeddings=direct, limit=5)
    assert set(ids(reply)) <= ambient

    short = [{"model": "musicnn", "vector": [0.1] * 8}]
    mixed = await ask(running, type="recommend", embeddings=short, seeds=[{"track_id": "jazz0"}])
    assert mixed.ok and any("has 8 dimensions" in w for w in mixed.warnings)
    alone = await ask(running, type="recommend", embeddings=short)
    assert alone.error.code == "invalid_request" and "16" in alone.error.message

    for literal in (b"NaN", b"Infinity"):
        body = (b'{"type":"recommend","request_id":"bad-vector","embeddings":[{"model":"musicnn",'
                b'"vector":[' + literal + b',' + b','.join([b"0.1"] * 15) + b']}]}')  # fmt: skip
        bad = await running.client.ask_raw(body, key="bad-vector", timeout=20)
        assert not bad.ok and bad.error.code == "invalid_request"
        assert "NaN or infinity" in bad.error.message and bad.request_id == "bad-vector"


async def test_a_limit_above_the_cap_is_clamped_with_a_warning(running: Running) -> None:
    reply = await ask(running, type="similar", track_id="rock0", limit=100_000)
    assert reply.ok and "clamped to 500" in " ".join(reply.warnings)
    assert len(reply.tracks) == len(running.library.tracks) - 2  # all but the seed and its copy


async def test_merging_models_union_intersection_priority_and_agreement(
    running: Running,
) -> None:
    models = ["mert", "music2latent", "clap"]
    common = {"type": "recommend", "seeds": [{"track_id": "s0"}], "models": models, "limit": 50}
    union = await ask(running, **common, merge="union")
    intersection = await ask(running, **common, merge="intersection")
    agreed = await ask(running, **common, merge="union", min_model_agreement=2)
    priority = await ask(running, **common, merge="priority")

    assert set(ids(union)) == {"a1", "a2", "a3", "b1", "b2", "c1", "d1"}
    assert set(ids(intersection)) == {"a1", "a2", "a3"}
    assert set(ids(intersection)) <= set(ids(union))
    assert set(ids(agreed)) == {"a1", "a2", "a3", "b1", "b2"}
    by_id = {t.track_id: t for t in union.tracks}
    assert sorted(by_id["a1"].found_by) == sorted(models)
    assert by_id["c1"].found_by == ["mert"] and by_id["d1"].found_by == ["clap"]
    # union ranks by the best model's score, intersection by the mean.
    for track in intersection.tracks:
        assert track.score <= by_id[track.track_id].score + 1e-6
    # priority: the agreed tracks first, then mert's own ranking, then clap's.
    order = ids(priority)
    assert set(order[:3]) == {"a1", "a2", "a3"}
    assert set(order[3:6]) == {"b1", "b2", "c1"} and order[6] == "d1"

    too_many = await ask(running, **common, merge="union", min_model_agreement=5)
    assert set(ids(too_many)) == {"a1", "a2", "a3"}
    assert any("min_model_agreement 5" in w for w in too_many.warnings)


async def test_text_search_ranks_tracks_by_their_tags(running: Running) -> None:
    lib = running.library
    rock = set(lib.cluster("rock")) | {"rock0-copy"}
    guitar = await ask(running, type="text", prompt="upbeat rock with guitar", limit=8)
    assert set(ids(guitar)) <= rock
    calm = await ask(running, type="text", prompt="calm piano instrumental", limit=8)
    assert {lib.tracks[t].cluster for t in ids(calm)} <= {"jazz", "ambient"}
    jazz = await ask(running, type="text", prompt="smooth jazz", limit=4)
    assert set(ids(jazz)) <= set(lib.cluster("jazz"))

    heavy = scores(await ask(running, type="text", prompt="hard rock", limit=40))
    lighter = scores(await ask(running, type="text", prompt="hard rock", limit=40,
                               negative_prompts=["heavy metal"]))  # fmt: skip
    metal = [t for t in lib.cluster("metal") if t in heavy and t in lighter]
    assert metal and all(lighter[t] < heavy[t] for t in metal)


async def test_a_100_kb_prompt_is_refused_with_a_clear_error(running: Running) -> None:
    body = b'{"type": "text", "request_id": "long", "prompt": "' + b"la " * 34_000 + b'"}'
    reply = await running.client.ask_raw(body, key="long", timeout=20)
    assert not reply.ok and reply.error.code == "invalid_request"
    assert "prompt" in reply.error.message and "2000 characters" in reply.error.message


async def test_similar_ranked_and_as_a_radius_walk(running: Running) -> None:
    lib = running.library
    ranked = await ask(running, type="similar", track_id="rock3", limit=9)
    assert "rock3" not in ids(ranked)
    assert {lib.tracks[t].cluster for t in ids(ranked)} <= {"rock", "rock-copy"}

    walk = await ask(running, type="similar", track_id="rock3", limit=9, ordering="radius_walk")
    order = ids(walk)
    assert order[0] == ids(ranked)[0]  # the walk starts next to the seed
    assert "rock3" not in order and len(order) == len(set(order))
    assert max(Counter(lib.tracks[t].artist for t in order).values()) <= 2  # default cap

    # Smooth: every step goes to the closest track left in its ring, so consecutive
    # tracks are at least as close on average as in plain ranking order.
    def hops(seq: list[str]) -> float:
        return float(np.mean([lib.vector(a) @ lib.vector(b) for a, b in itertools.pairwise(seq)]))

    assert hops(order) >= hops(sorted(order, key=lambda t: -scores(walk)[t])) - 1e-6

    missing = await ask(running, type="similar", track_id="no-such")
    assert missing.error.code == "not_found" and "no-such" in missing.error.message


async def test_path_walks_from_start_to_end_without_repeats(running: Running) -> None:
    arc = [f"arc{k}" for k in range(11)]
    common = {"type": "path", "start_track_id": "arc0", "end_track_id": "arc10"}
    spherical = await ask(running, **common, steps=11, interpolation="spherical")
    assert ids(spherical) == arc  # slerp points fall exactly on the arc's tracks

    linear = await ask(running, **common, steps=11, interpolation="linear")
    path = ids(linear)
    assert path[0] == "arc0" and path[-1] == "arc10" and len(path) == len(set(path))
    assert path == sorted(path, key=lambda t: int(t[3:]))  # moves steadily along the arc

    crowded = await ask(running, **common, steps=25, interpolation="spherical")
    path = ids(crowded)
    assert path[0] == "arc0" and path[-1] == "arc10" and len(path) == len(set(path)) < 25
    assert any("merged" in w for w in crowded.warnings)

    exact = await ask(running, **common, steps=15, interpolation="spherical", exact_length=True)
    path = ids(exact)
    assert len(path) == 15 == len(set(path)) and path[0] == "arc0" and path[-1] == "arc10"


async def test_alchemy_keeps_away_from_the_subtracted_tracks(running: Running) -> None:
    lib = running.library
    add = ["rock0", "rock1", "rock2", "rock3"]
    subtract = ["metal0", "metal1", "metal2"]
    request = {"type": "alchemy", "add_track_ids": add, "subtract_track_ids": subtract,
               "subtract_threshold": 0.3, "limit": 10, "temperature": 0.0}  # fmt: skip
    reply = await ask(running, **request)
    centre = np.mean([lib.vector(t) for t in subtract], axis=0)
    centre /= np.linalg.norm(centre)
    kept, dropped = ids(reply), [t.track_id for t in reply.extra["filtered_out"]]
    assert kept and dropped
    assert all(1 - lib.vector(t) @ centre > 0.3 for t in kept)
    assert all(1 - lib.vector(t) @ centre <= 0.3 for t in dropped)
    assert not (set(add) | set(subtract)) & (set(kept) | set(dropped))
    assert [t.track_id for t in reply.extra["kept"]] == kept

    sampled = {**request, "temperature": 0.5, "random_seed": 3}
    first, second = await ask(running, **sampled), await ask(running, **sampled)
    assert ids(first) == ids(second)
    assert all(1 - lib.vector(t) @ centre > 0.3 for t in ids(first))


async def test_fingerprint_weights_plays_by_recency(running: Running) -> None:
    rock = set(running.library.cluster("rock")) | {"rock0-copy"}
    old, recent = (NOW - timedelta(days=200)).isoformat(), (NOW - timedelta(days=2)).isoformat()
    seeds = [{"track_id": "jazz0", "weight": 10, "played_at": old},
             {"track_id": "rock2", "weight": 4, "played_at": recent}]  # fmt: skip
    reply = await ask(running, type="fingerprint", seeds=seeds, limit=5)
    assert set(ids(reply)) <= rock and "rock2" not in ids(reply)
    weights = {t.track_id: t.score for t in reply.extra["seeds"]}
    assert weights["rock2"] == pytest.approx(4 * 0.5 ** (2 / 30), rel=1e-3)
    assert weights["jazz0"] == pytest.approx(10 * 0.5 ** (200 / 30), rel=1e-3)


async def test_duplicates_finds_the_copied_recording(running: Running) -> None:
    reply = await ask(running, type="duplicates", threshold=0.02)
    assert reply.ok
    assert [(p.first.track_id, p.second.track_id) for p in reply.pairs] == [("rock0", "rock0-copy")]
    assert reply.pairs[0].distance < 0.02 and reply.pairs[0].second.title.endswith(
        "(Remastered 2011)"
    )


async def test_empty_libraries_and_models_not_embedded_yet_are_explained(
    running: Running,
) -> None:
    empty = await ask(running, type="similar", track_id="rock0", models=["empty"])
    assert empty.error.code == "unavailable" and "empty" in empty.error.message
    missing = await ask(running, type="similar", track_id="rock0", models=["mert2"])
    assert missing.error.code == "unavailable" and "nothing embedded yet" in missing.error.message
    partly = await ask(running, type="similar", track_id="rock0", models=["musicnn", "mert2"])
    assert partly.ok and any("mert2" in w for w in partly.warnings)
