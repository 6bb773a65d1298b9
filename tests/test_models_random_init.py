"""MuQ-MuLan, MERT and Music2Latent on small random-weight models, through the real loaders.

Each model is written to a temporary weights folder in the published layout
(tests/tiny_models.py) and loaded by the production code; no hub access. The
checks: stored dims, finite and distinct vectors, determinism, a track's
vector not depending on its batch mates, and clear `ModelUnavailable` errors
for missing or foreign weights.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from models.base import ModelOptions, ModelUnavailable, TrackAudio, enrich
from models.mert import MertModel, stitch, window_starts
from models.muq import MuqMulanModel
from models.music2latent import Music2LatentModel, frame_count
from tests.fixtures.audio import tone_tracks
from tests.fixtures.models import write_tiny_mert, write_tiny_muq, write_tiny_music2latent

pytestmark = pytest.mark.timeout(120)


def tracks(sample_rate: int, seconds: list[float]) -> list[TrackAudio]:
    signals = tone_tracks(sample_rate, seconds)
    return [TrackAudio(f"t{i}", x) for i, x in enumerate(signals)]


def check_vectors(results: list, ids: list[str], dim: int) -> np.ndarray:
    assert [r.track_id for r in results] == ids
    vectors = np.stack([r.vector for r in results])
    assert vectors.shape == (len(ids), dim) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            assert not np.allclose(vectors[i], vectors[j], atol=1e-4), (ids[i], ids[j])
    return vectors


def drop_first_key(path: Path, prefix: str = "") -> str:
    """Remove one weight (under `prefix`) from a saved state dict; returns its name."""
    state = torch.load(path, weights_only=True)
    inner = state.get("gen_state_dict", state)
    key = next(k for k in inner if k.startswith(prefix))
    del inner[key]
    torch.save(state, path)
    return key


# --------------------------------------------------------------------------- #
# MuQ-MuLan
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def muq(tmp_path_factory: pytest.TempPathFactory) -> MuqMulanModel:
    folder = write_tiny_muq(tmp_path_factory.mktemp("muq"))
    model = MuqMulanModel(ModelOptions(weights_dir=folder, batch_size=3))
    model.load("cpu")
    return model


def test_muq_embeds_a_batch_like_one_track_at_a_time(muq: MuqMulanModel) -> None:
    batch = tracks(24000, [3.0, 7.0, 12.0])
    results = muq.embed(batch)
    vectors = check_vectors(results, ["t0", "t1", "t2"], 512)
    assert muq.dim == 512 and muq.sample_rate == 24000
    assert [r.extra["clips"] for r in results] == [1, 1, 2]
    # Mean of unit clip latents: norm 1 for one clip, at most 1 for several.
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(vectors[2]) <= 1.0 + 1e-6
    again = muq.embed(batch[2:])
    np.testing.assert_allclose(again[0].vector, vectors[2], atol=1e-5)


def test_muq_text_tower_embeds_prompts_one_at_a_time(muq: MuqMulanModel) -> None:
    prompts = ["calm piano", "loud metal with fast drums and guitar", "calm piano"]
    text = muq.embed_text(prompts)
    assert text.shape == (3, 512) and text.dtype == np.float32
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(text[0], text[2], atol=1e-6)
    assert not np.allclose(text[0], text[1], atol=1e-4)
    np.testing.assert_allclose(muq.embed_text(["calm piano"])[0], text[0], atol=1e-6)
    assert muq.embed_text([]).shape == (0, 512)


def test_muq_missing_and_foreign_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match=r"config\.json.*pytorch_model\.bin"):
        MuqMulanModel(ModelOptions()).load("cpu")
    folder = write_tiny_muq(tmp_path / "w")
    (folder / "xlm-roberta" / "tokenizer.json").unlink()
    with pytest.raises(ModelUnavailable, match=r"missing .*xlm-roberta/tokenizer\.json"):
        MuqMulanModel(ModelOptions(weights_dir=folder)).load("cpu")
    folder = write_tiny_muq(tmp_path / "w2")
    dropped = drop_first_key(
        folder / "pytorch_model.bin", "mulan.audio.model.model.conformer.layers."
    )
    with pytest.raises(ModelUnavailable, match=r"missing: audio\.muq\.conformer\.layers\."):
        MuqMulanModel(ModelOptions(weights_dir=folder)).load("cpu")
    assert dropped.startswith("mulan.audio.model.model.conformer.")


def test_muq_version_follows_the_weights(tmp_path: Path) -> None:
    first = MuqMulanModel(ModelOptions(weights_dir=write_tiny_muq(tmp_path / "a", seed=0)))
    second = MuqMulanModel(ModelOptions(weights_dir=write_tiny_muq(tmp_path / "b", seed=1)))
    assert first.model_version.startswith("muq-mulan:")
    assert first.model_version != second.model_version
    assert first.model_version == first.model_version


# --------------------------------------------------------------------------- #
# MERT
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def mert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mert(tmp_path_factory.mktemp("mert"))


def mert(folder: Path, **params: object) -> MertModel:
    model = MertModel(ModelOptions(weights_dir=folder, batch_size=4, params=params))
    model.load("cpu")
    return model


def test_mert_windows_stitch_into_one_75_hz_sequence() -> None:
    window, hop, n = 4 * 24000, 3 * 24000, 12 * 24000
    starts = window_starts(n, window, hop)
    assert starts == [0, 72000, 144000, 192000]
    frames = [np.arange(299)[:, None] + s // 320 for s in starts]  # frame index = position
    sequence = stitch(frames, starts, window, 320)[:, 0]
    assert np.array_equal(sequence, np.arange(sequence.size))  # no gap, no repeat
    assert abs(sequence.size - n / 320) <= 2
    assert window_starts(window, window, hop) == [0]


def test_mert_embeds_a_batch_like_one_track_at_a_time(mert_folder: Path) -> None:
    model = mert(mert_folder, window_s=4.0, overlap_s=1.0)
    batch = tracks(24000, [3.0, 7.0, 12.0])
    results = model.embed(batch)
    vectors = check_vectors(results, ["t0", "t1", "t2"], 3072)
    assert model.dim == 3072 and model.sample_rate == 24000
    for result, seconds in zip(results, [3.0, 7.0, 12.0], strict=True):
        assert abs(result.extra["frames"] - seconds * 75) <= 2
    again = model.embed(batch[1:2])
    np.testing.assert_allclose(again[0].vector, vectors[1], atol=1e-5)


def test_mert_last_layer_is_the_final_normed_output(mert_folder: Path) -> None:
    """One window, last layer only: equals HuBERT's own forward on the normalised clip."""
    from transformers import HubertConfig, HubertModel

    model = mert(mert_folder, layers=[-1])
    samples = tracks(24000, [3.0])[0].samples
    config = HubertConfig.from_dict(json.loads((mert_folder / "config.json").read_text()))
    hubert = HubertModel.from_pretrained(mert_folder, config=config).eval()
    clip = torch.from_numpy((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7))
    with torch.inference_mode():
        reference = hubert(clip[None].float()).last_hidden_state[0].numpy()
    vector = model.embed([TrackAudio("x", samples)])[0].vector
    np.testing.assert_allclose(vector, enrich(reference.T), atol=1e-4)


def test_mert_layer_mix_is_configurable(mert_folder: Path) -> None:
    track = tracks(24000, [5.0])
    everything = mert(mert_folder).embed(track)[0].vector
    first = mert(mert_folder, layers=[0]).embed(track)[0].vector
    weighted = mert(mert_folder, layers=[0, -1], layer_weights=[3.0, 1.0]).embed(track)[0].vector
    assert not np.allclose(everything, first, atol=1e-4)
    assert not np.allclose(first, weighted, atol=1e-4)
    versions = {
        MertModel(ModelOptions(weights_dir=mert_folder, params=params)).model_version
        for params in ({}, {"layers": [0]}, {"layers": [0, -1], "layer_weights": [3.0, 1.0]})
    }
    assert len(versions) == 3
    with pytest.raises(ModelUnavailable, match="out of range"):
        mert(mert_folder, layers=[7])


def test_model_params_are_validated_when_the_model_is_created(mert_folder: Path) -> None:
    """A misspelt or inconsistent option fails at creation, naming the key and the accepted ones."""
    with pytest.raises(ModelUnavailable, match=r"'mert': unknown option 'layer' \(accepted"):
        MertModel(ModelOptions(weights_dir=mert_folder, params={"layer": [0]}))
    with pytest.raises(ModelUnavailable, match="one weight per entry of layers"):
        MertModel(ModelOptions(params={"layers": [0, 1], "layer_weights": [1.0]}))
    with pytest.raises(ModelUnavailable, match=r"overlap_s \(5\.0\) must be below window_s"):
        MertModel(ModelOptions(params={"window_s": 5, "overlap_s": 5}))
    with pytest.raises(ModelUnavailable, match=r"chunk_s: Input should be greater than 0"):
        Music2LatentModel(ModelOptions(params={"chunk_s": 0}))
    with pytest.raises(ModelUnavailable, match=r"'muq': unknown option 'clip_secs'.*: none\)"):
        MuqMulanModel(ModelOptions(params={"clip_secs": 30}))
    model = MertModel(ModelOptions(params={"layers": [0, -1], "layer_weights": [3, 1]}))
    assert model.layers == (0, -1) and model.layer_weights == (3.0, 1.0)
    assert model.window == 30 * 24000 and model.hop == 25 * 24000


def test_mert_missing_and_foreign_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="needs a local weights folder"):
        MertModel(ModelOptions()).load("cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"config\.json.*pytorch_model\.bin"):
        MertModel(ModelOptions(weights_dir=tmp_path / "empty")).load("cpu")
    folder = write_tiny_mert(tmp_path / "w")
    dropped = drop_first_key(folder / "pytorch_model.bin", "encoder.layers.1.")
    with pytest.raises(ModelUnavailable, match=re.escape(dropped)):
        MertModel(ModelOptions(weights_dir=folder)).load("cpu")


# --------------------------------------------------------------------------- #
# Music2Latent
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def m2l(tmp_path_factory: pytest.TempPathFactory) -> Music2LatentModel:
    folder = write_tiny_music2latent(tmp_path_factory.mktemp("m2l"))
    # Short chunks (64 spectrogram frames, ~0.74 s) so tracks of ~1-2 s span several.
    model = Music2LatentModel(
        ModelOptions(weights_dir=folder, batch_size=4, params={"chunk_s": 0.75})
    )
    model.load("cpu")
    return model


def test_music2latent_embeds_a_batch_like_one_track_at_a_time(m2l: Music2LatentModel) -> None:
    batch = tracks(44100, [0.6, 1.1, 1.9])
    results = m2l.embed(batch)
    check_vectors(results, ["t0", "t1", "t2"], 192)
    assert m2l.dim == 192 and m2l.sample_rate == 44100 and m2l.chunk_frames == 64
    # One latent per 8 spectrogram frames (~10.8 Hz), of the frames upstream keeps.
    assert [r.extra["frames"] for r in results] == [6, 11, 20]
    assert [frame_count(t.samples.size) // 8 for t in batch] == [6, 11, 20]
    again = m2l.embed(batch[1:2])
    np.testing.assert_allclose(again[0].vector, results[1].vector, atol=1e-5)


@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")
def test_music2latent_matches_upstream_encode(m2l: Music2LatentModel) -> None:
    """Same latents as music2latent's own ``encode_audio_inference`` for a multi-chunk track."""
    from music2latent.inference import encode_audio_inference

    class Trainer:  # what encode_audio_inference reads: .gen.encoder
        gen = torch.nn.Module()

    Trainer.gen.encoder = m2l._encoder
    samples = tracks(44100, [1.9])[0].samples
    with torch.inference_mode():
        latents = encode_audio_inference(samples, Trainer, 64 * 512, 8, device="cpu")
    vector = m2l.embed([TrackAudio("x", samples)])[0].vector
    np.testing.assert_allclose(vector, enrich(latents[0].numpy()), atol=1e-4)


def test_music2latent_missing_and_foreign_weights(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"missing .*empty/music2latent\.pt"):
        Music2LatentModel(ModelOptions(weights_dir=tmp_path / "empty")).load("cpu")
    (tmp_path / "empty" / "music2latent.pt").write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelUnavailable, match="not a readable torch checkpoint"):
        Music2LatentModel(ModelOptions(weights_dir=tmp_path / "empty")).load("cpu")
    torch.save({"model": {}}, tmp_path / "empty" / "music2latent.pt")
    with pytest.raises(ModelUnavailable, match="no 'gen_state_dict'"):
        Music2LatentModel(ModelOptions(weights_dir=tmp_path / "empty")).load("cpu")
    folder = write_tiny_music2latent(tmp_path / "w")
    dropped = drop_first_key(folder / "music2latent.pt", "encoder.bottleneck_layers.")
    with pytest.raises(
        ModelUnavailable,
        match="missing encoder weights " + re.escape(dropped.removeprefix("encoder.")),
    ):
        Music2LatentModel(ModelOptions(weights_dir=folder)).load("cpu")
