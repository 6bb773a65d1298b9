"""Navidrome's songs on the wire (schemas/songs.py) and their resolution to tracks
(recommender/songs.py), without a broker: the JSON Navidrome 0.63.2 sends, the request
forms that take songs, albums and artists, the older forms unchanged, and the lookup maps
following the index as tracks come and go."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.consumers.embedder import musicbrainz_ids
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.songs import SongCatalog, resolve_song
from pipeline.schemas import TrackMetadata, parse_query_request
from pipeline.schemas.queries import PathRequest, ScoredTrack, SimilarRequest
from pipeline.schemas.songs import SongRef
from pipeline.store import StoredTrack

NAVIDROME_SONG = {  # as plugins/types.SongRef marshals it
    "id": "2b7ad7e1",
    "name": "Sinnerman",
    "mbid": "1b8f1bd3-0000-4000-8000-000000000001",
    "isrc": "USRC17607839",
    "artist": "Nina Simone",
    "artistMbid": "bc2a4b57-0000-4000-8000-000000000002",
    "artists": [{"id": "a1", "name": "Nina Simone", "role": "artist", "sortName": "Simone"}],
    "album": "Pastel Blues",
    "albumMbid": "ab0b3e8b-0000-4000-8000-000000000003",
    "duration": 622.5,
    "durationMs": 622480,
}


def test_song_ref_reads_and_writes_navidromes_json() -> None:
    song = SongRef.model_validate(NAVIDROME_SONG)
    assert song.artist_mbid == NAVIDROME_SONG["artistMbid"]
    assert song.seconds() == pytest.approx(622.48)  # durationMs wins, as in Navidrome
    assert song.artist_names() == ["Nina Simone"]
    out = json.loads(song.model_dump_json(exclude_none=True))
    assert out["albumMbid"] == NAVIDROME_SONG["albumMbid"] and out["durationMs"] == 622480
    assert SongRef(name="x", artist_mbid="m").model_dump(exclude_none=True)["artistMbid"] == "m"
    assert SongRef.model_validate({"name": "x", "duration": 3.5}).seconds() == 3.5
    assert SongRef(name="").seconds() is None


def test_similar_takes_exactly_one_seed_and_the_older_form_still_works() -> None:
    old = parse_query_request(b'{"type":"similar","request_id":"r","track_id":"t1"}')
    assert isinstance(old, SimilarRequest) and old.track_id == "t1" and old.song is None
    new = parse_query_request(
        json.dumps({"type": "similar", "request_id": "r", "song": NAVIDROME_SONG})
    )
    assert isinstance(new, SimilarRequest) and new.song and new.song.name == "Sinnerman"
    artist = SimilarRequest(request_id="r", artist={"name": "Nina Simone"})
    assert artist.artist is not None and artist.diversity == 0.0
    for bad in ({}, {"track_id": "t1", "album": {"name": "Pastel Blues"}}):
        with pytest.raises(ValidationError, match="exactly one"):
            SimilarRequest(request_id="r", **bad)


def test_path_ends_are_ids_or_songs() -> None:
    assert PathRequest(request_id="r", start_track_id="a", end_track_id="b").start is None
    mixed = PathRequest(request_id="r", start_track_id="a", end={"name": "Sinnerman"})
    assert mixed.end is not None and mixed.end_track_id is None
    with pytest.raises(ValidationError, match="exactly one of end_track_id and end"):
        PathRequest(request_id="r", start_track_id="a")
    with pytest.raises(ValidationError):
        PathRequest(request_id="r", start_track_id="a", start={"name": "x"}, end_track_id="b")


def test_replies_carry_mbid_and_duration_only_when_known() -> None:
    bare = json.loads(ScoredTrack(track_id="t", score=0.5).model_dump_json(exclude_none=True))
    assert bare == {"track_id": "t", "score": 0.5, "found_by": []}
    full = ScoredTrack(track_id="t", score=0.5, mbid="m", duration=12.5)
    assert full.mbid == "m" and full.duration == 12.5


def test_embedders_keep_the_musicbrainz_ids() -> None:
    meta = TrackMetadata(title="x", mbz_recording_id="r", mbz_album_id="a")
    assert musicbrainz_ids(meta) == {"mbid": "r", "album_mbid": "a"}
    assert musicbrainz_ids(TrackMetadata()) == {}


def row(track_id: str, artist: str, title: str, album: str = "", **extra: object) -> StoredTrack:
    vector = np.random.default_rng(abs(hash(track_id)) % 2**32).standard_normal(4)
    return StoredTrack(track_id=track_id, artist=artist, title=title, album=album,
                       duration=float(extra.pop("duration", 0.0)), extra=dict(extra),
                       vector=vector.astype(np.float32))  # fmt: skip


def test_catalog_resolves_in_order_and_follows_the_index() -> None:
    index = ModelIndex(None, "m", "c", dim=4, cache_vectors=True)  # type: ignore[arg-type]
    index.upsert_rows([
        row("t1", "Nina Simone", "Sinnerman", "Pastel Blues", mbid="MB-1", duration=622.0),
        row("t2", "Nina Simone", "Sinnerman (Live)", "Live", duration=610.0),
        row("t3", "Nina Simone feat. Someone", "Feeling Good (Remastered 2011)", "Gold"),
    ])  # fmt: skip
    catalog = SongCatalog(index)
    assert catalog.song(SongRef(id="t2", name="whatever")) == "t2"  # the id first
    assert catalog.song(SongRef(id="nd-9", name="x", mbid="mb-1")) == "t1"  # then the MBID
    # Then artist + title: version noise and case ignored; "feat." is a whole-word part.
    assert catalog.song(SongRef(name="feeling good", artist="NINA SIMONE")) == "t3"
    assert catalog.song(SongRef(name="Feeling Good", artist="Nina")) is None
    # "Sinnerman (Live)" keeps "(Live)": not the same title as "Sinnerman".
    assert catalog.song(SongRef(name="Sinnerman", artist="Nina Simone")) == "t1"
    index.upsert_rows([row("t4", "Nina Simone", "Sinnerman", "Other", duration=300.0)])
    near_t4 = SongRef(name="Sinnerman", artist="Nina Simone", durationMs=301_000)
    assert catalog.song(near_t4) == "t4"  # the closest duration among equals
    same_album = SongRef(name="Sinnerman", artist="Nina Simone", album="pastel blues")
    assert catalog.song(same_album.model_copy(update={"duration_ms": 301_000})) == "t1"
    index.remove(["t4"])
    assert catalog.song(near_t4) == "t1"
    assert resolve_song([index], SongRef(name="Nope", artist="Nobody")) is None
