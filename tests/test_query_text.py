"""Text queries through MuQ-MuLan's text tower (a small random-weight MuQ-MuLan written in the
published folder layout), and what happens when a model cannot answer text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.registry import create_model
from models.text import MuqTextEncoder
from pipeline.config import EmbedSettings, Settings
from pipeline.recommender.engine import QueryEngine
from pipeline.recommender.library import Library
from pipeline.schemas.queries import TextRequest
from pipeline.store import VectorRow, VectorStore
from pipeline.wiring import model_options, text_support
from tests.fixtures.library import fill, musicnn_library
from tests.fixtures.models import write_tiny_muq
from tests.fixtures.services import base_settings


def engine_for(settings: Settings, store: VectorStore) -> QueryEngine:
    return QueryEngine(settings.query, Library(store, settings.query), text_support(settings))


def test_muq_answers_prompts_with_its_own_text_tower(
    lite_store: VectorStore, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    write_tiny_muq(weights / "muq")
    settings = base_settings(embed=EmbedSettings(weights_dir=weights, device="cpu"))
    encoder = MuqTextEncoder(create_model("muq", model_options(settings, "muq")))
    calm, loud = encoder.encode(["calm piano", "loud metal guitar"])
    rng = np.random.default_rng(2)
    rows = [VectorRow("calm-track", calm + 0.05 * rng.normal(size=512) / np.sqrt(512)),
            VectorRow("loud-track", loud + 0.05 * rng.normal(size=512) / np.sqrt(512))]  # fmt: skip
    rows += [VectorRow(f"other{i}", rng.normal(size=512)) for i in range(20)]
    name = lite_store.collection_name("muq")
    lite_store.ensure_collection(name, dim=512)
    lite_store.upsert(name, rows)
    engine = engine_for(settings, lite_store)

    reply = engine.answer(TextRequest(request_id="t", prompt="calm piano", models=["muq"]))
    assert reply.ok, reply.error
    assert reply.tracks[0].track_id == "calm-track" and reply.tracks[0].score > 0.99

    plain = {t.track_id: t.score for t in reply.tracks}
    request = TextRequest(request_id="n", prompt="calm piano", models=["muq"],
                          negative_prompts=["loud metal guitar"])  # fmt: skip
    penalised = {t.track_id: t.score for t in engine.answer(request).tracks}
    loud_track = rows[1].vector / np.linalg.norm(rows[1].vector)
    factor = 1 - max(0.0, float(loud_track @ loud)) * (1 - 0.85)
    assert penalised["loud-track"] == pytest.approx(plain["loud-track"] * factor, abs=1e-4)
    encoder.close()


def test_models_that_cannot_answer_text_say_so(lite_store: VectorStore) -> None:
    settings = base_settings()  # no MuQ weights here
    fill(lite_store, "musicnn", musicnn_library())
    name = lite_store.collection_name("muq")
    lite_store.ensure_collection(name, dim=4)
    lite_store.upsert(name, [VectorRow("m1", np.ones(4))])
    mert = lite_store.collection_name("mert")
    lite_store.ensure_collection(mert, dim=4)
    lite_store.upsert(mert, [VectorRow("r1", np.ones(4))])
    engine = engine_for(settings, lite_store)

    alone = engine.answer(TextRequest(request_id="a", prompt="calm piano", models=["muq"]))
    assert not alone.ok and alone.error.code == "unavailable"
    assert "weights" in alone.error.message

    mixed = engine.answer(
        TextRequest(
            request_id="b", prompt="smooth jazz", models=["musicnn", "muq", "mert"], limit=3
        )
    )
    assert mixed.ok and [t.track_id[:4] for t in mixed.tracks] == ["jazz"] * 3
    assert any("muq" in w for w in mixed.warnings)
    assert any("mert cannot answer text" in w for w in mixed.warnings)
