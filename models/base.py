"""The one interface every embedding model sits behind.

An `EmbeddingModel` knows how to load its weights and turn a batch of decoded
tracks into per-frame sequences. `ManagedModel` adds what every model needs
the same way: lazy loading on first use, unloading after an idle timeout (so a
GPU or 2 GB of RAM is given back between bursts of new music), one lock so
concurrent callers share a single loaded copy safely, and the enrichment that
turns a [D, T] sequence into the stored [3·D] vector.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import Unavailable

log = logging.getLogger(__name__)

# transformers resolves its names lazily, and that is not thread-safe: two threads
# importing its first names at once made one fail with "cannot import name
# 'AutoTokenizer'" (two query services warming up in one process). Every import from
# transformers holds this lock (reentrant: a model's loader may import inside another).
_TRANSFORMERS_LOCK = threading.RLock()


@contextmanager
def transformers_import() -> Iterator[None]:
    """Hold around every import from transformers (see the lock above). It also turns off
    transformers' "Loading weights" bars: services write log lines (JSON with
    --json-logs), and a bar in them is noise; the load is logged with its time."""
    with _TRANSFORMERS_LOCK:
        yield
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


# Present wherever the NVIDIA driver is loaded; without them CUDA cannot be available.
NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl")


class ModelOptions(BaseModel):
    """How one model is run; passed in by the pipeline, never read from globals."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where inference runs.")
    weights_dir: Path | None = Field(None, description="Local folder with the model's weights.")
    cache_dir: Path | None = Field(None, description="Where packaged weights are unpacked.")
    idle_unload_s: float = Field(300.0, ge=0, description="Unload after this idle time; 0 = never.")
    batch_size: int = Field(16, ge=1, description="Chunks per forward pass.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores).")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Model-specific options, e.g. MERT's layers/layer_weights, "
        "Music2Latent's chunk_s",
    )


class ModelUnavailable(Unavailable):
    """The model cannot run here (weights missing or wrong); the message says what to do."""


class ModelParams(BaseModel):
    """A model's own options (`ModelOptions.params`), validated when the model is created.

    Subclasses declare the knobs a model has. Unknown keys are refused rather
    than ignored: a misspelt ``layer`` for ``layers`` would otherwise embed a
    whole library with the default mix and nobody would notice. This base,
    with no fields, is what a model without knobs accepts: nothing.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_params(model: str, schema: type[ModelParams], params: dict[str, Any]) -> ModelParams:
    """`params` checked against `schema`; every problem named in one `ModelUnavailable`."""
    try:
        return schema.model_validate(params)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "params"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown option {where!r}")
            elif error["type"] == "value_error":  # our own checks: their message, no prefix
                problems.append(f"{where}: {error.get('ctx', {}).get('error', error['msg'])}")
            else:
                problems.append(f"{where}: {error['msg']}")
        accepted = ", ".join(schema.model_fields) or "none"
        raise ModelUnavailable(
            f"invalid params for model {model!r}: {'; '.join(problems)} "
            f"(accepted options: {accepted})"
        ) from exc


@dataclass
class TrackAudio:
    """A decoded track: mono float32 samples at the model's sample rate, and the model's
    own input made from them by `EmbeddingModel.prepare` (None until then)."""

    track_id: str
    samples: np.ndarray
    features: np.ndarray | None = None

    def drop_samples(self) -> None:
        """Let the samples go once `features` hold the model's input: they are most of a
        waiting track's memory. A fresh empty array, since even an empty slice keeps the
        whole buffer alive."""
        self.samples = np.empty(0, dtype=self.samples.dtype)


@dataclass
class TrackEmbedding:
    """What a model returns per track: the vector to store and model-specific extras."""

    track_id: str
    vector: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def as_mono_float32(track: TrackAudio, min_samples: int = 1) -> np.ndarray:
    """The track's samples as contiguous float32 mono, rejecting what no model can embed."""
    samples = np.ascontiguousarray(track.samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"track {track.track_id}: expected mono 1-D samples, got {samples.shape}")
    if samples.size < min_samples:
        raise ValueError(f"track {track.track_id}: {samples.size} samples, need {min_samples}")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"track {track.track_id}: samples contain NaN or inf")
    return samples


def enrich(sequence: np.ndarray) -> np.ndarray:
    """[D, T] frames -> [3·D]: mean, robust spread, and how much the frames move.

    The spread is the interquartile range scaled to a normal sigma (IQR / 1.349),
    which outliers (a silent intro, a click) do not blow up the way std does;
    the mean absolute first difference captures how fast the sound changes.
    A single frame has no spread or movement: those parts are zero.
    """
    sequence = np.asarray(sequence, dtype=np.float32)
    if sequence.ndim != 2 or sequence.shape[1] == 0:
        raise ValueError(f"expected a [D, T] sequence with T >= 1, got {sequence.shape}")
    mean = sequence.mean(axis=1)
    q75, q25 = np.percentile(sequence, [75, 25], axis=1)
    sigma = (q75 - q25) / 1.349
    if sequence.shape[1] > 1:
        motion = np.abs(np.diff(sequence, axis=1)).mean(axis=1)
    else:
        motion = np.zeros_like(mean)
    return np.concatenate([mean, sigma, motion]).astype(np.float32)


def resolve_device(device: str) -> str:
    if device == "cpu":
        return "cpu"  # asking PyTorch would load it (~500 MB) for nothing
    if device == "auto" and not any(os.path.exists(p) for p in NVIDIA_DRIVER_FILES):
        return "cpu"  # no NVIDIA driver, no CUDA: known without loading PyTorch (~500 MB)
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("device 'cuda' requested but no CUDA GPU is available")
    return device


class EmbeddingModel(ABC):
    """A model's own code: weights, preprocessing, forward pass."""

    name: str
    sample_rate: int
    dim: int
    # The schema of `options.params`; models with knobs declare their own.
    params_schema: ClassVar[type[ModelParams]] = ModelParams

    def __init__(self, options: ModelOptions) -> None:
        """Keep `options` and validate its `params`, so a bad option fails before any load."""
        self.options = options
        self.params = parse_params(self.name, self.params_schema, options.params)

    @property
    @abstractmethod
    def model_version(self) -> str:
        """Changes whenever weights or preprocessing change (forces re-embedding)."""

    @abstractmethod
    def load(self, device: str) -> None:
        """Read weights and move the network to `device`."""

    @abstractmethod
    def unload(self) -> None:
        """Drop every reference to weights and tensors."""

    def prepare(self, track: TrackAudio) -> TrackAudio:
        """The track's CPU preprocessing (spectrograms, patches) into `track.features`.

        The embedder calls it in its decode threads, so that it overlaps with `embed`
        running earlier tracks; it must not touch the network (no lock is held). Models
        whose preprocessing is part of their forward pass keep this default: nothing.
        """
        return track

    @abstractmethod
    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        """Embed several tracks in batched forward passes (called under inference mode);
        tracks not yet through `prepare` are prepared here."""


class ManagedModel:
    """Lazy load, idle unload and thread-safe use of one `EmbeddingModel`."""

    def __init__(self, model: EmbeddingModel) -> None:
        self.model = model
        self._lock = threading.RLock()
        self._loaded = False
        self._last_used = 0.0
        self._device = "cpu"
        self._timer: threading.Timer | None = None

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def device(self) -> str:
        return self._device

    def ensure_loaded(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._device = resolve_device(self.model.options.device)
            started = time.perf_counter()
            self.model.load(self._device)
            torch = sys.modules.get("torch")  # models on ONNX Runtime never load it
            if torch is not None and self.model.options.threads:
                torch.set_num_threads(self.model.options.threads)
            self._loaded = True
            log.info(
                "loaded model %s on %s in %.1f s",
                self.model.name,
                self._device,
                time.perf_counter() - started,
                extra={"model": self.model.name, "version": self.model.model_version},
            )

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        with self._lock:
            self.ensure_loaded()
            torch = sys.modules.get("torch")
            try:
                with torch.inference_mode() if torch is not None else contextlib.nullcontext():
                    return self.model.embed(tracks)
            finally:
                self._last_used = time.monotonic()
                self._schedule_unload()

    def unload(self) -> None:
        with self._lock:
            if not self._loaded:
                return
            self.model.unload()
            self._loaded = False
            gc.collect()
            if self._device == "cuda":
                import torch

                torch.cuda.empty_cache()
            log.info("unloaded model %s", self.model.name, extra={"model": self.model.name})

    def _schedule_unload(self) -> None:
        idle = self.model.options.idle_unload_s
        if idle <= 0:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(idle, self._unload_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _unload_if_idle(self) -> None:
        with self._lock:
            if time.monotonic() - self._last_used >= self.model.options.idle_unload_s - 0.01:
                self.unload()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.unload()
