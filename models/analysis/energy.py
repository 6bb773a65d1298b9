"""Energy: one figure in [0, 1] for how intense and busy a track feels.

energy = 0.4 * loudness + 0.4 * activity + 0.2 * brightness, each part in [0, 1]:

- loudness: integrated LUFS mapped linearly from -35 (0, a quiet classical
  recording) to -8 (1, a loud modern master);
- activity: onsets per second (peaks of the onset envelope) mapped from 0 to 8
  (1: sixteenth notes at 120 BPM and busier);
- brightness: the spectral centroid below 8 kHz mapped from 500 Hz (0, soft
  piano, pads) to 3 kHz (1, distorted guitars, cymbals).

Why these: they are what listeners hear as "energetic" against "calm" (the
words a text prompt maps onto this figure): loud, busy and bright. Loudness
alone would call a loudly mastered ambient pad energetic; activity carries the
same weight so that it does not. The anchors are fixed, not learnt from a
library, so a figure means the same in every install and never needs a
corpus to be recomputed. They are hand-set from typical ranges: a ranking aid
for filters, not a calibrated perceptual scale.
"""

from __future__ import annotations

import librosa
import numpy as np

from models.analysis.spectrum import MelFrames

LOUDNESS_RANGE_LUFS = (-35.0, -8.0)
ONSETS_PER_S_FOR_FULL = 8.0
CENTROID_RANGE_HZ = (500.0, 3000.0)
WEIGHTS = {"loudness": 0.4, "activity": 0.4, "brightness": 0.2}


def energy_figure(loudness_lufs: float, mel: MelFrames, onset_envelope: np.ndarray) -> float:
    """The weighted mix of the three parts, in [0, 1]."""
    parts = energy_parts(loudness_lufs, mel, onset_envelope)
    return float(np.clip(sum(WEIGHTS[name] * value for name, value in parts.items()), 0.0, 1.0))


def energy_parts(
    loudness_lufs: float, mel: MelFrames, onset_envelope: np.ndarray
) -> dict[str, float]:
    """Each part of the energy figure, in [0, 1] (kept apart for tests and tuning)."""
    low, high = LOUDNESS_RANGE_LUFS
    power = mel.magnitudes**2
    total = float(power.sum())
    centroid = float(power.sum(axis=1) @ mel.band_hz) / total if total > 0 else 0.0
    parts = {
        "loudness": (loudness_lufs - low) / (high - low),
        "activity": onsets_per_second(onset_envelope, mel.frames_per_s) / ONSETS_PER_S_FOR_FULL,
        "brightness": (centroid - CENTROID_RANGE_HZ[0])
        / (CENTROID_RANGE_HZ[1] - CENTROID_RANGE_HZ[0]),
    }
    return {name: float(np.clip(value, 0.0, 1.0)) for name, value in parts.items()}


def onsets_per_second(onset_envelope: np.ndarray, frames_per_s: float) -> float:
    """Peaks of the onset envelope per second, librosa's onset-picking rules (a peak must
    top its 30-ms neighbourhood and its 100-ms mean by 7 % of the track's strong onsets,
    30 ms after the last). Scaled by the 99th percentile, not the maximum, so one huge
    hit does not hide every other onset."""
    if onset_envelope.size < 3:
        return 0.0
    scale = float(np.percentile(onset_envelope, 99))
    if not scale > 0:
        return 0.0
    normalised = np.minimum(onset_envelope / scale, 1.0)

    def frames(seconds: float) -> int:
        return max(1, round(seconds * frames_per_s))

    peaks = librosa.util.peak_pick(
        normalised,
        pre_max=frames(0.03),
        post_max=1,
        pre_avg=frames(0.1),
        post_avg=frames(0.1),
        delta=0.07,
        wait=frames(0.03),
    )
    return len(peaks) / (onset_envelope.size / frames_per_s)
