"""MuQ-MuLan, MERT and Music2Latent through the `embed-<model>` consumer, on random weights.

Issue 4's must-show: the same consumer code that runs MusiCNN (real Kafka
broker, Milvus Lite) embeds with the three local-weights models and stores
vectors of their documented dims: MuQ-MuLan's joint latent, 3 x MERT's
hidden size, 3 x Music2Latent's latent channels. The weights are tiny
random-init models written in the published folder layouts
(tests/tiny_models.py), so the production loaders run; nothing is downloaded.
Per-model options travel the way users set them, through
``settings.embed.params``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.registry import model_class
from pipeline.config import EmbedSettings, Settings
from pipeline.consumers.embedder import run_embedder
from pipeline.schemas import EmbeddingEvent
from pipeline.store import VectorStore
from pipeline.wiring import model_options
from tests.fixtures.audio import track_event, write_song
from tests.fixtures.bus import drain, publish
from tests.fixtures.models import write_tiny_mert, write_tiny_muq, write_tiny_music2latent
from tests.fixtures.services import wait_for

pytestmark = pytest.mark.timeout(120)

TRACKS = 3


def muq_documented_dim(folder: Path) -> int:
    """MuQ-MuLan stores the joint audio/text latent itself: `mulan.dim_latent` values."""
    return int(json.loads((folder / "config.json").read_text())["mulan"]["dim_latent"])


def mert_documented_dim(folder: Path) -> int:
    """MERT stores mean, spread and motion of one layer mix: 3 x hidden size."""
    return 3 * int(json.loads((folder / "config.json").read_text())["hidden_size"])


def music2latent_documented_dim(folder: Path) -> int:
    """Music2Latent stores mean, spread and motion of its bottleneck: 3 x latent channels."""
    checkpoint = torch.load(folder / "music2latent.pt", weights_only=True)
    return 3 * int(checkpoint["gen_state_dict"]["encoder.conv_out.weight"].shape[0])


# model -> (tiny-weights writer, documented dim from the written files, params, version prefix).
# MERT mixes two layers and Music2Latent uses 2 s chunks: non-default options that must reach
# the model through settings.embed.params (both are part of model_version).
CASES: dict[str, tuple[Callable[[Path], Path], Callable[[Path], int], dict[str, Any], str]] = {
    "muq": (write_tiny_muq, muq_documented_dim, {}, "muq-mulan:"),
    "mert": (
        write_tiny_mert,
        mert_documented_dim,
        {"layers": [0, -1], "layer_weights": [1.0, 3.0]},
        "mert-v1-330m:",
    ),
    "music2latent": (
        write_tiny_music2latent,
        music2latent_documented_dim,
        {"chunk_s": 2.0},
        "music2latent:",
    ),
}


@pytest.mark.parametrize("model", list(CASES))
async def test_random_init_model_embeds_through_the_consumer(
    model: str, settings: Settings, producer, lite_store: VectorStore, tmp_path: Path
) -> None:
    write_weights, documented_dim, params, version_prefix = CASES[model]
    folder = write_weights(tmp_path / model)
    settings = settings.model_copy(
        update={
            "embed": EmbedSettings(
                weights_dir=tmp_path,
                batch_tracks=2,
                idle_unload_s=0,
                device="cpu",
                params={model: params},
            )
        }
    )
    dim = model_class(model).dim
    assert dim == documented_dim(folder)
    expected_version = model_class(model)(model_options(settings, model)).model_version
    assert expected_version.startswith(version_prefix)
    if params:  # the options changed what is stored, so they must change the version
        default_options = model_options(settings, model).model_copy(update={"params": {}})
        assert model_class(model)(default_options).model_version != expected_version

    songs = tmp_path / "songs"
    songs.mkdir()
    events = []
    for i in range(TRACKS):
        path = songs / f"song{i}.{'wav' if i % 2 else 'flac'}"
        write_song(path, seconds=3 + i, seed=40 + i)
        events.append(track_event(path, f"{model}-{i}"))
    await publish(producer, settings, events)

    collection = lite_store.collection_name(model)
    stop = asyncio.Event()
    task = asyncio.create_task(run_embedder(settings, model, stop, store=lite_store))
    try:
        await wait_for(
            lambda: (
                lite_store.has_collection(collection) and lite_store.count(collection) == TRACKS
            ),
            timeout=60,
        )
        assert lite_store.dimension(collection) == dim
        ids = [e.track_id for e in events]
        rows = lite_store.get(collection, ids, with_vectors=True)
        assert sorted(rows) == ids
        vectors = np.stack([np.asarray(rows[i].vector, dtype=np.float32) for i in ids])
        assert vectors.shape == (TRACKS, dim)
        assert np.isfinite(vectors).all()
        assert (np.abs(vectors).max(axis=1) > 0).all()
        for a in range(TRACKS):
            for b in range(a + 1, TRACKS):
                assert not np.allclose(vectors[a], vectors[b], atol=1e-4), (ids[a], ids[b])
        for event in events:
            row = rows[event.track_id]
            assert row.model_version == expected_version
            assert row.extra["path"] == event.path
            assert row.title == event.track_id
        if model == "muq":  # one 10 s clip per track: the stored latent is a unit vector
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
            assert [rows[i].extra["clips"] for i in ids] == [1] * TRACKS
        if model == "mert":
            assert [rows[i].extra["layers"] for i in ids] == [[0, 2]] * TRACKS

        emitted = [
            EmbeddingEvent.from_bytes(r.value)
            for r in await drain(settings, settings.topics.embeddings, TRACKS)
        ]
        assert sorted(e.track_id for e in emitted) == ids
        assert {(e.status, e.model, e.dim, e.model_version) for e in emitted} == {
            ("embedded", model, dim, expected_version)
        }
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
