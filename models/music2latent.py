"""Music2Latent (Sony CSL Paris) as a sonicbus embedding model, loaded from a local file.

The ``music2latent`` package's ``EncoderDecoder`` downloads its checkpoint from
the Hugging Face hub on construction and loads it with ``strict=False``, so a
truncated or foreign file would silently leave random weights. We use only
the package's network definition (``models.Encoder``) and spectrogram code,
read ``music2latent.pt`` from ``weights_dir`` ourselves and check every
encoder key and shape before loading. Only the encoder is built: the decoder
(three quarters of the 58 M parameters) plays no part in embedding.

What is stored: the encoder's bottleneck latents, 64 channels at
44100 / 512 / 8 ~ 10.8 Hz, scaled as ``EncoderDecoder.encode`` returns them
(divided by ``sigma_rescale``), enriched to 3 x 64 = 192 dims. The
``extract_features=True`` output (8192 values per frame, the pre-bottleneck
feature map) would enrich to 24,576 dims: under Milvus' limit, but 128 times
the storage and search cost for a raw spectro-temporal map that the model
never trained to be compact; the bottleneck is the representation it did.

Chunking: the whole file is encoded, in chunks of `chunk_s` (default 10 s).
As in ``encode_audio_inference``, a track's spectrogram is cut into
equal chunks and the last one is filled up with the track's own first frames
(its latents are cut off again). Unlike upstream, a track shorter than one
chunk is filled up the same way instead of being encoded at its own length:
every chunk then has one shape, chunks of many tracks share a forward pass,
and a track's vector does not depend on its batch mates (GroupNorm and
attention span the whole chunk, so padding with silence would change it).
Upstream's 60 s chunk only bounds memory; the model trained on far shorter
crops. Inference runs in float32 on every device (upstream autocasts the
encoder to float16 on CUDA), so CPU and GPU vectors agree.

Options (``ModelOptions.params``, from ``embed.params.music2latent``):
``chunk_s`` (default 10; part of `model_version`) and ``max_batch_s``, the
audio per forward pass (default 60, upstream's memory budget; it does not
change any vector).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from models.base import (
    EmbeddingModel,
    ModelOptions,
    ModelParams,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
    as_mono_float32,
)
from models.base import enrich as enrich_sequence
from models.weights import file_digest, list_keys, require_files, settings_digest

log = logging.getLogger(__name__)

SAMPLE_RATE = 44_100
LATENT_DIM = 64
CHECKPOINT = "music2latent.pt"
# Bump when anything between decoded samples and the stored vector changes.
PREPROCESSING_VERSION = 1
# Fixed by the published architecture (music2latent/hparams.py): STFT hop, and the
# encoder's time downsampling (one 2x step per 0 in freq_downsample_list).
HOP = 512
DOWNSAMPLE = 8
STFT_WINDOW = 4 * HOP
SIGMA_RESCALE = 0.06


def frame_count(n_samples: int) -> int:
    """Spectrogram frames kept for a track, as ``encode_audio_inference`` crops it."""
    return DOWNSAMPLE * (((n_samples - 3 * HOP) // HOP) // DOWNSAMPLE)


def load_encoder_state(path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a music2latent training checkpoint, keys without ``encoder.``.

    The checkpoint is tried as plain tensors first; training checkpoints may
    pickle other objects, and then it is unpickled in full like upstream does
    (so only point `weights_dir` at files you trust).
    """
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            log.warning("%s holds more than tensors; it was unpickled in full", path)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelUnavailable(f"{path} is not a readable torch checkpoint: {exc}") from exc
    state = checkpoint.get("gen_state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelUnavailable(f"{path} has no 'gen_state_dict': not a music2latent checkpoint")
    return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}


def build_encoder(state: dict[str, torch.Tensor], source: Path) -> torch.nn.Module:
    """The published encoder with `state` loaded, after checking every key and shape."""
    from music2latent.models import Encoder

    encoder = Encoder()
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state) if expected[k].shape != state[k].shape
    )
    if missing or unexpected or mismatched:
        parts = [
            f"{label} {list_keys(keys)}"
            for label, keys in (
                ("missing encoder weights", missing),
                ("unknown encoder weights", unexpected),
                ("wrong shapes for", mismatched),
            )
            if keys
        ]
        raise ModelUnavailable(
            f"{source} does not match the music2latent encoder: {'; '.join(parts)}"
        )
    encoder.load_state_dict(state, strict=True)
    return encoder


class Music2LatentParams(ModelParams):
    """Music2Latent's options: how tracks are cut into chunks and how many share a pass."""

    chunk_s: float = Field(
        10.0, gt=0, description="Seconds per encoded chunk (rounded to whole latent frames)."
    )
    max_batch_s: float = Field(
        60.0, gt=0, description="Most audio per forward pass; bounds memory, not the vectors."
    )


class Music2LatentModel(EmbeddingModel):
    """Music2Latent bottleneck latents [64, L] at ~10.8 Hz, enriched to 192 dims.

    ``weights_dir`` holds ``music2latent.pt`` from the Hugging Face repo
    SonyCSLParis/music2latent (the file ``EncoderDecoder`` would download).
    """

    name = "music2latent"
    sample_rate = SAMPLE_RATE
    dim = 3 * LATENT_DIM

    params_schema = Music2LatentParams
    params: Music2LatentParams

    def __init__(self, options: ModelOptions) -> None:
        """Chunking comes from `options.params` (see `Music2LatentParams`)."""
        super().__init__(options)
        chunk_frames = int(self.params.chunk_s * SAMPLE_RATE / HOP) // DOWNSAMPLE * DOWNSAMPLE
        self.chunk_frames = max(DOWNSAMPLE, chunk_frames)
        chunk_seconds = self.chunk_frames * HOP / SAMPLE_RATE
        max_chunks = int(self.params.max_batch_s / chunk_seconds)
        self.batch_chunks = max(1, min(options.batch_size, max_chunks))
        self._encoder: Any = None
        self._device = "cpu"

    def _checkpoint(self) -> Path:
        folder = require_files(
            self.options.weights_dir,
            "Music2Latent",
            [CHECKPOINT],
            "the Hugging Face repo SonyCSLParis/music2latent",
        )
        return folder / CHECKPOINT

    @property
    def model_version(self) -> str:
        weights = file_digest(self._checkpoint())
        settings = {"preprocessing": PREPROCESSING_VERSION, "chunk_frames": self.chunk_frames}
        return f"music2latent:{weights[:12]}:{settings_digest(settings)}"

    def load(self, device: str) -> None:
        path = self._checkpoint()
        encoder = build_encoder(load_encoder_state(path), path)
        self._device = device
        self._encoder = encoder.to(device).eval()

    def unload(self) -> None:
        self._encoder = None

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        if self._encoder is None:
            raise RuntimeError("Music2Latent model is not loaded: call load() first")
        audio = [self._prepare(t) for t in tracks]
        frames = [frame_count(a.size) for a in audio]
        chunks = [
            (t, start) for t, n in enumerate(frames) for start in range(0, n, self.chunk_frames)
        ]
        latents: list[list[np.ndarray]] = [[] for _ in tracks]
        with torch.inference_mode():
            signals = [torch.from_numpy(a).to(self._device) for a in audio]
            for at in range(0, len(chunks), self.batch_chunks):
                batch = chunks[at : at + self.batch_chunks]
                spectra = [self._chunk_input(signals[t], frames[t], s) for t, s in batch]
                encoded = self._encoder(torch.cat(spectra)) / SIGMA_RESCALE
                for (t, start), latent in zip(batch, encoded.float().cpu().numpy(), strict=True):
                    keep = min(self.chunk_frames, frames[t] - start) // DOWNSAMPLE
                    latents[t].append(latent[:, :keep])
        results = []
        for track, parts in zip(tracks, latents, strict=True):
            sequence = np.concatenate(parts, axis=1)
            results.append(
                TrackEmbedding(
                    track.track_id, enrich_sequence(sequence), {"frames": sequence.shape[1]}
                )
            )
        return results

    @staticmethod
    def _prepare(track: TrackAudio) -> np.ndarray:
        """Mono float32 samples, a very short track repeated up to one latent frame's worth."""
        samples = as_mono_float32(track)
        shortest = 3 * HOP + DOWNSAMPLE * HOP
        if samples.size < shortest:
            samples = np.resize(samples, shortest)
        return samples

    def _chunk_input(self, signal: torch.Tensor, n_frames: int, start: int) -> torch.Tensor:
        """Encoder input [1, 2, 1024, chunk_frames]: frames from `start`, then the track's first.

        STFT frames (2048-sample windows every 512, no centring) are computed
        straight from the matching sample range, so no full-track spectrogram
        is ever held in memory.
        """
        from music2latent.audio import to_representation_encoder

        pieces = []
        first, wanted = start, self.chunk_frames
        while wanted > 0:
            count = min(wanted, n_frames - first)
            span = signal[first * HOP : (first + count - 1) * HOP + STFT_WINDOW]
            pieces.append(to_representation_encoder(span.unsqueeze(0)))
            wanted -= count
            first = 0
        return torch.cat(pieces, dim=-1)
