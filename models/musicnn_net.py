"""PyTorch port of the MusiCNN ``MSD_musicnn`` tagger (Pons & Serra, 2019).

The network and preprocessing mirror ``musicnn/models.py`` (``build_musicnn`` with
``num_filt_midend=64, num_units_backend=200``) and ``musicnn/extractor.py`` from
the ``musicnn`` 0.1.0 wheel, so that the released TF1 weights (read by
:mod:`models.musicnn_checkpoint`) give the same tags and embeddings without
TensorFlow.  Layout notes for the port:

* TF works in NHWC with H = time (187 frames) and W = mel bins (96); here the
  frontend uses NCHW with the same H/W meaning, and the mid-end (whose TF convs
  span the full feature width) is expressed as ``Conv1d`` over time.
* Every conv is ``conv -> ReLU -> BatchNorm`` (TF applies the activation inside
  ``conv2d`` and the BN afterwards); BN epsilon is TF's 1e-3.
* The back-end stacks ``[max, mean]`` on a trailing axis before flattening, so the
  1506 pooled features are interleaved ``max_0, mean_0, max_1, mean_1, ...``.
* The 200-d embedding is the extractor's ``penultimate`` output: dense(1506->200)
  -> ReLU -> BatchNorm, i.e. the input of the final 200->50 logits layer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.musicnn_checkpoint import is_model_variable, load_musicnn_tensors
from models.musicnn_spec import (
    EMBEDDING_DIM,
    HOP_LENGTH,
    MSD_TAGS,
    MTT_TAGS,
    N_FFT,
    N_MELS,
    PATCH_FRAMES,
    SAMPLE_RATE,
    TF_BN_EPSILON,
    musicnn_log_mel,
    musicnn_patches,
)

__all__ = [
    "EMBEDDING_DIM", "HOP_LENGTH", "MSD_TAGS", "MTT_TAGS", "N_FFT", "N_MELS", "PATCH_FRAMES",
    "SAMPLE_RATE", "TF_BN_EPSILON", "MusiCNN", "load_musicnn_weights", "load_pretrained_musicnn",
    "musicnn_log_mel", "musicnn_patches", "run_musicnn",
]  # fmt: skip


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #


class _FrontendBlock(nn.Module):
    """conv (over time x mel) -> ReLU -> BN -> max over the whole mel axis.

    ``time_pad`` reproduces TF's padding: timbral blocks pre-pad 3 frames each side
    and use 'valid'; temporal blocks use 'same', which for an even kernel ``k``
    pads ``(k - 1) // 2`` before and the rest after.
    """

    def __init__(self, filters: int, kernel: tuple[int, int], time_pad: tuple[int, int]) -> None:
        super().__init__()
        self.time_pad = time_pad
        self.conv = nn.Conv2d(1, filters, kernel_size=kernel)
        self.bn = nn.BatchNorm2d(filters, eps=TF_BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, 1, T, 96]`` to ``[B, filters, T]``."""
        x = F.pad(x, (0, 0, *self.time_pad))
        return self.bn(F.relu(self.conv(x))).amax(dim=3)


class _MidendBlock(nn.Module):
    """Full-width conv over time (kernel 7, 3 frames zero-padded each side) -> ReLU -> BN."""

    def __init__(self, in_channels: int, filters: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, filters, kernel_size=7, padding=3)
        self.bn = nn.BatchNorm1d(filters, eps=TF_BN_EPSILON)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[B, C, T]`` to ``[B, filters, T]``."""
        return self.bn(F.relu(self.conv(x)))


class MusiCNN(nn.Module):
    """MusiCNN ``MSD_musicnn``: musically motivated front-end, dense mid-end, pooled back-end.

    ``forward`` takes log-mel patches ``[B, 187, 96]`` and returns
    ``(tag_probabilities [B, 50], embedding [B, 200])``.  The front-end and mid-end
    are fully convolutional, so other patch lengths also work (as in the original).
    Call ``.eval()``: in training mode BN would use batch statistics.
    """

    def __init__(
        self,
        num_classes: int = len(MSD_TAGS),
        midend_filters: int = 64,
        embedding_dim: int = EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        timbral_filters, temporal_filters = int(1.6 * 128), int(1.6 * 32)  # 204, 51
        self.input_bn = nn.BatchNorm2d(1, eps=TF_BN_EPSILON)
        self.timbral = nn.ModuleList(
            _FrontendBlock(timbral_filters, (7, int(width * N_MELS)), (3, 3))
            for width in (0.4, 0.7)
        )
        self.temporal = nn.ModuleList(
            _FrontendBlock(temporal_filters, (k, 1), ((k - 1) // 2, k - 1 - (k - 1) // 2))
            for k in (128, 64, 32)
        )
        frontend_dim = 2 * timbral_filters + 3 * temporal_filters  # 561
        self.midend = nn.ModuleList(
            [
                _MidendBlock(frontend_dim, midend_filters),
                _MidendBlock(midend_filters, midend_filters),
                _MidendBlock(midend_filters, midend_filters),
            ]
        )
        pooled_dim = 2 * (frontend_dim + 3 * midend_filters)  # 1506
        self.pool_bn = nn.BatchNorm1d(pooled_dim, eps=TF_BN_EPSILON)
        self.dense = nn.Linear(pooled_dim, embedding_dim)
        self.dense_bn = nn.BatchNorm1d(embedding_dim, eps=TF_BN_EPSILON)
        self.output = nn.Linear(embedding_dim, num_classes)

    def features(self, patches: torch.Tensor) -> torch.Tensor:
        """Return the ``[B, 1506]`` pooled features (interleaved max/mean, before BN)."""
        if patches.dim() != 3 or patches.shape[2] != N_MELS:
            raise ValueError(
                f"expected patches of shape [B, T, {N_MELS}], got {tuple(patches.shape)}"
            )
        x = self.input_bn(patches.unsqueeze(1))
        front = torch.cat([block(x) for block in (*self.timbral, *self.temporal)], dim=1)
        mid1 = self.midend[0](front)
        mid2 = self.midend[1](mid1) + mid1
        mid3 = self.midend[2](mid2) + mid2
        stacked = torch.cat([front, mid1, mid2, mid3], dim=1)  # [B, 753, T]
        pooled = torch.stack([stacked.amax(dim=2), stacked.mean(dim=2)], dim=2)
        return pooled.flatten(1)

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(sigmoid tag probabilities, 200-d penultimate embedding)``."""
        pooled = self.pool_bn(self.features(patches))
        embedding = self.dense_bn(F.relu(self.dense(pooled)))
        return torch.sigmoid(self.output(embedding)), embedding


# --------------------------------------------------------------------------- #
# Weight loading
# --------------------------------------------------------------------------- #


Converter = Callable[[np.ndarray], np.ndarray]


def _conv2d_kernel(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _conv1d_kernel(kernel: np.ndarray) -> np.ndarray:
    # TF mid-end kernels are [7, C_in, 1, C_out] over a [T, C_in, 1] "image".
    if kernel.ndim != 4 or kernel.shape[2] != 1:
        raise ValueError(f"expected a [k, C_in, 1, C_out] kernel, got {kernel.shape}")
    return kernel[:, :, 0, :].transpose(2, 1, 0)  # -> [C_out, C_in, k]


def _identity(array: np.ndarray) -> np.ndarray:
    return array


def _dense_kernel(kernel: np.ndarray) -> np.ndarray:
    return kernel.T  # [in, out] -> [out, in]


def _weight_map() -> list[tuple[str, str, Converter]]:
    """``(tf_name, torch_name, converter)`` for every tensor of the network.

    TF numbers layers by creation order: the input BN is ``batch_normalization``;
    each conv ``conv2d_i`` is followed by ``batch_normalization_{i+1}`` (f74, f77,
    temporal 128/64/32, mid-end 1-3); the back-end BNs are ``_9`` and ``_10``.
    """
    mapping: list[tuple[str, str, Converter]] = []

    def bn(tf_scope: str, torch_prefix: str) -> None:
        for tf_leaf, torch_leaf in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            mapping.append((f"{tf_scope}/{tf_leaf}", f"{torch_prefix}.{torch_leaf}", _identity))

    bn("batch_normalization", "input_bn")
    blocks = [
        "timbral.0",
        "timbral.1",
        "temporal.0",
        "temporal.1",
        "temporal.2",
        "midend.0",
        "midend.1",
        "midend.2",
    ]
    for index, prefix in enumerate(blocks):
        scope = "conv2d" if index == 0 else f"conv2d_{index}"
        converter = _conv1d_kernel if prefix.startswith("midend") else _conv2d_kernel
        mapping.append((f"{scope}/kernel", f"{prefix}.conv.weight", converter))
        mapping.append((f"{scope}/bias", f"{prefix}.conv.bias", _identity))
        bn(f"batch_normalization_{index + 1}", f"{prefix}.bn")
    bn("batch_normalization_9", "pool_bn")
    mapping.append(("dense/kernel", "dense.weight", _dense_kernel))
    mapping.append(("dense/bias", "dense.bias", _identity))
    bn("batch_normalization_10", "dense_bn")
    mapping.append(("dense_1/kernel", "output.weight", _dense_kernel))
    mapping.append(("dense_1/bias", "output.bias", _identity))
    return mapping


def load_musicnn_weights(module: MusiCNN, tensors: dict[str, np.ndarray]) -> None:
    """Copy TF checkpoint tensors into ``module``, checking names and shapes.

    Raises ``KeyError`` naming any TF variable the network needs but ``tensors``
    lacks, or any model variable in ``tensors`` that the port does not use, and
    ``ValueError`` naming the first tensor whose converted shape does not match.
    Optimizer slots and counters (``/Adam``, ``global_step``...) are ignored.
    """
    state = module.state_dict()
    mapping = _weight_map()
    missing = [tf_name for tf_name, _, _ in mapping if tf_name not in tensors]
    if missing:
        raise KeyError(f"checkpoint lacks MusiCNN variables: {missing}")
    used = {tf_name for tf_name, _, _ in mapping}
    unexpected = sorted(n for n in tensors if is_model_variable(n) and n not in used)
    if unexpected:
        raise KeyError(f"checkpoint has variables the MusiCNN port does not use: {unexpected}")
    covered = {torch_name for _, torch_name, _ in mapping}
    uncovered = sorted(
        k for k in state if k not in covered and not k.endswith("num_batches_tracked")
    )
    if uncovered:
        raise KeyError(f"no checkpoint tensor maps to torch parameters: {uncovered}")

    new_state: dict[str, torch.Tensor] = {}
    for tf_name, torch_name, converter in mapping:
        try:
            value = converter(np.asarray(tensors[tf_name], dtype=np.float32))
        except ValueError as exc:  # wrong rank: numpy's message lacks the variable name
            raise ValueError(f"{tf_name} -> {torch_name}: {exc}") from exc
        target = state[torch_name]
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(
                f"{tf_name} -> {torch_name}: converted shape {tuple(value.shape)} "
                f"!= expected {tuple(target.shape)}"
            )
        new_state[torch_name] = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)
    module.load_state_dict(new_state, strict=False)


def load_pretrained_musicnn(
    cache_dir: Path | str | None = None, checkpoint: str = "MSD_musicnn"
) -> MusiCNN:
    """Build ``MSD_musicnn`` (or ``MTT_musicnn``: the same network trained on
    MagnaTagATune) with the released weights, frozen and in eval mode."""
    model = MusiCNN()
    load_musicnn_weights(model, load_musicnn_tensors(cache_dir, checkpoint))
    return model.requires_grad_(False).eval()


@torch.inference_mode()
def run_musicnn(
    model: MusiCNN, patches: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Run patches through ``model`` in batches; return ``(tags [N, 50], embeddings [N, 200])``.

    Batches go to the model's device and results come back as float32 numpy.  On
    CUDA, PyTorch lets cuDNN convolutions use TF32 by default, which costs about
    three decimal digits; disable ``torch.backends.cudnn.allow_tf32`` to keep
    parity with the float32 TensorFlow original.
    """
    if model.training:
        raise RuntimeError("call model.eval() first: BN must use its moving statistics")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    device = next(model.parameters()).device
    tags: list[np.ndarray] = [np.zeros((0, model.output.out_features), np.float32)]
    embeddings: list[np.ndarray] = [np.zeros((0, model.dense.out_features), np.float32)]
    for start in range(0, len(patches), batch_size):
        chunk = np.ascontiguousarray(patches[start : start + batch_size], dtype=np.float32)
        probabilities, embedding = model(torch.from_numpy(chunk).to(device))
        tags.append(probabilities.float().cpu().numpy())
        embeddings.append(embedding.float().cpu().numpy())
    return np.concatenate(tags), np.concatenate(embeddings)
