"""Key and mode from a constant-Q chromagram and Krumhansl-Kessler key profiles.

The track's pitch-class energy (summed over time) is correlated with the 24
rotated major and minor profiles of Krumhansl & Kessler (1982); the best
correlation names the key. On the generated I-IV-V-I and i-iv-V-i progressions
the Temperley and Aarden profiles score the same (every key right); KK is kept
as the classic whose errors (relative or dominant key) are well understood.
CQT rather than STFT chroma: its bins follow the semitones down to C1, where an
STFT at 16 kHz cannot tell a bass's neighbouring notes apart; both cost under
3 s per hour of audio.
"""

from __future__ import annotations

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
MIN_KEY_CLARITY = 0.5  # below this correlation the pitch content names no key


@dataclass(frozen=True)
class KeyEstimate:
    tonic: str  # one of KEY_NAMES
    mode: Mode
    clarity: float  # Pearson correlation with the winning profile, in [-1, 1]


def estimate_key(samples: np.ndarray, sample_rate: int) -> KeyEstimate | None:
    """The best-matching key, or None when the chroma is flat (noise, silence, drums only)."""
    hop = max(64, int(sample_rate * CHROMA_HOP_S) // 64 * 64)  # the CQT wants 2^octaves | hop
    octaves = _octaves_below_nyquist(sample_rate)
    chroma = librosa.feature.chroma_cqt(
        y=samples, sr=sample_rate, hop_length=hop, tuning=0.0, n_octaves=octaves
    )
    pitch_classes = chroma.sum(axis=1)
    if not np.all(np.isfinite(pitch_classes)) or pitch_classes.std() < 1e-9:
        return None
    return best_key(pitch_classes)


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


def _octaves_below_nyquist(sample_rate: int) -> int:
    """How many octaves above C1 the CQT may span: its top bin must stay under Nyquist
    (with room for the filters' width), seven at 16 kHz and above."""
    c1 = librosa.note_to_hz("C1")
    return int(max(1, min(7, np.floor(np.log2(sample_rate / 2 / c1 / 1.1)))))
