"""Key and mode from a chromagram and Krumhansl-Kessler key profiles.

The track's pitch-class energy (summed over time) is correlated with the 24
rotated major and minor profiles of Krumhansl & Kessler (1982); the best
correlation names the key. On the generated I-IV-V-I and i-iv-V-i progressions
the Temperley and Aarden profiles score the same (every key right); KK is kept
as the classic whose errors (relative or dominant key) are well understood.
The chroma comes from a half-second STFT (2-Hz bins at 16 kHz: neighbouring
semitones apart down to C2) through a fixed bin-to-pitch-class matrix, made once
per sample rate. librosa's constant-Q chroma was the first choice, but it builds
its filters on every call: measured 180 ms of fixed cost per track and 0.85 s for
a 4-minute one at 16 kHz, against ~15 ms for a minute here, with every generated
progression's key still right (tests/test_audio_features.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import librosa
import numpy as np

from pipeline.errors import InvalidInput

Mode = Literal["major", "minor"]

# One spelling per pitch class, the usual one for key names.
KEY_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_ENHARMONIC = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb", "Cb": "B", "E#": "F"}

MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

CHROMA_HOP_S = 0.25  # key needs no finer time than this, and a coarse hop keeps it cheap
CHROMA_WINDOW_S = 0.5  # bins of ~2 Hz: the semitones of C2 (65 Hz) are 3.9 Hz apart
LOWEST_MIDI = 36  # C2
HIGHEST_MIDI = 96  # C7 (2.1 kHz): higher bins are mostly harmonics and noise
SEMITONE_SPREAD = 0.2  # a bin this many semitones off a note's centre counts 61 %
MIN_KEY_CLARITY = 0.5  # below this correlation the pitch content names no key


@dataclass(frozen=True)
class KeyEstimate:
    tonic: str  # one of KEY_NAMES
    mode: Mode
    clarity: float  # Pearson correlation with the winning profile, in [-1, 1]


def estimate_key(samples: np.ndarray, sample_rate: int) -> KeyEstimate | None:
    """The best-matching key, or None when the chroma is flat (noise, silence, drums only)."""
    pitch_classes = chroma(samples, sample_rate).sum(axis=1)
    if not np.all(np.isfinite(pitch_classes)) or pitch_classes.std() < 1e-9:
        return None
    return best_key(pitch_classes)


def chroma(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """[12, frames] pitch-class magnitudes (C first), each frame scaled to a maximum of 1."""
    n_fft = 1 << int(np.ceil(np.log2(sample_rate * CHROMA_WINDOW_S)))
    hop = max(1, int(sample_rate * CHROMA_HOP_S))
    audio = np.asarray(samples, dtype=np.float32)
    if audio.size < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.size))
    frames = librosa.util.frame(audio, frame_length=n_fft, hop_length=hop)
    window = np.hanning(n_fft).astype(np.float32)
    magnitudes = np.abs(np.fft.rfft(frames * window[:, None], axis=0))
    pitch = _pitch_class_weights(sample_rate, n_fft) @ magnitudes
    peaks = pitch.max(axis=0, keepdims=True)
    return np.divide(pitch, peaks, out=np.zeros_like(pitch), where=peaks > 0)


@functools.lru_cache(maxsize=8)
def _pitch_class_weights(sample_rate: int, n_fft: int) -> np.ndarray:
    """[12, bins]: how much each STFT bin counts for the pitch class of its nearest note,
    from C2 to C7; a bin between two notes counts little for either."""
    hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    midi = np.full_like(hz, -1.0)
    midi[1:] = 69 + 12 * np.log2(hz[1:] / 440.0)
    nearest = np.round(midi)
    usable = np.flatnonzero((nearest >= LOWEST_MIDI) & (nearest <= HIGHEST_MIDI))
    weights = np.zeros((12, hz.size), dtype=np.float32)
    offset = (midi[usable] - nearest[usable]) / SEMITONE_SPREAD
    weights[nearest[usable].astype(int) % 12, usable] = np.exp(-0.5 * offset**2)
    return weights


def best_key(pitch_classes: np.ndarray) -> KeyEstimate:
    """The key whose rotated profile correlates best with 12 pitch-class weights (C first)."""
    best: KeyEstimate | None = None
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            clarity = float(np.corrcoef(np.roll(pitch_classes, -tonic), profile)[0, 1])
            if best is None or clarity > best.clarity:
                best = KeyEstimate(KEY_NAMES[tonic], mode, clarity)  # type: ignore[arg-type]
    assert best is not None
    return best


def parse_key(text: str) -> tuple[str, Mode]:
    """("A", "minor") from "A minor", "a min", "Am", "Db major", "C#"; enharmonic spellings
    map onto KEY_NAMES. A key with no mode is major. Raises InvalidInput otherwise."""
    cleaned = text.strip().replace("♯", "#").replace("♭", "b")
    words = cleaned.split()
    if len(words) == 1 and len(cleaned) >= 2 and cleaned.endswith("m"):
        words = [cleaned[:-1], "minor"]  # "Am", "F#m", "Ebm"
    if not 1 <= len(words) <= 2 or not words[0]:
        raise InvalidInput(f"not a key: {text!r} (try e.g. 'A minor' or 'Eb major')")
    tonic = words[0][0].upper() + words[0][1:]
    tonic = _ENHARMONIC.get(tonic, tonic)
    mode_word = words[1].lower() if len(words) == 2 else "major"
    modes = {"major": "major", "maj": "major", "minor": "minor", "min": "minor"}
    if tonic not in KEY_NAMES or mode_word not in modes:
        raise InvalidInput(f"not a key: {text!r} (try e.g. 'A minor' or 'Eb major')")
    return tonic, modes[mode_word]  # type: ignore[return-value]
