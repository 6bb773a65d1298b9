"""`analyse_audio`: tempo, key, loudness and energy of one decoded track, never raising
on what a library really holds (silence, a 1-s jingle, a stray NaN).

Each figure the audio cannot support is None, and `warnings` says why; NaN and
infinities never reach the result (pydantic refuses them, as the store would).
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.analysis.energy import energy_figure
from models.analysis.key import MIN_KEY_CLARITY, Mode, estimate_key
from models.analysis.loudness import integrated_loudness
from models.analysis.spectrum import mel_frames, onset_strength
from models.analysis.tempo import MIN_PULSE_CLARITY, estimate_tempo
from pipeline.errors import InvalidInput

# Bump when an algorithm or constant changes: stored figures must be recomputed.
ANALYSIS_VERSION = "a2"
MIN_SECONDS = 0.4  # one loudness block; shorter audio gets no figure at all
MIN_TEMPO_SECONDS = 6.0  # a few beats at 60 BPM, and a comb with more than one tooth
MIN_KEY_SECONDS = 3.0
# Tempo, key and energy are read from the middle minute of a longer track; loudness from
# all of it. Measured on a 4-minute track at 16 kHz: the whole track cost 1.5 s (key 0.85,
# mel 0.48), as much as half of MusiCNN's work; the middle minute a quarter of that.
EXCERPT_SECONDS = 60.0


class AudioFeatures(BaseModel):
    """What one track sounds like, in figures a filter or a text prompt can use."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    bpm: float | None = Field(None, gt=0, description="Beats per minute, 0.1 BPM precision.")
    key: str | None = Field(None, description="Tonic, one of KEY_NAMES: C, C#, D, Eb, ...")
    mode: Mode | None = Field(None, description="major or minor")
    key_clarity: float | None = Field(
        None, ge=-1, le=1, description="Correlation of the chroma with the key's profile."
    )
    loudness_db: float | None = Field(
        None, description="Integrated loudness in LUFS (ITU-R BS.1770-4, gated)."
    )
    energy: float | None = Field(
        None, ge=0, le=1, description="0 calm .. 1 energetic (models/analysis/energy.py)."
    )
    duration_s: float = Field(0.0, ge=0)
    warnings: list[str] = Field(default_factory=list)
    analysis_version: str = ANALYSIS_VERSION

    @property
    def key_name(self) -> str | None:
        """The key as filters write it, e.g. "A minor" (`parse_key` reads it back)."""
        return f"{self.key} {self.mode}" if self.key and self.mode else None


def analyse_audio(samples: np.ndarray, sample_rate: int) -> AudioFeatures:
    """The figures of one track from its mono samples at any sample rate.

    Raises InvalidInput only for what is not audio at all (not 1-D, a sample rate
    under 1 kHz); short, silent or damaged audio gives None figures and warnings.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 1000:
        raise InvalidInput(f"sample rate must be a whole number of Hz >= 1000, not {sample_rate}")
    audio = np.asarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise InvalidInput(f"expected mono 1-D samples, got an array of shape {audio.shape}")
    warnings: list[str] = []
    broken = ~np.isfinite(audio)
    if broken.any():
        warnings.append(f"{int(broken.sum())} samples were NaN or infinite; read as silence")
        audio = np.where(broken, np.float32(0), audio)
    seconds = audio.size / sample_rate
    result = {"duration_s": round(seconds, 3), "warnings": warnings}
    if seconds < MIN_SECONDS:
        warnings.append(f"too short to analyse: {seconds:.2f} s (needs {MIN_SECONDS} s)")
        return AudioFeatures(**result)
    loudness = integrated_loudness(audio, sample_rate)
    if loudness is None:
        warnings.append("silent: no 400-ms block louder than -70 LUFS; no tempo, key or energy")
        return AudioFeatures(**result)
    middle = excerpt(audio, sample_rate, EXCERPT_SECONDS)
    rms = _rms(middle) or _rms(audio)  # a silent middle: its mel is zeros, no beat is read
    mel = mel_frames(middle, sample_rate, rms)
    onsets = onset_strength(mel)
    return AudioFeatures(
        **result,
        **_tempo(onsets, mel.frames_per_s, seconds, warnings),
        **_key(middle, sample_rate, seconds, warnings),
        loudness_db=round(loudness, 2),
        energy=round(energy_figure(loudness, mel, onsets), 3),
    )


def excerpt(audio: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """The middle `seconds` of `audio` (all of it when shorter): a view, not a copy."""
    length = int(seconds * sample_rate)
    if audio.size <= length:
        return audio
    start = (audio.size - length) // 2
    return audio[start : start + length]


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _tempo(onsets: np.ndarray, frames_per_s: float, seconds: float, warnings: list[str]) -> dict:
    if seconds < MIN_TEMPO_SECONDS:
        warnings.append(f"too short for tempo: {seconds:.1f} s (needs {MIN_TEMPO_SECONDS:g} s)")
        return {}
    tempo = estimate_tempo(onsets, frames_per_s)
    if tempo is None or tempo.clarity < MIN_PULSE_CLARITY:
        warnings.append("no steady beat: tempo left out")
        return {}
    return {"bpm": round(tempo.bpm, 1)}


def _key(audio: np.ndarray, sample_rate: int, seconds: float, warnings: list[str]) -> dict:
    if seconds < MIN_KEY_SECONDS:
        warnings.append(f"too short for key: {seconds:.1f} s (needs {MIN_KEY_SECONDS:g} s)")
        return {}
    key = estimate_key(audio, sample_rate)
    if key is None or key.clarity < MIN_KEY_CLARITY:
        warnings.append("no clear key: pitch content matches no key profile well")
        return {}
    return {"key": key.tonic, "mode": key.mode, "key_clarity": round(key.clarity, 3)}
