"""MusiCNN's fast path on real music: the same numbers as the port, and the second head.

The real music is Frozen Bubble's soundtrack (Debian's `fb-music-high`, Ogg Vorbis,
44.1 kHz stereo), which infra/system-packages.sh installs for the tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import ManagedModel, ModelOptions, TrackAudio, enrich
from models.musicnn import MusicnnModel, dead_unit_values, spread_patches
from models.musicnn_fast import FastMusiCNN
from models.musicnn_net import MTT_TAGS, load_pretrained_musicnn, musicnn_patches
from pipeline.audio import decode_audio

REAL_MUSIC = Path("/usr/share/games/frozen-bubble/snd/introzik.ogg")


@pytest.fixture(scope="module")
def real_audio() -> np.ndarray:
    if not REAL_MUSIC.is_file():
        pytest.fail(f"{REAL_MUSIC} missing: bash infra/system-packages.sh installs fb-music-high")
    return decode_audio(str(REAL_MUSIC), 16000, 0.0, 90.0)


def model(**params: object) -> ManagedModel:
    return ManagedModel(MusicnnModel(ModelOptions(device="cpu", idle_unload_s=0, params=params)))


@pytest.mark.parametrize("checkpoint", ["MSD_musicnn", "MTT_musicnn"])
def test_fast_path_matches_the_port_on_real_music(real_audio: np.ndarray, checkpoint: str) -> None:
    port = load_pretrained_musicnn(checkpoint=checkpoint)
    fast = FastMusiCNN(port)
    patches = torch.from_numpy(musicnn_patches(real_audio))
    assert len(patches) == 30
    with torch.inference_mode():
        tags, embedding = port(patches)
        fast_tags, fast_embedding = fast(patches)
    assert torch.abs(tags - fast_tags).max() < 1e-4
    assert torch.abs(embedding - fast_embedding).max() < 1e-4
    # Real music fires the units, and negative BN scales exist: the sign trick is exercised.
    assert (embedding.std(dim=0) > 0).sum() > 50
    scales = [b.bn.weight for b in (*port.timbral, *port.temporal)]
    assert any((s < 0).any() for s in scales)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_stored_vector_and_tags_equal_the_ports(real_audio: np.ndarray, backend: str) -> None:
    port = load_pretrained_musicnn()
    with torch.inference_mode():
        tags, embedding = port(torch.from_numpy(musicnn_patches(real_audio)))
    expected = enrich((embedding - dead_unit_values(port)).numpy().T)

    [stored] = model(heads="msd", backend=backend).embed([TrackAudio("intro", real_audio)])
    assert stored.vector.shape == (600,)
    assert np.abs(stored.vector - expected).max() < 1e-4
    assert np.abs(np.array(stored.extra["tags"]) - tags.numpy().mean(axis=0)).max() < 1e-4
    assert stored.extra["patches"] == 30 and "mtt_tags" not in stored.extra


def test_both_heads_share_the_mel_and_weigh_the_same(real_audio: np.ndarray) -> None:
    msd, both = model(heads="msd"), model()
    assert both.model.dim == 1200 and msd.model.dim == 600
    assert both.model.model_version != msd.model.model_version
    [only] = msd.embed([TrackAudio("intro", real_audio)])
    [stored] = both.embed([TrackAudio("intro", real_audio)])
    first, second = stored.vector[:600], stored.vector[600:]
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(second) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(first - only.vector / np.linalg.norm(only.vector)).max() < 1e-5
    assert len(stored.extra["mtt_tags"]) == len(MTT_TAGS) == 50
    assert stored.extra["tags"] == only.extra["tags"]


def test_patch_budget_spreads_patches_over_the_whole_track(real_audio: np.ndarray) -> None:
    patches = musicnn_patches(real_audio)
    picked = spread_patches(patches, 4)
    assert [i for i in range(len(patches)) if any(np.array_equal(patches[i], p) for p in picked)] \
        == [0, 10, 19, 29]  # fmt: skip
    assert spread_patches(patches, 64) is patches

    budget = model(heads="msd", max_patches=4)
    [stored] = budget.embed([TrackAudio("intro", real_audio)])
    assert stored.extra["patches"] == 4
    assert budget.model.model_version.endswith("-b4")
    [full] = model(heads="msd").embed([TrackAudio("intro", real_audio)])
    cosine = (
        stored.vector @ full.vector / np.linalg.norm(stored.vector) / np.linalg.norm(full.vector)
    )
    assert 0.8 < cosine < 0.9999  # close to the full track, not the same
