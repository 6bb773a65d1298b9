"""Tempo (BPM) from the autocorrelation of the onset envelope, read with a comb.

Why not `librosa.feature.tempo` alone: it picks the best whole-frame lag of a
32-ms-hop envelope, so at 16 kHz 128 BPM reads 125 and 150 reads 144 (2-4 %).
Here the envelope has a 10-ms hop, and a tempo's score is the mean
autocorrelation at every multiple of its beat period up to 8 s, read between
frames by linear interpolation; the multiples pin the period down to a fraction
of a frame (click tracks from 60 to 180 BPM come out within 0.05 %).

The metrical level (60 or 120? 90 or 180?) is chosen in two steps: the best
pulse under a log-normal prior around 120 BPM finds the family of related
tempi; then, from the slowest member of that family, the estimate moves to
twice or three times the tempo while that faster pulse is nearly as well
supported (`FASTER_PULSE_SUPPORT`): a steady click at 180 BPM supports 180 as
fully as 90, so it reads 180, while off-beat hi-hats over a kick and snare
support the eighth-note pulse only about 60-75 %, so the beat stays the quarter
note. The 0.85 threshold sits in the middle of the band (0.80-0.88) where every
generated click, accent, rock and house track from 60 to 180 BPM reads right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_BPM = 40.0
MAX_BPM = 240.0  # the search range for the pulse family
MAX_REPORTED_BPM = 210.0  # never climb above this: faster "beats" are subdivisions
MAX_LAG_S = 8.0
FASTER_PULSE_SUPPORT = 0.85
PRIOR_CENTRE_BPM = 120.0
PRIOR_OCTAVES = 1.0
REFINE_SPAN = 0.015  # +-1.5 % around a coarse estimate, in 61 steps (0.05 %)
MIN_PULSE_CLARITY = 0.1  # below this, no steady beat (pads, drones, noise)


@dataclass(frozen=True)
class TempoEstimate:
    bpm: float
    clarity: float  # mean normalised autocorrelation on the beat comb: 1 = perfectly periodic


def estimate_tempo(onset_envelope: np.ndarray, frames_per_s: float) -> TempoEstimate | None:
    """The tempo of an onset envelope, or None when it has no energy to correlate."""
    envelope = _without_local_mean(onset_envelope, frames_per_s)
    max_lag_s = min(MAX_LAG_S, len(envelope) / frames_per_s / 2)
    correlation = _autocorrelation(envelope, int(max_lag_s * frames_per_s) + 2)
    if correlation is None:
        return None
    comb = _Comb(correlation, frames_per_s, max_lag_s)
    grid = np.geomspace(MIN_BPM, MAX_BPM, 600)
    prior = np.exp(-0.5 * (np.log2(grid / PRIOR_CENTRE_BPM) / PRIOR_OCTAVES) ** 2)
    bpm, score = comb.refine(float(grid[np.argmax(comb.scores(grid) * prior)]))
    while bpm / 2 >= MIN_BPM:
        bpm, score = comb.refine(bpm / 2)
    climbing = True
    while climbing:
        climbing = False
        for factor in (2, 3):
            if bpm * factor * (1 - REFINE_SPAN) > MAX_REPORTED_BPM:
                continue
            faster, faster_score = comb.refine(bpm * factor)
            if faster_score >= FASTER_PULSE_SUPPORT * score:
                bpm, score, climbing = faster, faster_score, True
                break
    return TempoEstimate(bpm=bpm, clarity=max(0.0, score))


class _Comb:
    """Scores tempi by the mean autocorrelation at every multiple of their beat period."""

    def __init__(self, correlation: np.ndarray, frames_per_s: float, max_lag_s: float) -> None:
        self._correlation = correlation
        self._frames_per_s = frames_per_s
        self._max_lag = min(max_lag_s * frames_per_s, len(correlation) - 1)
        self._lags = np.arange(len(correlation))

    def scores(self, bpms: np.ndarray) -> np.ndarray:
        periods = 60.0 * self._frames_per_s / bpms
        teeth = max(1, int(self._max_lag / periods.min()))
        lags = np.outer(periods, np.arange(1, teeth + 1))
        inside = lags <= self._max_lag
        inside[:, 0] = True  # at least one tooth, even for a period past the window
        values = np.interp(np.minimum(lags, self._max_lag), self._lags, self._correlation)
        return (values * inside).sum(axis=1) / inside.sum(axis=1)

    def refine(self, bpm: float) -> tuple[float, float]:
        """The best-scoring tempo within +-1.5 % of `bpm`, and its score."""
        grid = np.linspace(bpm * (1 - REFINE_SPAN), bpm * (1 + REFINE_SPAN), 61)
        scores = self.scores(grid)
        best = int(np.argmax(scores))
        return float(grid[best]), float(scores[best])


def _without_local_mean(envelope: np.ndarray, frames_per_s: float) -> np.ndarray:
    """The envelope minus its 1-s moving average: a steady floor of flux correlates with
    every lag alike and would make every tempo look supported."""
    width = int(frames_per_s) | 1
    local_mean = np.convolve(envelope, np.ones(width) / width, mode="same")
    return envelope - local_mean


def _autocorrelation(envelope: np.ndarray, max_lag: int) -> np.ndarray | None:
    """Unbiased autocorrelation up to `max_lag` frames, normalised to 1 at lag 0."""
    n = len(envelope)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(envelope, size)
    correlation = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 1]
    correlation = correlation / np.maximum(n - np.arange(len(correlation)), 1)
    if not correlation[0] > 1e-12:
        return None
    return correlation / correlation[0]
