"""Decoding a track's audio into the mono float32 samples a model wants.

soundfile (libsndfile: WAV, FLAC, OGG/Opus, MP3, AIFF) is tried first because it
is fast and can read just a segment; anything else (m4a, wma) goes through
librosa/audioread, which uses ffmpeg when it is installed. Long files are cut
at `max_duration_s` so a 3-hour recording cannot exhaust memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from pipeline.errors import InvalidInput


class AudioDecodeError(InvalidInput):
    """The file is not decodable audio (corrupt, empty, not audio, gone)."""


@dataclass(frozen=True)
class DecodeLimits:
    max_duration_s: float = 1800.0
    min_duration_s: float = 0.05


def _to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels (so 5.1 and stereo both become one channel)."""
    if data.ndim == 2:
        data = data.mean(axis=1)
    return np.ascontiguousarray(data, dtype=np.float32)


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return samples
    import soxr

    return soxr.resample(samples, source_rate, target_rate, quality="HQ").astype(np.float32)


def _read_soundfile(path: str, start_s: float, duration_s: float) -> tuple[np.ndarray, int] | None:
    try:
        with sf.SoundFile(path) as handle:
            rate = handle.samplerate
            start = int(start_s * rate)
            if start:
                handle.seek(min(start, max(0, handle.frames - 1)))
            frames = int(duration_s * rate)
            data = handle.read(frames=frames, dtype="float32", always_2d=True)
            return data, rate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


def _read_librosa(path: str, start_s: float, duration_s: float) -> tuple[np.ndarray, int]:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            # librosa warns that it falls back to audioread: that is the point here.
            warnings.simplefilter("ignore")
            samples, rate = librosa.load(
                path, sr=None, mono=True, offset=start_s, duration=duration_s
            )
    except Exception as exc:
        raise AudioDecodeError(
            f"cannot decode {os.path.basename(path)}: {type(exc).__name__}: {exc} "
            "(formats beyond WAV/FLAC/OGG/MP3/AIFF need ffmpeg installed)"
        ) from exc
    return samples[:, None], int(rate)


def decode_audio(
    path: str,
    sample_rate: int,
    start_s: float = 0.0,
    end_s: float | None = None,
    limits: DecodeLimits | None = None,
) -> np.ndarray:
    """Mono float32 samples at `sample_rate`, for the whole file or a segment of it."""
    limits = limits or DecodeLimits()
    if not os.path.exists(path):
        raise AudioDecodeError(f"{path} no longer exists")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(f"{path} is empty (0 bytes)")
    duration = limits.max_duration_s
    if end_s is not None:
        if end_s <= start_s:
            raise AudioDecodeError(f"segment end {end_s} s is not after start {start_s} s")
        duration = min(duration, end_s - start_s)
    decoded = _read_soundfile(path, start_s, duration)
    if decoded is None:
        decoded = _read_librosa(path, start_s, duration)
    data, rate = decoded
    if rate <= 0:
        # ffmpeg (through audioread) "decodes" some garbage with a sample rate of 0.
        raise AudioDecodeError(f"cannot decode {os.path.basename(path)}: no sample rate in it")
    samples = _to_mono(data)
    if samples.size < limits.min_duration_s * rate:
        raise AudioDecodeError(
            f"{path} holds {samples.size / max(rate, 1):.3f} s of audio, "
            f"less than {limits.min_duration_s} s"
        )
    if not np.isfinite(samples).all():
        raise AudioDecodeError(f"{path} decodes to NaN/inf samples")
    return _resample(samples, rate, sample_rate)
