"""Small random-weight models written to disk in each loader's weights-folder layout.

Each builder uses the same architecture code as the real model (transformers'
HubertModel for MERT, the MuQ-MuLan port in models/muq_net.py, music2latent's own
Encoder) and saves the files the published repos ship, in their formats, so
tests run the real loading code: MERT as a ``pytorch_model.bin`` with the
legacy weight-norm key names of the published checkpoint, MuQ-MuLan as one
``pytorch_model.bin`` with upstream key names and its training-only entries,
Music2Latent as a training checkpoint with a ``gen_state_dict``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.muq import KEY_MAP
from models.muq_net import MuLanNet

WORDS = ["calm", "piano", "jazz", "drums", "loud", "metal", "guitar", "happy", "sad", "with", "and"]


def tone_tracks(sample_rate: int, seconds: list[float], seed: int = 0) -> list[np.ndarray]:
    """Distinct test signals: a tone, a chirp and noise bursts, cycling by index."""
    rng = np.random.default_rng(seed)
    tracks = []
    for i, length in enumerate(seconds):
        t = np.arange(int(length * sample_rate)) / sample_rate
        if i % 3 == 0:
            x = 0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 660 * t)
        elif i % 3 == 1:
            x = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t)
        else:
            x = 0.3 * rng.standard_normal(t.size) * (np.sin(2 * np.pi * 2 * t) > 0)
        tracks.append(x.astype(np.float32))
    return tracks


# --------------------------------------------------------------------------- #
# MERT
# --------------------------------------------------------------------------- #


def write_tiny_mert(folder: Path, seed: int = 0) -> Path:
    """A 2-layer HuBERT with MERT-v1's hidden size (1024) and conv strides (75 Hz at 24 kHz)."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=1024,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_bias=False,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=16,
    )
    state = HubertModel(config).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    legacy = {
        key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): value
        for key, value in state.items()
    }
    torch.save(legacy, folder / "pytorch_model.bin")
    settings = config.to_dict()
    settings.update(
        model_type="mert_model",
        architectures=["MERTModel"],
        feature_extractor_cqt=False,
        deepnorm=False,
        attention_relax=32.0,
        sample_rate=24000,
    )
    (folder / "config.json").write_text(json.dumps(settings))
    preprocessor = {"do_normalize": True, "sampling_rate": 24000, "feature_size": 1}
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


# --------------------------------------------------------------------------- #
# MuQ-MuLan
# --------------------------------------------------------------------------- #

TINY_MUQ: dict[str, Any] = {
    "label_rate": 25,
    "features": ["melspec_2048"],
    "hop_length": 240,
    "n_mels": 128,
    "conv_dim": 8,
    "encoder_dim": 32,
    "encoder_depth": 2,
    "is_flash": False,
    "stat": {"melspec_2048_cnt": 1, "melspec_2048_mean": 6.77, "melspec_2048_std": 18.4},
    "w2v2_config": {
        "model_type": "wav2vec2-conformer",
        "conv_depthwise_kernel_size": 7,
        "hidden_act": "swish",
        "hidden_size": 1024,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-5,
        "num_attention_heads": 4,
        "num_hidden_layers": 24,
        "position_embeddings_type": "rotary",
        "rotary_embedding_base": 10000,
    },
}
TINY_MULAN: dict[str, Any] = {
    "mulan": {"sr": 24000, "clip_secs": 10, "dim_latent": 512, "rank_contrast": True},
    "audio_model": {"name": "OpenMuQ/MuQ-large-msd-iter", "model_dim": 32, "use_layer_idx": -1},
    "text_model": {"name": "xlm-roberta-base", "model_dim": 24},
    "audio_transformer": {"dim": 48, "tf_depth": 2, "heads": 2, "dim_head": 16, "ff_mult": 4},
    "text_transformer": {"dim": 40, "tf_depth": 1, "heads": 2, "dim_head": 16, "ff_mult": 4},
}


def write_tiny_muq(folder: Path, seed: int = 0) -> Path:
    """The MuQ-MuLan-large folder layout with a tiny MuQ, XLM-R and MuLan heads (512-d latents)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    torch.manual_seed(seed)
    text_dir, audio_dir = folder / "xlm-roberta", folder / "muq"
    text_dir.mkdir(parents=True, exist_ok=True)
    audio_dir.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        unk_token="<unk>",
    ).save_pretrained(text_dir)  # fmt: skip
    text_config = XLMRobertaConfig(
        vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=40, pad_token_id=1, bos_token_id=0,
        eos_token_id=2,
    )  # fmt: skip
    text_config.save_pretrained(text_dir)
    (audio_dir / "config.json").write_text(json.dumps(TINY_MUQ))
    (folder / "config.json").write_text(json.dumps(TINY_MULAN))
    net = MuLanNet(TINY_MULAN, TINY_MUQ, text_config)
    state = {}
    for key, value in net.state_dict().items():
        old, new = next((old, new) for old, new in KEY_MAP if key.startswith(new))
        state[old + key[len(new) :]] = value
    # Training-only entries the published checkpoint also carries; the loader skips them.
    state["mulan.contrast.temperatures"] = torch.zeros(1, 1, 1)
    state["mulan.audio.aggregator.weight"] = torch.randn(1, 25, 1)
    state["mulan.audio.model.model.linear.weight"] = torch.randn(4096, 32)
    state["mulan.audio.model.model.conformer.pos_conv_embed.conv.weight_g"] = torch.ones(1, 1, 16)
    state["mulan.text.model.pooler.dense.weight"] = torch.randn(24, 24)
    torch.save(state, folder / "pytorch_model.bin")
    return folder


# --------------------------------------------------------------------------- #
# Music2Latent
# --------------------------------------------------------------------------- #


def write_tiny_music2latent(folder: Path, seed: int = 0) -> Path:
    """A random music2latent encoder (its architecture is fixed by the package's hparams)."""
    from music2latent.models import Encoder

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v for k, v in Encoder().state_dict().items()}
    torch.save({"gen_state_dict": state, "it": 1000}, folder / "music2latent.pt")
    return folder
