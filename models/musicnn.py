"""MusiCNN behind the model interface: the default, real weights, CPU-friendly.

Per track: 3-s patches -> 200-d penultimate embeddings [T, 200], measured from
each unit's resting value (see `dead_unit_values`) -> enriched 600-d vector;
the 50 MSD tag probabilities (averaged over patches) travel in `extra["tags"]`
and power zero-shot text search.

Two knobs (`embed.params.musicnn`, see `MusicnnParams`):

- `heads`: `msd+mtt` (default) or `msd`. The same wheel ships the network trained
  on MagnaTagATune, whose 50 tags are instruments, voices, tempo and loudness
  ("piano", "female vocal", "fast", "quiet") that the MSD vocabulary lacks. With
  both, the mel patches are computed once and run through both networks; the
  vector is the two 600-d halves, each scaled to unit length (so each head weighs
  the same in a cosine), 1200-d in all, and the MTT tags go to `extra["mtt_tags"]`.
  Both heads are the default: measured on real music they embed at 118x realtime
  against 196x for MSD alone, and prompts naming instruments or tempo find what they
  say (docs/performance.md); `msd` halves the model's work.
- `max_patches`: at most N patches per track, spread evenly over it (off by
  default). A 4-minute track has 80 patches; the docs say how neighbours change
  as N shrinks (docs/performance.md).

Inference runs `FastMusiCNN` (models.musicnn_fast), the port rearranged so the
front-end pools before its element-wise layers (the same outputs, ~1.8x faster
in PyTorch), exported once to ONNX and run by ONNX Runtime on CPU (another ~3x,
models.musicnn_onnx; `backend: torch` keeps PyTorch, which CUDA always uses).
Mel patches are computed in `prepare`, which the embedder runs in its decode
threads while the network works on earlier tracks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from models.base import (
    EmbeddingModel,
    ModelOptions,
    ModelParams,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
    enrich,
)
from models.musicnn_checkpoint import (
    MUSICNN_WHEEL_SHA256,
    default_musicnn_cache_dir,
    load_musicnn_tensors,
)
from models.musicnn_onnx import GRAPH_VERSION, OnnxMusiCNN, export_graph, onnx_available
from models.musicnn_spec import (
    EMBEDDING_DIM,
    MSD_TAGS,
    MTT_TAGS,
    SAMPLE_RATE,
    TF_BN_EPSILON,
    musicnn_patches,
)

if TYPE_CHECKING:  # PyTorch is imported only for the torch backend or a first export
    import torch

    from models.musicnn_net import MusiCNN

# Bump when preprocessing or enrichment changes: stored vectors must be redone.
PREPROCESSING_VERSION = "p2"
CHECKPOINTS = {"msd": "MSD_musicnn", "mtt": "MTT_musicnn"}


class MusicnnParams(ModelParams):
    """MusiCNN's options (`embed.params.musicnn`)."""

    heads: Literal["msd", "msd+mtt"] = Field(
        "msd+mtt", description="msd+mtt: 1200-d, MSD + MagnaTagATune tags; msd: 600-d, MSD tags."
    )
    max_patches: int | None = Field(
        None, ge=1, description="At most this many 3-s patches per track, spread evenly."
    )
    backend: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto", description="auto: ONNX Runtime on CPU (~3x faster here), PyTorch on CUDA."
    )


def dead_unit_values(net: MusiCNN) -> torch.Tensor:
    """What each embedding unit outputs when its ReLU is silent: BN applied to zero.

    About half of the 200 units never fire on real input, so they output this
    constant for every track; left in, the constants dominate cosine similarity
    and make all tracks look alike. Subtracting it zeroes dead units exactly and
    measures live units from their resting value.
    """
    import torch

    bn = net.dense_bn
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return (bn.bias - bn.running_mean * scale).detach()


def resting_values(tensors: dict[str, np.ndarray]) -> np.ndarray:
    """`dead_unit_values` read straight from the checkpoint (the embedding's BN is TF's
    `batch_normalization_10`), for the ONNX Runtime path, which never builds the port."""
    bn = {leaf: tensors[f"batch_normalization_10/{leaf}"].astype(np.float32)
          for leaf in ("gamma", "beta", "moving_mean", "moving_variance")}  # fmt: skip
    scale = bn["gamma"] / np.sqrt(bn["moving_variance"] + np.float32(TF_BN_EPSILON))
    return (bn["beta"] - bn["moving_mean"] * scale).astype(np.float32)


def spread_patches(patches: np.ndarray, max_patches: int | None) -> np.ndarray:
    """At most `max_patches` of the track's patches, evenly spaced from first to last."""
    if max_patches is None or len(patches) <= max_patches:
        return patches
    picked = np.unique(np.linspace(0, len(patches) - 1, max_patches).round().astype(int))
    return np.ascontiguousarray(patches[picked])


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


class _OnnxHead:
    """One network (MSD or MTT) on ONNX Runtime, with its units' resting values."""

    def __init__(self, tensors: dict[str, np.ndarray], graph: Path, threads: int | None) -> None:
        if not graph.is_file():  # first use: build the port in PyTorch once and export it
            export_graph(_torch_port(tensors).fast, graph)
        self.onnx = OnnxMusiCNN(graph, threads)
        self.rest = resting_values(tensors)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probs, embedding = self.onnx.run(batch)
        return probs, embedding - self.rest


class _TorchHead:
    """One network on PyTorch (CUDA, or `backend: torch`): the fused `FastMusiCNN`."""

    def __init__(self, net: MusiCNN, device: str = "cpu") -> None:
        from models.musicnn_fast import FastMusiCNN

        self.fast = FastMusiCNN(net).to(device)
        self.rest = dead_unit_values(net).to(device)
        self.device = device

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            p, e = self.fast(torch.from_numpy(batch).to(self.device))
            return p.float().cpu().numpy(), (e - self.rest).float().cpu().numpy()


def _torch_port(tensors: dict[str, np.ndarray], device: str = "cpu") -> _TorchHead:
    from models.musicnn_net import MusiCNN, load_musicnn_weights

    net = MusiCNN()
    load_musicnn_weights(net, tensors)
    return _TorchHead(net.eval(), device)


class MusicnnModel(EmbeddingModel):
    name = "musicnn"
    sample_rate = SAMPLE_RATE
    tags = MSD_TAGS
    params_schema = MusicnnParams

    def __init__(self, options: ModelOptions) -> None:
        super().__init__(options)
        assert isinstance(self.params, MusicnnParams)
        self.heads: tuple[str, ...] = tuple(self.params.heads.split("+"))
        self.dim = 3 * EMBEDDING_DIM * len(self.heads)
        self._nets: dict[str, _OnnxHead | _TorchHead] = {}
        self._device = "cpu"

    @property
    def model_version(self) -> str:
        heads = "+".join(self.heads)
        budget = f"-b{self.params.max_patches}" if self.params.max_patches else ""  # type: ignore[attr-defined]
        return f"musicnn-{heads}-{MUSICNN_WHEEL_SHA256[:10]}-{PREPROCESSING_VERSION}{budget}"

    def load(self, device: str) -> None:
        cache = self.options.cache_dir / "models" / "musicnn" if self.options.cache_dir else None
        backend = self._backend(device)
        graphs = (cache or default_musicnn_cache_dir()) / "onnx"
        nets: dict[str, _OnnxHead | _TorchHead] = {}
        for head in self.heads:
            checkpoint = CHECKPOINTS[head]
            graph = graphs / f"{checkpoint}-{MUSICNN_WHEEL_SHA256[:10]}-{GRAPH_VERSION}.onnx"
            try:
                tensors = load_musicnn_tensors(cache, checkpoint)
                nets[head] = (
                    _OnnxHead(tensors, graph, self.options.threads)
                    if backend == "onnxruntime"
                    else _torch_port(tensors, device)
                )
            except (RuntimeError, KeyError, ValueError, OSError) as exc:
                raise ModelUnavailable(f"MusiCNN {checkpoint} could not be loaded: {exc}") from exc
        self._nets = nets
        self._device = device
        if device == "cuda":
            import torch

            # TF32 convolutions drift past the 1e-3 parity with the original network.
            torch.backends.cudnn.allow_tf32 = False

    def unload(self) -> None:
        self._nets = {}

    def _backend(self, device: str) -> str:
        wanted = self.params.backend  # type: ignore[attr-defined]
        if wanted == "torch" or device != "cpu":
            return "torch"
        if onnx_available():
            return "onnxruntime"
        if wanted == "onnxruntime":
            raise ModelUnavailable("backend onnxruntime: pip install onnxruntime onnx")
        return "torch"

    def prepare(self, track: TrackAudio) -> TrackAudio:
        """Mel patches (within the patch budget): CPU work the embedder overlaps with `embed`."""
        if track.features is None:
            patches = musicnn_patches(track.samples)
            track.features = spread_patches(patches, self.params.max_patches)  # type: ignore[attr-defined]
        return track

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        if not self._nets:
            raise RuntimeError("MusiCNN used before load()")
        patches = [self.prepare(track).features for track in tracks]
        counts = [len(p) for p in patches]  # type: ignore[arg-type]
        stacked = np.concatenate(patches)  # type: ignore[arg-type]
        outputs = {head: self._run(net, stacked) for head, net in self._nets.items()}
        results, offset = [], 0
        for track, count in zip(tracks, counts, strict=True):
            window = slice(offset, offset + count)
            offset += count
            halves: list[np.ndarray] = []
            extra: dict[str, Any] = {"patches": count}
            for head, (probs, embeddings) in outputs.items():
                halves.append(enrich(embeddings[window].T))
                mean_tags = [round(float(x), 5) for x in probs[window].mean(axis=0)]
                extra["tags" if head == "msd" else f"{head}_tags"] = mean_tags
            vector = halves[0] if len(halves) == 1 else np.concatenate([unit(h) for h in halves])
            results.append(TrackEmbedding(track.track_id, vector.astype(np.float32), extra))
        return results

    def _run(
        self, net: _OnnxHead | _TorchHead, stacked: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        # The timbral convs hold [B, 204, 187, 59] maps: 16 patches keep the peak
        # memory low and larger batches were no faster on 2 cores (bench/embed_throughput).
        probs, embeddings = [], []
        step = self.options.batch_size
        for start in range(0, len(stacked), step):
            p, e = net.run(stacked[start : start + step])
            probs.append(p)
            embeddings.append(e)
        return np.concatenate(probs), np.concatenate(embeddings)


__all__ = ["MTT_TAGS", "MusicnnModel", "MusicnnParams", "spread_patches"]
