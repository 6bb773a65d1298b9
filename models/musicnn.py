"""MusiCNN (MSD) behind the model interface: the default, real weights, CPU-friendly.

Per track: 3-s patches -> 200-d penultimate embeddings [T, 200], measured from
each unit's resting value (see `dead_unit_values`) -> enriched 600-d vector;
the 50 MSD tag probabilities (averaged over patches) travel in `extra["tags"]`
and power zero-shot text search.
"""

from __future__ import annotations

import numpy as np
import torch

from models.base import (
    EmbeddingModel,
    ModelOptions,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
    enrich,
)
from models.musicnn_checkpoint import MUSICNN_WHEEL_SHA256, load_musicnn_tensors
from models.musicnn_net import (
    EMBEDDING_DIM,
    MSD_TAGS,
    SAMPLE_RATE,
    MusiCNN,
    load_musicnn_weights,
    musicnn_patches,
)

# Bump when preprocessing or enrichment changes: stored vectors must be redone.
PREPROCESSING_VERSION = "p2"


def dead_unit_values(net: MusiCNN) -> torch.Tensor:
    """What each embedding unit outputs when its ReLU is silent: BN applied to zero.

    About half of the 200 units never fire on real input, so they output this
    constant for every track; left in, the constants dominate cosine similarity
    and make all tracks look alike. Subtracting it zeroes dead units exactly and
    measures live units from their resting value.
    """
    bn = net.dense_bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (bn.bias - bn.running_mean * scale).detach()


class MusicnnModel(EmbeddingModel):
    name = "musicnn"
    sample_rate = SAMPLE_RATE
    dim = 3 * EMBEDDING_DIM
    tags = MSD_TAGS

    def __init__(self, options: ModelOptions) -> None:
        super().__init__(options)
        self._net: MusiCNN | None = None
        self._device = "cpu"
        self._dead_unit_values = torch.zeros(EMBEDDING_DIM)

    @property
    def model_version(self) -> str:
        return f"musicnn-msd-{MUSICNN_WHEEL_SHA256[:10]}-{PREPROCESSING_VERSION}"

    def load(self, device: str) -> None:
        cache = self.options.cache_dir / "models" / "musicnn" if self.options.cache_dir else None
        net = MusiCNN()
        try:
            load_musicnn_weights(net, load_musicnn_tensors(cache, "MSD_musicnn"))
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"MusiCNN weights could not be loaded: {exc}") from exc
        self._net = net.eval().to(device)
        self._device = device
        self._dead_unit_values = dead_unit_values(net).to(device)
        if device == "cuda":
            # TF32 convolutions drift past the 1e-3 parity with the original network.
            torch.backends.cudnn.allow_tf32 = False

    def unload(self) -> None:
        self._net = None

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        if self._net is None:
            raise RuntimeError("MusiCNN used before load()")
        patches = [musicnn_patches(track.samples) for track in tracks]
        counts = [len(p) for p in patches]
        stacked = torch.from_numpy(np.concatenate(patches))
        probs, embeddings = [], []
        # The timbral convs hold [B, 204, 187, 96] activations: 16 patches keep the
        # peak near 1.2 GB on CPU (64 took 2 GB and was no faster on 2 cores).
        step = self.options.batch_size
        for start in range(0, len(stacked), step):
            batch = stacked[start : start + step].to(self._device)
            p, e = self._net(batch)
            probs.append(p.float().cpu().numpy())
            embeddings.append((e - self._dead_unit_values).float().cpu().numpy())
        all_probs, all_embeddings = np.concatenate(probs), np.concatenate(embeddings)
        results, offset = [], 0
        for track, count in zip(tracks, counts, strict=True):
            frames = all_embeddings[offset : offset + count]
            tags = all_probs[offset : offset + count].mean(axis=0)
            offset += count
            results.append(
                TrackEmbedding(
                    track_id=track.track_id,
                    vector=enrich(frames.T),
                    extra={"tags": [round(float(x), 5) for x in tags], "patches": count},
                )
            )
        return results
