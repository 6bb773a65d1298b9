"""One track made ready for the network, in a decode thread: samples, the model's input,
and the figures read from the same samples.

Tempo, key, loudness and energy are read here, where the samples already are (measured
at 5-10 % of the embedding's time: docs/performance.md, under the 15 % that would call
for a consumer group of their own). Once the model has made its input the samples are
let go: they are most of a track's memory while it waits for the network.
"""

from __future__ import annotations

import time

from models.analysis import AudioFeatures, analyse_audio
from models.base import EmbeddingModel, TrackAudio
from pipeline.audio import AudioDecodeError, DecodeLimits, decode_audio


def decode_and_prepare(
    model: EmbeddingModel,
    limits: DecodeLimits,
    audio_features: bool,
    track_id: str,
    path: str,
    start_s: float,
    end_s: float | None,
) -> tuple[TrackAudio, AudioFeatures | None, tuple[float, float, float, float]]:
    """The track, its figures (None when `audio_features` is off), the milliseconds of
    decoding, preparing and analysing, and the seconds of audio."""
    rate = model.sample_rate
    started = time.perf_counter()
    samples = decode_audio(path, rate, start_s, end_s, limits)
    decoded = time.perf_counter()
    try:
        audio = model.prepare(TrackAudio(track_id, samples))
    except ValueError as exc:  # samples no model can use (the model says why)
        raise AudioDecodeError(f"{path}: {exc}") from exc
    prepared = time.perf_counter()
    # Too short or silent: None figures and warnings, never an exception.
    analysis = analyse_audio(samples, rate) if audio_features else None
    analysed = time.perf_counter()
    if audio.features is not None:
        audio.drop_samples()
    times = (decoded - started, prepared - decoded, analysed - prepared)
    return audio, analysis, (*(t * 1000 for t in times), samples.size / rate)
