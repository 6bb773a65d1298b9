"""POST /embed_text encodes prompts exactly as the query service does.

The HTTP service once built its own sentence model and ignored
`query.text_precision`, so /embed_text answered in float32 while text
queries ran in bfloat16 (or the other way round). Both now come from
`pipeline.wiring.text_support`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import QuerySettings
from pipeline.http import bridge
from pipeline.http.runtime import OpsRuntime
from pipeline.store import VectorStore
from pipeline.wiring import text_support
from tests.fixtures.services import base_settings

PROMPT = "quiet acoustic guitar ballad"


def embed_text(precision: str, folder: Path) -> list[float]:
    settings = base_settings(query=QuerySettings(text_precision=precision))
    store = VectorStore(settings.milvus, str(folder / "milvus.db"))  # opened on first use: never
    runtime = OpsRuntime(settings, store=store)
    try:
        reply = runtime.text_embedding(bridge.TextEmbeddingRequest(text=PROMPT, model="musicnn"))
        assert runtime.text.sentences.precision == precision
    finally:
        runtime.text.close()
    expected = text_support(settings).encoders[100].weights(PROMPT)  # MSD + MTT tags
    assert reply.embedding == [round(float(w), 6) for w in expected]
    return reply.embedding


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_embed_text_honours_query_text_precision(precision: str, tmp_path: Path) -> None:
    embed_text(precision, tmp_path)


def test_the_two_precisions_give_different_answers(tmp_path: Path) -> None:
    """Without this, the test above could not tell the precisions apart."""
    assert embed_text("float32", tmp_path) != embed_text("bfloat16", tmp_path)
