"""Tests for the TensorFlow-free MusiCNN port (checkpoint reader, network, preprocessing).

They use the real released weights: the musicnn 0.1.0 wheel is fetched with
``pip download`` into ``$SONICBUS_CACHE_DIR/models/musicnn`` on first use (PyPI
is reachable on developer machines and CI).  The golden values below were
produced by the ORIGINAL TensorFlow extractor (``bench/musicnn_parity_tf.py``,
TF 2.21, numpy 1.26, librosa 0.8.1) on :func:`synthetic_signal`, so the port is
checked against TensorFlow without needing TensorFlow here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.musicnn_checkpoint import (
    CheckpointFormatError,
    load_musicnn_tensors,
    musicnn_checkpoint_files,
    parse_bundle_index,
)
from models.musicnn_net import (
    MSD_TAGS,
    PATCH_FRAMES,
    MusiCNN,
    load_musicnn_weights,
    musicnn_log_mel,
    musicnn_patches,
    run_musicnn,
)

SR = 16000

EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "conv2d/kernel": (7, 38, 1, 204),
    "conv2d_1/kernel": (7, 67, 1, 204),
    "conv2d_2/kernel": (128, 1, 1, 51),
    "conv2d_3/kernel": (64, 1, 1, 51),
    "conv2d_4/kernel": (32, 1, 1, 51),
    "conv2d_5/kernel": (7, 561, 1, 64),
    "conv2d_6/kernel": (7, 64, 1, 64),
    "conv2d_7/kernel": (7, 64, 1, 64),
    "dense/kernel": (1506, 200),
    "dense/bias": (200,),
    "dense_1/kernel": (200, 50),
    "dense_1/bias": (50,),
}
_CONV_OUT = [204, 204, 51, 51, 51, 64, 64, 64]
_BN_DIMS = [1, 204, 204, 51, 51, 51, 64, 64, 64, 1506, 200]
for _i, _n in enumerate(_CONV_OUT):
    EXPECTED_SHAPES[f"conv2d{'' if _i == 0 else f'_{_i}'}/bias"] = (_n,)
for _i, _n in enumerate(_BN_DIMS):
    for _leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
        EXPECTED_SHAPES[f"batch_normalization{'' if _i == 0 else f'_{_i}'}/{_leaf}"] = (_n,)

# Original TF extractor on synthetic_signal() (3 patches; librosa 0.8.1, i.e. reflect
# STFT padding like musicnn_patches' default): top-5 mean tag probabilities, and
# patch 0's embedding at the 8 units furthest from their "ReLU was 0" constant.
GOLDEN_TOP_TAGS = {
    "electronic": 0.441676,
    "ambient": 0.295799,
    "chillout": 0.262573,
    "electronica": 0.151319,
    "indie": 0.09591,
}
GOLDEN_EMBEDDING_DIMS = [21, 32, 73, 82, 88, 135, 158, 170]
GOLDEN_EMBEDDING_PATCH0 = [
    1.705947,
    1.658761,
    2.717004,
    2.155051,
    1.967596,
    1.909816,
    2.080817,
    2.420421,
]


def synthetic_signal(seconds: float = 10.0) -> np.ndarray:
    """Deterministic music-ish test audio: an A-major chord with harmonics, a pulsing
    noise 'drum' every half second and a little background noise, peak 0.8."""
    rng = np.random.default_rng(1234)
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(
        np.sin(2 * np.pi * f * h * t) / h for f in (220.0, 277.18, 329.63) for h in (1, 2, 3)
    )
    chord *= 0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)
    drum = rng.standard_normal(t.size) * np.exp(-(t % 0.5) / 0.03)
    signal = chord + 1.5 * drum + 0.05 * rng.standard_normal(t.size)
    return (0.8 * signal / np.max(np.abs(signal))).astype(np.float32)


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return load_musicnn_tensors()


@pytest.fixture(scope="module")
def model(tensors: dict[str, np.ndarray]) -> MusiCNN:
    torch.set_num_threads(2)
    net = MusiCNN()
    load_musicnn_weights(net, tensors)
    return net.eval()


def test_checkpoint_has_all_variables_with_expected_shapes(
    tensors: dict[str, np.ndarray],
) -> None:
    assert set(tensors) == set(EXPECTED_SHAPES)
    for name, shape in EXPECTED_SHAPES.items():
        assert tensors[name].shape == shape, name
        assert tensors[name].dtype == np.float32, name
        assert np.all(np.isfinite(tensors[name])), name
    assert np.all(tensors["batch_normalization_9/moving_variance"] > 0)


def test_index_lists_optimizer_slots_that_loading_skips() -> None:
    index, _data = musicnn_checkpoint_files()
    entries = parse_bundle_index(index)
    assert "conv2d/kernel/Adam" in entries
    assert "global_step" in entries or "beta1_power" in entries
    assert entries["dense/kernel"].shape == (1506, 200)


def test_reader_rejects_corrupted_index() -> None:
    index, _data = musicnn_checkpoint_files()
    with pytest.raises(CheckpointFormatError, match="magic"):
        parse_bundle_index(index[:-1] + b"\x00")
    corrupted = bytearray(index)
    corrupted[10] ^= 0xFF  # inside the first data block
    with pytest.raises(CheckpointFormatError, match="CRC"):
        parse_bundle_index(bytes(corrupted))


def test_weights_load_completely_with_layout_conversion(
    model: MusiCNN, tensors: dict[str, np.ndarray]
) -> None:
    np.testing.assert_array_equal(model.dense.weight.detach().numpy(), tensors["dense/kernel"].T)
    np.testing.assert_array_equal(
        model.timbral[0].conv.weight.detach().numpy(),
        tensors["conv2d/kernel"].transpose(3, 2, 0, 1),
    )
    np.testing.assert_array_equal(
        model.midend[0].conv.weight.detach().numpy(),
        tensors["conv2d_5/kernel"][:, :, 0, :].transpose(2, 1, 0),
    )
    np.testing.assert_array_equal(
        model.dense_bn.running_var.numpy(), tensors["batch_normalization_10/moving_variance"]
    )
    assert model.pool_bn.eps == pytest.approx(1e-3)


def test_weight_loading_reports_missing_unexpected_and_misshapen(
    tensors: dict[str, np.ndarray],
) -> None:
    missing = {k: v for k, v in tensors.items() if k != "conv2d_3/bias"}
    with pytest.raises(KeyError, match="conv2d_3/bias"):
        load_musicnn_weights(MusiCNN(), missing)
    extra = {**tensors, "conv2d_8/kernel": np.zeros((1, 1, 1, 1), np.float32)}
    with pytest.raises(KeyError, match="conv2d_8/kernel"):
        load_musicnn_weights(MusiCNN(), extra)
    misshapen = {**tensors, "dense/bias": np.zeros(199, np.float32)}
    with pytest.raises(ValueError, match="dense/bias"):
        load_musicnn_weights(MusiCNN(), misshapen)
    wrong_rank = {**tensors, "conv2d_6/kernel": np.zeros((7, 64, 64), np.float32)}
    with pytest.raises(ValueError, match="conv2d_6/kernel"):
        load_musicnn_weights(MusiCNN(), wrong_rank)
    slots = {**tensors, "dense/kernel/Adam": np.zeros(3, np.float32)}
    load_musicnn_weights(MusiCNN(), slots)  # optimizer slots are ignored


def test_patching_follows_the_extractor() -> None:
    audio = synthetic_signal()
    logmel = musicnn_log_mel(audio)
    assert logmel.shape == (1 + audio.size // 256, 96)
    patches = musicnn_patches(audio)
    assert patches.shape == (3, PATCH_FRAMES, 96)
    assert patches.dtype == np.float32
    for k in range(3):  # consecutive, non-overlapping; the tail is dropped
        np.testing.assert_array_equal(patches[k], logmel[k * 187 : (k + 1) * 187])


def test_log_mel_rounds_through_float16_without_overflow() -> None:
    loud = np.sin(2 * np.pi * 110 * np.arange(SR * 3) / SR).astype(np.float32)
    logmel = musicnn_log_mel(loud)
    # 10000 * mel exceeds float16's max here: float16 arithmetic would give inf.
    assert logmel.max() > np.log10(65504.0 + 1)
    assert np.all(np.isfinite(logmel))
    mel = (10.0 ** logmel.astype(np.float64) - 1) / 10000
    audible = mel > 1e-3
    on_grid = np.abs(mel - mel.astype(np.float16)) / np.maximum(mel, 1e-12)
    assert on_grid[audible].max() < 1e-4  # the mel power was rounded to float16


def test_short_audio_is_zero_padded_to_one_patch() -> None:
    one_second = synthetic_signal(1.0)
    patches = musicnn_patches(one_second)
    assert patches.shape == (1, PATCH_FRAMES, 96)
    real_frames = 1 + one_second.size // 256
    assert np.all(patches[0, real_frames:] == 0)
    assert np.all(patches[0, :real_frames].max(axis=1) > 0)
    assert musicnn_patches(np.zeros(100, np.float32)).shape == (1, PATCH_FRAMES, 96)


def test_outputs_shapes_ranges_and_determinism(model: MusiCNN) -> None:
    patches = musicnn_patches(synthetic_signal())
    tags, embedding = run_musicnn(model, patches)
    assert tags.shape == (3, len(MSD_TAGS)) and embedding.shape == (3, 200)
    assert tags.dtype == np.float32 and embedding.dtype == np.float32
    assert np.all((tags >= 0) & (tags <= 1))
    assert np.all(np.isfinite(embedding))
    tags_again, embedding_again = run_musicnn(model, patches)
    np.testing.assert_array_equal(tags, tags_again)
    np.testing.assert_array_equal(embedding, embedding_again)
    empty_tags, empty_embedding = run_musicnn(model, patches[:0])
    assert empty_tags.shape == (0, 50) and empty_embedding.shape == (0, 200)
    tags_single, embedding_single = run_musicnn(model, patches, batch_size=1)
    np.testing.assert_allclose(tags_single, tags, atol=1e-5)
    np.testing.assert_allclose(embedding_single, embedding, atol=1e-4)


def test_matches_tensorflow_golden_values(model: MusiCNN) -> None:
    tags, embedding = run_musicnn(model, musicnn_patches(synthetic_signal()))
    mean_tags = tags.mean(axis=0)
    for tag, expected in GOLDEN_TOP_TAGS.items():
        assert mean_tags[MSD_TAGS.index(tag)] == pytest.approx(expected, abs=2e-4), tag
    top5 = [MSD_TAGS[i] for i in np.argsort(-mean_tags)[:5]]
    assert top5 == list(GOLDEN_TOP_TAGS)
    np.testing.assert_allclose(
        embedding[0, GOLDEN_EMBEDDING_DIMS], GOLDEN_EMBEDDING_PATCH0, atol=2e-4
    )


def test_tag_names() -> None:
    assert len(MSD_TAGS) == 50 and len(set(MSD_TAGS)) == 50
    assert (MSD_TAGS[0], MSD_TAGS[9], MSD_TAGS[-1]) == ("rock", "jazz", "happy")
