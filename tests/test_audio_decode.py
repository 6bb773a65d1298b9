"""Decoding whatever users have in their music folders, and what MusiCNN makes of it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.base import ModelOptions, TrackAudio
from models.registry import create_model
from pipeline.audio import AudioDecodeError, DecodeLimits, decode_audio


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 192000])
def test_any_sample_rate_is_resampled(tmp_path: Path, rate: int) -> None:
    path = tmp_path / f"r{rate}.flac" if rate <= 96000 else tmp_path / f"r{rate}.wav"
    sf.write(path, tone(2.0, rate), rate)
    samples = decode_audio(str(path), 16000)
    assert samples.dtype == np.float32
    assert abs(len(samples) - 32000) <= 16


def test_surround_is_mixed_to_mono(tmp_path: Path) -> None:
    path = tmp_path / "surround.wav"
    sf.write(path, tone(1.0, 48000, channels=6), 48000)
    samples = decode_audio(str(path), 16000)
    assert samples.ndim == 1 and abs(len(samples) - 16000) <= 8
    assert np.abs(samples).max() == pytest.approx(0.3, abs=0.02)


def test_long_files_are_cut_and_segments_read(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, tone(60.0, 8000), 8000)
    assert len(decode_audio(str(path), 16000, limits=DecodeLimits(max_duration_s=10))) == 160000
    segment = decode_audio(str(path), 16000, start_s=20.0, end_s=25.0)
    assert abs(len(segment) - 80000) <= 8


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"fLaC" + bytes(range(256)) * 10, "cannot decode"),
        (b"this is a text file, not music\n" * 50, "cannot decode"),
    ],
)
def test_undecodable_files_give_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.flac"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=reason):
        decode_audio(str(path), 16000)


def test_a_file_deleted_before_processing_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gone.flac"
    sf.write(path, tone(1.0, 16000), 16000)
    os.remove(path)
    with pytest.raises(AudioDecodeError, match="no longer exists"):
        decode_audio(str(path), 16000)


def test_truncated_file_decodes_what_is_there_or_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, tone(10.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        samples = decode_audio(str(path), 16000)
    except AudioDecodeError as exc:
        assert "cut.flac" in str(exc)
    else:
        assert 0 < len(samples) <= 160000 and np.isfinite(samples).all()


def test_silence_and_one_second_clips_get_sensible_embeddings() -> None:
    model = create_model("musicnn", ModelOptions(idle_unload_s=0, device="cpu"))
    results = model.embed(
        [
            TrackAudio("silence", np.zeros(16000 * 5, dtype=np.float32)),
            TrackAudio("blip", tone(1.0, 16000)),
            TrackAudio("song", tone(7.0, 16000)),
        ]
    )
    for result in results:
        assert result.vector.shape == (1200,)
        assert np.isfinite(result.vector).all()
        assert len(result.extra["tags"]) == 50
    assert results[1].extra["patches"] == 1
    assert results[2].extra["patches"] == 2
    # A silent track does not move: each head's spread and motion parts are zero.
    assert np.allclose(results[0].vector[200:600], 0.0)
    assert np.allclose(results[0].vector[800:], 0.0)
    model.close()
