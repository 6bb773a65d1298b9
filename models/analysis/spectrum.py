"""The one spectral view that tempo and energy share: a mel spectrogram at a 10-ms hop.

Tempo needs a fine hop: librosa's default (512 samples, 32 ms at 16 kHz) quantises
the beat period so coarsely that 128 BPM reads as 125 and 150 as 144. Frames are
defined in seconds, not samples, so any sample rate gives the same frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

HOP_S = 0.01
WINDOW_S = 0.064
MEL_BANDS = 64
MAX_HZ = 8000.0  # what a 16-kHz decode holds; higher rates are read over the same band
CHUNK_FRAMES = 6000  # one minute of frames per STFT
LOW_BANDS = 12  # the mel bands below ~550 Hz: kick drum, bass, the body of a snare


@dataclass(frozen=True)
class MelFrames:
    """Mel magnitudes [bands, frames] of the RMS-normalised signal, and their timing."""

    magnitudes: np.ndarray
    frames_per_s: float
    band_hz: np.ndarray  # centre frequency of each mel band


def mel_frames(samples: np.ndarray, sample_rate: int, rms: float) -> MelFrames:
    """Mel magnitudes of `samples` scaled to unit RMS, so level never changes the shape."""
    hop = max(1, round(sample_rate * HOP_S))
    n_fft = 1 << int(np.ceil(np.log2(sample_rate * WINDOW_S)))
    top_hz = min(MAX_HZ, sample_rate / 2)
    # Centred frames, computed a minute at a time: librosa's STFT of an hour-long mix
    # would hold 1.5 GB of complex bins at once.
    padded = np.pad(samples / rms, n_fft // 2)
    frame_count = 1 + len(samples) // hop
    chunk = CHUNK_FRAMES
    parts = []
    for first in range(0, frame_count, chunk):
        last = min(frame_count, first + chunk)
        piece = padded[first * hop : (last - 1) * hop + n_fft]
        parts.append(
            librosa.feature.melspectrogram(
                y=piece,
                sr=sample_rate,
                n_fft=n_fft,
                hop_length=hop,
                n_mels=MEL_BANDS,
                fmax=top_hz,
                power=1.0,
                center=False,
            )
        )
    magnitudes = np.concatenate(parts, axis=1)
    band_hz = librosa.mel_frequencies(n_mels=MEL_BANDS + 2, fmax=top_hz)[1:-1]
    return MelFrames(magnitudes.astype(np.float64), sample_rate / hop, band_hz)


def onset_strength(mel: MelFrames) -> np.ndarray:
    """Spectral flux of log-compressed mel magnitudes, with the low bands counted twice.

    The extra weight on kick and bass makes accented beats stand out from hi-hats:
    without it a rock or house pattern reads at double tempo, since eight hi-hat
    bands outweigh one kick band in a plain band average.
    """
    compressed = np.log1p(10.0 * mel.magnitudes)
    rises = np.maximum(0.0, np.diff(compressed, axis=1, prepend=compressed[:, :1]))
    return rises.mean(axis=0) + rises[:LOW_BANDS].mean(axis=0)
