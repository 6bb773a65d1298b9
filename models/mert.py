"""MERT-v1-330M (m-a-p) as a sonicbus embedding model, loaded from a local folder.

MERT's published ``MERTModel`` (remote code) subclasses transformers'
``HubertModel``; for the released v1 checkpoints (no CQT branch, no deepnorm)
it holds exactly HuBERT's modules under the same names, so we load the folder
with ``HubertModel.from_pretrained`` and never execute remote code. The
feature extractor's only job is ``do_normalize``: each clip is scaled to zero
mean and unit variance before the forward pass, which we reproduce.

What is stored: the 25 hidden states (CNN projection + 24 layers) x 1024 at
75 Hz would enrich to 76,800 dims, over Milvus' 32,768 limit. We store a
*layer mix*: a weighted average of a configurable set of hidden states
(default: all 25, equal weights, the layer average MERT's authors use as a
general-purpose probe input) giving one [1024, T] sequence, enriched to
3 x 1024 = 3072 dims. The mix is part of `model_version`, so changing it
forces re-embedding.

Chunking: the model was trained on 5 s crops and its attention cost grows with
the square of the length, so tracks are cut into 30 s windows that overlap by
5 s (the issue's "30 s / 5 s"; read as overlap, because a 5 s *hop* would run
every frame through the network six times for the same stored statistics).
Each moment keeps the frames of the window where it is furthest from an edge:
overlaps are split at their midpoint, giving one seamless 75 Hz sequence. The
last window is aligned to the end of the track, so every window of a track
longer than 30 s has exactly 30 s of audio: windows of many tracks batch
together without padding, and a track's vector never depends on which other
tracks shared its batch.

Options (``ModelOptions.params``, from ``embed.params.mert`` in the settings):
``layers`` (hidden-state indices, 0 = CNN projection, -1 = last; default all),
``layer_weights`` (one non-negative weight per layer; default equal),
``window_s`` and ``overlap_s`` (default 30 and 5).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from models.base import (
    EmbeddingModel,
    ModelOptions,
    ModelParams,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
    as_mono_float32,
    transformers_import,
)
from models.base import enrich as enrich_sequence
from models.weights import (
    HF_WEIGHT_FILES,
    file_digest,
    first_existing,
    list_keys,
    require_files,
    settings_digest,
)

log = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
HIDDEN_DIM = 1024
# Bump when anything between decoded samples and the stored vector changes.
PREPROCESSING_VERSION = 1

# --------------------------------------------------------------------------- #
# Windows
# --------------------------------------------------------------------------- #


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Starts of `window`-long windows every `hop` samples, the last one flush with the end."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window, hop))
    starts.append(n_samples - window)
    return starts


def stitch(frames: list[np.ndarray], starts: list[int], window: int, frame_hop: int) -> np.ndarray:
    """Join per-window [T_i, D] frames into one sequence, splitting overlaps at their midpoint.

    Frame j of a window starting at sample s begins at s + j * frame_hop; it is
    kept when that position falls in the window's own stretch of the track.
    """
    kept = []
    for i, (sequence, start) in enumerate(zip(frames, starts, strict=True)):
        low = 0 if i == 0 else (start + starts[i - 1] + window) / 2
        high = math.inf if i == len(starts) - 1 else (starts[i + 1] + start + window) / 2
        positions = start + frame_hop * np.arange(sequence.shape[0])
        kept.append(sequence[(positions >= low) & (positions < high)])
    return np.concatenate(kept, axis=0)


# --------------------------------------------------------------------------- #
# The model
# --------------------------------------------------------------------------- #


class MertParams(ModelParams):
    """MERT's options; all but the window length change what is stored (see the module doc)."""

    layers: list[int] | None = Field(
        None,
        min_length=1,
        description="Hidden states to mix (0 = CNN projection, -1 = last layer); None = all.",
    )
    layer_weights: list[float] | None = Field(
        None, description="One non-negative weight per entry of `layers`; None = equal."
    )
    window_s: float = Field(30.0, gt=0, description="Seconds of audio per forward pass.")
    overlap_s: float = Field(5.0, ge=0, description="Seconds shared by neighbouring windows.")

    @model_validator(mode="after")
    def _consistent(self) -> MertParams:
        if self.overlap_s >= self.window_s:
            raise ValueError(f"overlap_s ({self.overlap_s}) must be below window_s")
        if self.layer_weights is not None:
            if self.layers is None or len(self.layer_weights) != len(self.layers):
                raise ValueError("layer_weights needs one weight per entry of layers")
            if min(self.layer_weights) < 0 or sum(self.layer_weights) <= 0:
                raise ValueError("layer_weights must be non-negative with a positive sum")
        return self


class MertModel(EmbeddingModel):
    """MERT-v1-330M: a weighted layer mix of its hidden states, enriched to 3072 dims.

    ``weights_dir`` holds the files of the Hugging Face repo m-a-p/MERT-v1-330M:
    ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``
    (``preprocessor_config.json`` is read when present).
    """

    name = "mert"
    sample_rate = SAMPLE_RATE
    dim = 3 * HIDDEN_DIM

    params_schema = MertParams
    params: MertParams

    def __init__(self, options: ModelOptions) -> None:
        """The layer mix and windows come from `options.params` (see `MertParams`)."""
        super().__init__(options)
        self.layers = tuple(self.params.layers) if self.params.layers is not None else None
        weights = self.params.layer_weights
        self.layer_weights = tuple(weights) if weights is not None else None
        self.window = round(self.params.window_s * SAMPLE_RATE)
        self.hop = self.window - round(self.params.overlap_s * SAMPLE_RATE)
        self._model: Any = None
        self._device = "cpu"
        self._normalize = True
        self._frame_hop = 320
        self._min_samples = 400
        self._mix: torch.Tensor | None = None
        self._mix_layers: list[int] = []

    # -- files and versions ------------------------------------------------- #

    def _folder(self) -> Path:
        return require_files(
            self.options.weights_dir,
            "MERT",
            ["config.json", HF_WEIGHT_FILES],
            "the Hugging Face repo m-a-p/MERT-v1-330M",
        )

    @property
    def model_version(self) -> str:
        folder = self._folder()
        weights = file_digest(first_existing(folder, HF_WEIGHT_FILES))
        settings = {
            "preprocessing": PREPROCESSING_VERSION,
            "config": file_digest(folder / "config.json"),
            "layers": self.layers,
            "weights": self.layer_weights,
            "window": self.window,
            "hop": self.hop,
        }
        return f"mert-v1-330m:{weights[:12]}:{settings_digest(settings)}"

    # -- loading -------------------------------------------------------------- #

    def load(self, device: str) -> None:
        with transformers_import():
            from transformers import HubertConfig, HubertModel

        folder = self._folder()
        # from_dict, not from_pretrained: the file says model_type "mert_model", which is
        # expected here and would only trigger a "not supported" warning.
        config = HubertConfig.from_dict(json.loads((folder / "config.json").read_text()))
        for flag in ("feature_extractor_cqt", "deepnorm"):
            if getattr(config, flag, False):
                raise ModelUnavailable(f"{folder}/config.json sets {flag}: not a MERT-v1 model")
        if config.hidden_size != HIDDEN_DIM:
            raise ModelUnavailable(
                f"{folder}/config.json has hidden_size {config.hidden_size}; the stored "
                f"MERT vector is built for {HIDDEN_DIM} (MERT-v1-330M)"
            )
        if getattr(config, "sample_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ModelUnavailable(f"{folder}/config.json: sample_rate is not {SAMPLE_RATE}")
        config.conv_pos_batch_norm = False  # MERT's config lacks the field newer HuBERT reads
        self._normalize = self._read_normalize(folder)
        model, info = HubertModel.from_pretrained(
            folder, config=config, local_files_only=True, output_loading_info=True
        )
        problems = sorted(info["missing_keys"]) + [str(m) for m in info["mismatched_keys"]]
        if problems:
            raise ModelUnavailable(
                f"{folder} does not hold MERT weights matching its config.json: missing or "
                f"mismatched {list_keys(problems, 8)}"
            )
        if info["unexpected_keys"]:
            log.warning("MERT checkpoint keys not used: %s", sorted(info["unexpected_keys"])[:8])
        self._frame_hop = math.prod(config.conv_stride)
        self._min_samples = _receptive_field(config.conv_kernel, config.conv_stride)
        n_states = config.num_hidden_layers + 1
        self._mix_layers, weights = self._resolve_mix(n_states)
        self._device = device
        self._mix = torch.tensor(weights, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
        self._model = model.to(device).eval()

    @staticmethod
    def _read_normalize(folder: Path) -> bool:
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return True
        settings = json.loads(path.read_text())
        if settings.get("sampling_rate", SAMPLE_RATE) != SAMPLE_RATE:
            raise ModelUnavailable(f"{path}: sampling_rate is not {SAMPLE_RATE}")
        return bool(settings.get("do_normalize", True))

    def _resolve_mix(self, n_states: int) -> tuple[list[int], list[float]]:
        layers = list(self.layers) if self.layers is not None else list(range(n_states))
        bad = [i for i in layers if not -n_states <= i < n_states]
        if bad:
            raise ModelUnavailable(f"MERT layers {bad} out of range: the model has {n_states}")
        weights = list(self.layer_weights) if self.layer_weights else [1.0] * len(layers)
        total = sum(weights)
        return [i % n_states for i in layers], [w / total for w in weights]

    def unload(self) -> None:
        self._model = None
        self._mix = None

    # -- inference ------------------------------------------------------------ #

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        if self._model is None:
            raise RuntimeError("MERT model is not loaded: call load() first")
        audio = [as_mono_float32(t) for t in tracks]
        audio = [np.pad(a, (0, max(0, self._min_samples - a.size))) for a in audio]
        plans = [window_starts(a.size, self.window, self.hop) for a in audio]
        # Windows of equal length batch together; all full windows are `self.window` long.
        jobs: dict[int, list[tuple[int, int]]] = {}
        for t, (samples, starts) in enumerate(zip(audio, plans, strict=True)):
            for w, start in enumerate(starts):
                length = min(self.window, samples.size - start)
                jobs.setdefault(length, []).append((t, w))
        outputs: list[list[np.ndarray]] = [[np.empty(0)] * len(p) for p in plans]
        with torch.inference_mode():
            for length, items in jobs.items():
                for at in range(0, len(items), self.options.batch_size):
                    batch = items[at : at + self.options.batch_size]
                    clips = [audio[t][plans[t][w] : plans[t][w] + length] for t, w in batch]
                    for (t, w), frames in zip(batch, self._forward(clips), strict=True):
                        outputs[t][w] = frames
        results = []
        for track, frames, starts in zip(tracks, outputs, plans, strict=True):
            sequence = stitch(frames, starts, self.window, self._frame_hop)
            results.append(
                TrackEmbedding(
                    track.track_id,
                    enrich_sequence(sequence.T),
                    {"frames": int(sequence.shape[0]), "layers": list(self._mix_layers)},
                )
            )
        return results

    def _forward(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Equal-length clips -> the layer mix per clip, [T, 1024] float32 on the CPU."""
        batch = torch.from_numpy(np.stack(clips)).to(self._device)
        if self._normalize:
            mean = batch.mean(dim=1, keepdim=True)
            var = batch.var(dim=1, unbiased=False, keepdim=True)
            batch = (batch - mean) / torch.sqrt(var + 1e-7)
        out = self._model(batch, output_hidden_states=True)
        # transformers 4 (which MERT's remote code and every published MERT recipe ran
        # on) reported the final, layer-normed output as the last hidden state; 5 reports
        # the last layer before that norm. Keep MERT's definition of "layer 24".
        hidden = [*out.hidden_states[:-1], out.last_hidden_state]
        states = torch.stack([hidden[i] for i in self._mix_layers])
        mixed = (states * self._mix).sum(dim=0)
        return list(mixed.float().cpu().numpy())


def _receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """Samples the conv stack needs for one output frame (400 for HuBERT's)."""
    field, jump = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * jump
        jump *= stride
    return field
