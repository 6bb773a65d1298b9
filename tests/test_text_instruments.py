"""Text search that names instruments and tempo, with MusiCNN's second (MagnaTagATune) head.

A user types "solo piano" or "fast drums": the MSD vocabulary has no such tags, the
MTT head does. Generated piano, drum-kit and string tracks (and two other signals)
are embedded by the real network with `heads: msd+mtt`, stored in Milvus Lite, and
asked for through the query engine, the way the query service answers.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.base import TrackAudio
from models.registry import create_model
from pipeline.config import EmbedSettings, Settings
from pipeline.recommender.engine import QueryEngine
from pipeline.recommender.library import Library
from pipeline.schemas.queries import TextRequest
from pipeline.store import VectorRow, VectorStore
from pipeline.wiring import model_options, text_support
from tests.fixtures.audio import drum_clip, piano_clip, strings_clip, tone_tracks
from tests.fixtures.services import base_settings

SECONDS = 24.0


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    tone, chirp, _ = tone_tracks(16000, [SECONDS] * 3)
    return {
        "piano": piano_clip(SECONDS),
        "fast-drums": drum_clip(SECONDS, bpm=172),
        "strings": strings_clip(SECONDS),
        "tone": tone,
        "chirp": chirp,
    }


def library_of(settings: Settings, store: VectorStore, clips: dict[str, np.ndarray]) -> QueryEngine:
    model = create_model("musicnn", model_options(settings, "musicnn"))
    embeddings = model.embed([TrackAudio(name, audio) for name, audio in clips.items()])
    model.close()
    rows = [VectorRow(e.track_id, e.vector, title=e.track_id, artist=f"artist {i}",
                      extra=e.extra) for i, e in enumerate(embeddings)]  # fmt: skip
    collection = store.collection_name("musicnn")
    store.ensure_collection(collection, dim=model.model.dim)
    store.upsert(collection, rows)
    return QueryEngine(settings.query, Library(store, settings.query), text_support(settings))


def ranking(engine: QueryEngine, prompt: str) -> list[str]:
    reply = engine.answer(TextRequest(request_id=prompt, prompt=prompt, models=["musicnn"]))
    assert reply.ok, reply.error
    return [t.track_id for t in reply.tracks]


def test_prompts_naming_instruments_and_tempo_find_them(
    lite_store: VectorStore, clips: dict[str, np.ndarray]
) -> None:
    settings = base_settings(
        embed=EmbedSettings(device="cpu", params={"musicnn": {"heads": "msd+mtt"}})
    )
    engine = library_of(settings, lite_store, clips)
    assert ranking(engine, "solo piano")[0] == "piano"
    assert ranking(engine, "fast drums")[0] == "fast-drums"
    assert ranking(engine, "violin and cello")[0] == "strings"
    # The prompt's weights land on the MTT tags that say it.
    weights = engine.text.tag_weights(["solo piano"], 100)[0]  # type: ignore[attr-defined]
    vocabulary = engine.text.encoders[100].tags  # type: ignore[attr-defined]
    top = {vocabulary[i] for i in np.argsort(-weights)[:3]}
    assert "piano" in top
