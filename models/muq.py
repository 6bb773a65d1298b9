"""MuQ-MuLan (Tencent AI Lab) as a sonicbus embedding model and text encoder.

The network is the port in :mod:`models.muq_net`; this module loads the
published checkpoint into it (a prefix map, with every key checked) and
turns tracks and prompts into vectors.

The stored vector is MuLan's joint audio embedding, exactly as
``MuQMuLan.extract_audio_latents`` computes it: the track is covered by
back-to-back 10 s clips at 24 kHz (the last one filled up with the start of
the track), each clip's latent is L2-normalised, and the clip latents are
averaged without re-normalising. The issue's "120 s windows / 15 s hop" does
not fit this model: its audio tower was trained on, and only ever sees, 10 s
clips, and its text tower was aligned with that clip average, so we keep it.
Unlike upstream, a track shorter than one clip is repeated up to 10 s
(upstream would feed a clip shorter than it trained on). All clips then have
one shape, so clips of many tracks share forward passes without padding.
The model has no options (``params``): clip length and layer come from the
checkpoint's config, and changing them would leave the text tower misaligned.

``weights_dir`` layout (nothing is downloaded)::

    config.json                 \\ from the Hugging Face repo OpenMuQ/MuQ-MuLan-large
    pytorch_model.bin           / (or model.safetensors)
    muq/config.json             from OpenMuQ/MuQ-large-msd-iter (only the config)
    xlm-roberta/config.json     \\ from FacebookAI/xlm-roberta-base
    xlm-roberta/tokenizer.json  / (config and tokenizer only)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.base import (
    EmbeddingModel,
    ModelOptions,
    ModelUnavailable,
    TrackAudio,
    TrackEmbedding,
    as_mono_float32,
    transformers_import,
)
from models.muq_net import SAMPLE_RATE, MuLanNet
from models.weights import (
    HF_WEIGHT_FILES,
    file_digest,
    first_existing,
    list_keys,
    read_state,
    require_files,
    settings_digest,
)

LATENT_DIM = 512
# Bump when anything between decoded samples and the stored vector changes.
PREPROCESSING_VERSION = 1
AUDIO_DIR = "muq"
TEXT_DIR = "xlm-roberta"
REQUIRED = [
    "config.json",
    HF_WEIGHT_FILES,
    f"{AUDIO_DIR}/config.json",
    f"{TEXT_DIR}/config.json",
    f"{TEXT_DIR}/tokenizer.json",
]
# Checkpoint prefix (upstream module path) -> prefix in `MuLanNet`.
KEY_MAP = (
    ("mulan.audio.model.model.", "audio.muq."),
    ("mulan.audio.transformer.", "audio.transformer."),
    ("mulan.audio.proj.", "audio.proj."),
    ("mulan.audio_to_latents.", "audio_to_latents."),
    ("mulan.text.model.", "text.xlmr."),
    ("mulan.text.transformer.", "text.transformer."),
    ("mulan.text.proj.", "text.proj."),
    ("mulan.text_to_latents.", "text_to_latents."),
)
# Training-only parts of the checkpoint: losses, MuQ's token targets and heads, an
# unused conv positional embedding, the text pooler, buffers older versions saved.
IGNORED = (
    "mulan.contrast.",
    "mulan.multi_layer_contrastive_learning.",
    "mulan.text_layers_indices",
    "mulan.audio_layers_indices",
    "mulan.audio.aggregator.",
    "mulan.audio.model.model.linear.",
    "mulan.audio.model.model.cls_token",
    "mulan.audio.model.model.quantizer_",
    "mulan.audio.model.model.rvq.",
    "mulan.audio.model.model.recon_proj.",
    "mulan.audio.model.model.conformer.pos_conv_embed.",
    "mulan.text.model.pooler.",
    "mulan.text.model.embeddings.position_ids",
    "mulan.text.model.embeddings.token_type_ids",
)
# Buffers that are recomputed identically and may be absent from a checkpoint.
OPTIONAL_SUFFIXES = ("embed_positions.inv_freq", "num_batches_tracked")


def map_checkpoint(state: dict[str, torch.Tensor], net: nn.Module, source: Path) -> dict:
    """Rename checkpoint keys to `net`'s, and refuse anything missing, unknown or misshapen."""
    mapped, unknown = {}, []
    for key, value in state.items():
        target = next((new + key[len(old) :] for old, new in KEY_MAP if key.startswith(old)), None)
        if target is not None and not key.startswith(IGNORED):
            mapped[target] = value
        elif not key.startswith(IGNORED):
            unknown.append(key)
    expected = net.state_dict()
    missing = [k for k in expected if k not in mapped and not k.endswith(OPTIONAL_SUFFIXES)]
    unknown += [k for k in mapped if k not in expected]
    misshapen = [k for k in mapped if k in expected and mapped[k].shape != expected[k].shape]
    if missing or unknown or misshapen:
        parts = [
            f"{label}: {list_keys(keys)}"
            for label, keys in (("missing", missing), ("unknown", unknown), ("shape", misshapen))
            if keys
        ]
        raise ModelUnavailable(
            f"{source} does not match the MuQ-MuLan architecture described by its configs "
            f"({'; '.join(parts)})"
        )
    return {k: v for k, v in mapped.items() if k in expected}


# --------------------------------------------------------------------------- #
# The sonicbus model
# --------------------------------------------------------------------------- #


class MuqMulanModel(EmbeddingModel):
    """MuQ-MuLan: 512-d joint audio/text embedding (mean of 10 s clip latents) + text tower."""

    name = "muq"
    sample_rate = SAMPLE_RATE
    dim = LATENT_DIM

    def __init__(self, options: ModelOptions) -> None:
        super().__init__(options)
        self._net: MuLanNet | None = None
        self._tokenizer: Any = None
        self._max_tokens = 512
        self._device = "cpu"

    def _folder(self) -> Path:
        return require_files(
            self.options.weights_dir,
            "MuQ-MuLan",
            REQUIRED,
            "OpenMuQ/MuQ-MuLan-large (plus muq/config.json from OpenMuQ/MuQ-large-msd-iter "
            "and xlm-roberta/config.json + tokenizer.json from FacebookAI/xlm-roberta-base)",
        )

    @property
    def model_version(self) -> str:
        folder = self._folder()
        weights = file_digest(first_existing(folder, HF_WEIGHT_FILES))
        configs = [r for r in REQUIRED if isinstance(r, str)]
        settings = {"preprocessing": PREPROCESSING_VERSION}
        settings.update({name: file_digest(folder / name)[:16] for name in configs})
        return f"muq-mulan:{weights[:12]}:{settings_digest(settings)}"

    def load(self, device: str) -> None:
        with transformers_import():
            from transformers import AutoTokenizer, XLMRobertaConfig

        folder = self._folder()
        config = json.loads((folder / "config.json").read_text())
        muq_config = json.loads((folder / AUDIO_DIR / "config.json").read_text())
        text_config = XLMRobertaConfig.from_pretrained(folder / TEXT_DIR, local_files_only=True)
        if config.get("mulan", {}).get("sr", SAMPLE_RATE) != SAMPLE_RATE:
            raise ModelUnavailable(f"{folder}/config.json: mulan.sr is not {SAMPLE_RATE}")
        net = MuLanNet(config, muq_config, text_config)
        if net.dim_latent != self.dim:
            raise ModelUnavailable(f"{folder}/config.json: dim_latent is not {self.dim}")
        path = first_existing(folder, HF_WEIGHT_FILES)
        net.load_state_dict(map_checkpoint(read_state(path), net, path), strict=False)
        self._tokenizer = AutoTokenizer.from_pretrained(folder / TEXT_DIR, local_files_only=True)
        self._max_tokens = text_config.max_position_embeddings - 2
        self._device = device
        self._net = net.to(device).eval()

    def unload(self) -> None:
        self._net = None
        self._tokenizer = None

    def _loaded(self) -> MuLanNet:
        if self._net is None:
            raise RuntimeError("MuQ-MuLan model is not loaded: call load() first")
        return self._net

    def embed(self, tracks: list[TrackAudio]) -> list[TrackEmbedding]:
        net = self._loaded()
        clip = round(net.clip_secs * SAMPLE_RATE)
        clips: list[np.ndarray] = []
        owner: list[int] = []
        for t, track in enumerate(tracks):
            pieces = clip_track(as_mono_float32(track), clip)
            clips += pieces
            owner += [t] * len(pieces)
        sums = np.zeros((len(tracks), self.dim), dtype=np.float64)
        with torch.inference_mode():
            for at in range(0, len(clips), self.options.batch_size):
                batch = torch.from_numpy(np.stack(clips[at : at + self.options.batch_size]))
                latents = net.audio_latents(batch.to(self._device)).float().cpu().numpy()
                np.add.at(sums, owner[at : at + len(latents)], latents)
        counts = np.bincount(owner, minlength=len(tracks))
        return [
            TrackEmbedding(
                track.track_id, (sums[t] / counts[t]).astype(np.float32), {"clips": int(counts[t])}
            )
            for t, track in enumerate(tracks)
        ]

    def embed_text(self, prompts: list[str]) -> np.ndarray:
        """[len(prompts), 512] unit vectors in the audio space, one prompt per forward pass.

        One at a time because MuLan's text head averages over every token,
        padding included, so a batch would change the shorter prompts'
        vectors. Prompts are cut at XLM-R's 512 tokens.
        """
        net = self._loaded()
        out = np.zeros((len(prompts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i, prompt in enumerate(prompts):
                tokens = self._tokenizer(
                    [prompt], return_tensors="pt", truncation=True, max_length=self._max_tokens
                ).to(self._device)
                latent = net.text_latents(tokens["input_ids"], tokens["attention_mask"])
                out[i] = latent[0].float().cpu().numpy()
        return out


def clip_track(samples: np.ndarray, clip: int) -> list[np.ndarray]:
    """Back-to-back `clip`-sample clips; the last is filled up with the track's start.

    Matches ``MuQMuLan._get_all_clips``, except that a track shorter than one
    clip is repeated to a full clip.
    """
    if samples.size < clip:
        return [np.resize(samples, clip)]
    clips = [samples[s : s + clip] for s in range(0, samples.size - clip + 1, clip)]
    done = len(clips) * clip
    if done < samples.size:
        clips.append(np.concatenate([samples[done:], samples[: clip - (samples.size - done)]]))
    return clips
