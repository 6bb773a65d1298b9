"""Per-track audio analysis: tempo, key and mode, loudness and energy.

Computed from the mono samples the pipeline already decoded for an embedding
model (numpy and librosa only, no torch), so it can run beside any embedder or
in a consumer group of its own. `analyse_audio` is the one entry point; each
concept lives in its own module (tempo, key, loudness, energy) over one shared
mel spectrogram (`spectrum`).
"""

from models.analysis.features import ANALYSIS_VERSION, AudioFeatures, analyse_audio
from models.analysis.key import KEY_NAMES, parse_key

__all__ = ["ANALYSIS_VERSION", "KEY_NAMES", "AudioFeatures", "analyse_audio", "parse_key"]
