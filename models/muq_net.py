"""PyTorch port of the MuQ-MuLan network (Tencent AI Lab), inference path only.

A port of the ``muq`` 0.1.0 package's ``MuQMuLan``: the MuQ audio encoder,
the XLM-RoBERTa text encoder, and MuLan's two heads and projections into a
shared latent space. We do not import ``muq`` because it cannot run here: it
imports torchaudio at module level (PyPI's torchaudio stopped at 2.11 and
refuses to load beside torch 2.15's CUDA build), pulls in x_clip and
torchvision, and reads per-layer hidden states from transformers'
``Wav2Vec2ConformerEncoder``, which transformers 5 no longer returns. The
port keeps upstream's module layout (names, order, shapes), so the published
checkpoint loads key for key after the prefix map in :mod:`models.muq`; it was
compared with ``muq`` itself (under transformers 4.57) on random weights.
Keep it faithful: any change here changes every stored MuQ vector.

Layout notes: ``LogMel`` reproduces torchaudio's MelSpectrogram + AmplitudeToDB
in plain torch; ``Conformer`` returns every hidden state the way transformers
4 did; the MuLan heads mirror ``muq_mulan/modules/transformer.py``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.base import ModelUnavailable, transformers_import

SAMPLE_RATE = 24_000


# --------------------------------------------------------------------------- #
# MuQ audio encoder (muq/models/muq_model.py, modules/features.py, modules/conv.py)
# --------------------------------------------------------------------------- #


class LogMel(nn.Module):
    """torchaudio's MelSpectrogram(24 kHz, n_fft 2048, 128 HTK mels) + AmplitudeToDB, normalised."""

    def __init__(self, hop: int, mean: float, std: float, n_fft: int = 2048, n_mels: int = 128):
        super().__init__()
        self.n_fft, self.hop, self.mean, self.std = n_fft, hop, mean, std
        n_freqs = n_fft // 2 + 1
        all_freqs = torch.linspace(0, SAMPLE_RATE // 2, n_freqs)
        mel_max = 2595.0 * math.log10(1.0 + (SAMPLE_RATE // 2) / 700.0)
        f_pts = 700.0 * (10 ** (torch.linspace(0.0, mel_max, n_mels + 2) / 2595.0) - 1.0)
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
        down, up = -slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]
        self.register_buffer("fbank", torch.clamp(torch.min(down, up), min=0.0), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, N] samples -> [B, 128, N // hop] log-mel; upstream drops the last frame too."""
        stft = torch.stft(
            wav.float(), self.n_fft, self.hop, window=self.window, return_complex=True
        )
        spec = stft.abs().pow(2)
        mel = torch.matmul(spec.transpose(-1, -2), self.fbank).transpose(-1, -2)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        return (db[..., :-1] - self.mean) / self.std


class Res2dModule(nn.Module):
    def __init__(self, idim: int, odim: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
        self.bn1 = nn.BatchNorm2d(odim)
        self.conv2 = nn.Conv2d(odim, odim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(odim)
        self.diff = idim != odim or stride[0] > 1
        if self.diff:
            self.conv3 = nn.Conv2d(idim, odim, 3, padding=1, stride=stride)
            self.bn3 = nn.BatchNorm2d(odim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (self.bn3(self.conv3(x)) if self.diff else x))


class Conv2dSubsampling(nn.Module):
    """Two residual conv blocks over (mel, time), then a projection: 100 Hz -> 25 Hz tokens."""

    def __init__(self, hdim: int, odim: int, strides: tuple[int, int], n_bands: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            Res2dModule(1, hdim, (2, strides[0])), Res2dModule(hdim, hdim, (2, strides[1]))
        )
        self.linear = nn.Linear(hdim * n_bands // 4, odim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv(mel.unsqueeze(1))  # [B, C, F, T]
        return self.linear(x.permute(0, 3, 1, 2).flatten(2))  # "b c f t -> b t (c f)"


class Conformer(nn.Module):
    """transformers' conformer layers, returning every hidden state as transformers 4 did.

    The states are the input, the output of each layer but the last, and the
    final layer-normed output (13 for MuQ-large). The encoder's conv positional
    embedding is never used by its forward pass, so it is not built.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        from transformers.models.wav2vec2_conformer import modeling_wav2vec2_conformer as hf

        kinds = {
            "rotary": hf.Wav2Vec2ConformerRotaryPositionalEmbedding,
            "relative": hf.Wav2Vec2ConformerRelPositionalEmbedding,
        }
        kind = kinds.get(config.position_embeddings_type)
        self.embed_positions = kind(config) if kind else None
        self.layers = nn.ModuleList(
            hf.Wav2Vec2ConformerEncoderLayer(config) for _ in range(config.num_hidden_layers)
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        positions = self.embed_positions(x) if self.embed_positions is not None else None
        states = [x]
        for layer in self.layers:
            x = layer(x, relative_position_embeddings=positions)
            states.append(x)
        states[-1] = self.layer_norm(x)
        return states


class MuqEncoder(nn.Module):
    """MuQ (``MuQModel.get_predictions`` with features only): samples -> hidden states."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        with transformers_import():
            from transformers import Wav2Vec2ConformerConfig

        if config.get("features", ["melspec_2048"]) != ["melspec_2048"]:
            raise ModelUnavailable(f"MuQ features {config['features']} are not supported")
        strides = {4: (2, 2), 2: (2, 1)}.get(int(100 // config.get("label_rate", 25)))
        if strides is None or config.get("n_mels", 128) != 128:
            raise ModelUnavailable("MuQ config: label_rate must be 25 or 50 and n_mels 128")
        stat = config.get("stat") or {}
        if "melspec_2048_mean" not in stat or "melspec_2048_std" not in stat:
            raise ModelUnavailable("MuQ config lacks stat.melspec_2048_mean / _std")
        encoder_dim = config.get("encoder_dim", 1024)
        w2v2 = {
            k: v
            for k, v in (config.get("w2v2_config") or {}).items()
            if k not in ("model_type", "architectures", "transformers_version", "torch_dtype")
        }
        w2v2.update(num_hidden_layers=config.get("encoder_depth", 12), hidden_size=encoder_dim)
        conformer_config = Wav2Vec2ConformerConfig(**w2v2)
        conformer_config._attn_implementation = "eager"  # the original attention, bit for bit
        self.frontend = LogMel(
            config.get("hop_length", 240), stat["melspec_2048_mean"], stat["melspec_2048_std"]
        )
        self.conv = Conv2dSubsampling(config.get("conv_dim", 512), encoder_dim, strides, 128)
        self.conformer = Conformer(conformer_config)

    def forward(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return self.conformer(self.conv(self.frontend(wav)))


# --------------------------------------------------------------------------- #
# MuLan heads (muq_mulan/modules/transformer.py, models/audio.py, text.py, mulan.py)
# --------------------------------------------------------------------------- #


class BiaslessLayerNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.learned_gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.learned_gamma)


class GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x


class Attention(nn.Module):
    """Pre-norm attention with L2-normalised, learnably scaled queries and keys (scale 8)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = BiaslessLayerNorm(dim)
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(dim_head * heads, dim, bias=False), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        q, k, v = (self.to_q(x), *self.to_kv(x).chunk(2, dim=-1))
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        q = F.normalize(q, dim=-1) * self.q_scale
        k = F.normalize(k, dim=-1) * self.k_scale
        out = F.scaled_dot_product_attention(q, k, v, scale=8.0)
        return self.to_out(out.transpose(1, 2).flatten(2))


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    hidden = int(dim * mult * 2 / 3)
    return nn.Sequential(
        BiaslessLayerNorm(dim),
        nn.Linear(dim, hidden * 2, bias=False),
        GEGLU(),
        nn.Dropout(0.0),
        nn.Linear(hidden, dim, bias=False),
    )


class Transformer(nn.Module):
    def __init__(self, dim: int, tf_depth: int, dim_head: int, heads: int, ff_mult: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([Attention(dim, dim_head, heads), feed_forward(dim, ff_mult)])
            for _ in range(tf_depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x
            x = ff(x) + x
        return x


def _head(settings: dict[str, Any]) -> Transformer:
    keys = ("dim", "tf_depth", "dim_head", "heads", "ff_mult")
    defaults = {"dim": 768, "tf_depth": 8, "dim_head": 64, "heads": 8, "ff_mult": 4}
    return Transformer(**{k: settings.get(k, defaults[k]) for k in keys})


class MuLanNet(nn.Module):
    """Both towers and their projections into the joint, L2-normalised latent space."""

    def __init__(self, config: dict[str, Any], muq_config: dict[str, Any], text_config: Any):
        super().__init__()
        with transformers_import():
            from transformers import XLMRobertaModel

        audio_model, text_model = config.get("audio_model", {}), config.get("text_model", {})
        audio_head = config.get("audio_transformer", {})
        text_head = config.get("text_transformer", {})
        mulan = config.get("mulan", {})
        if "muq" not in audio_model.get("name", "").lower():
            raise ModelUnavailable("only MuLan checkpoints with a MuQ audio model are supported")
        if "xlm-roberta" not in text_model.get("name", ""):
            raise ModelUnavailable("only MuLan checkpoints with an XLM-RoBERTa text model work")
        self.clip_secs = float(mulan.get("clip_secs", 10))
        self.dim_latent = int(mulan.get("dim_latent", 512))
        self.layer_idx = int(audio_model.get("use_layer_idx", -1))
        audio_dim, text_dim = audio_head.get("dim", 768), text_head.get("dim", 768)
        audio_in = audio_model.get("model_dim") or muq_config.get("encoder_dim", 1024)
        text_in = text_model.get("model_dim")

        self.audio = nn.Module()
        self.audio.muq = MuqEncoder(muq_config)
        self.audio.proj = nn.Linear(audio_in, audio_dim)
        self.audio.transformer = _head(audio_head)
        self.text = nn.Module()
        self.text.xlmr = XLMRobertaModel(text_config, add_pooling_layer=False)
        project = text_in is not None and text_in != text_dim
        self.text.proj = nn.Linear(text_in, text_dim) if project else nn.Identity()
        self.text.transformer = _head(text_head)
        self.audio_to_latents = nn.Linear(audio_dim, self.dim_latent)
        self.text_to_latents = nn.Linear(text_dim, self.dim_latent)

    def audio_latents(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, clip samples] -> [B, dim_latent], one unit vector per clip."""
        hidden = self.audio.muq(clips)[self.layer_idx]
        pooled = self.audio.transformer(self.audio.proj(hidden)).mean(dim=-2)
        return F.normalize(self.audio_to_latents(pooled), dim=-1)

    def text_latents(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> [B, dim_latent]; the mean over tokens ignores `mask`, as upstream."""
        hidden = self.text.xlmr(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = self.text.transformer(self.text.proj(hidden)).mean(dim=-2)
        return F.normalize(self.text_to_latents(pooled), dim=-1)
