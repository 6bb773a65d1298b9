"""Prompts in each model's terms: the text encoders of one process (`TextSupport`).

Per model, a prompt becomes a search vector (a text tower in the model's
audio space, MuQ-MuLan), tag weights (models whose rows carry tag
probabilities, MusiCNN), or nothing. The `text` request (`text_search.py`)
and negative prompts (`penalties.py`) use it; it knows nothing of requests,
so the query context can hold it without either depending on the other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from models.base import ManagedModel, ModelUnavailable
from models.text import (
    NATIVE_TEXT_MODELS,
    TAG_VOCABULARIES,
    MuqTextEncoder,
    SentenceEncoder,
    TagTextEncoder,
)
from pipeline.recommender.batching import Batcher
from pipeline.recommender.index import ModelIndex
from pipeline.recommender.penalties import PenaltySet


class TextSupport:
    """The text encoders of one process, loaded on first use.

    Built by `pipeline.wiring.text_support` from the settings, so the query
    service and the HTTP service's /embed_text encode prompts the same way.
    `load_model` builds a model by name (its native text tower is used).
    """

    def __init__(
        self,
        sentences: SentenceEncoder,
        tag_temperature: float,
        load_model: Callable[[str], ManagedModel],
    ) -> None:
        self.sentences = sentences
        # One encoder per tag vocabulary (MSD, or MSD + MTT), told apart by the length of
        # the rows' tag vectors; prompts of concurrent requests share a forward pass.
        self.encoders = {
            count: TagTextEncoder(sentences, tags, temperature=tag_temperature)
            for count, tags in TAG_VOCABULARIES.items()
        }
        self._prompts: dict[int, Batcher[str, np.ndarray]] = {
            count: Batcher(encoder.weights_many) for count, encoder in self.encoders.items()
        }
        self._load_model = load_model
        self._native: dict[str, MuqTextEncoder] = {}
        self._lock = threading.Lock()

    @property
    def tags(self) -> TagTextEncoder:
        """The MSD vocabulary's encoder (MusiCNN's default head)."""
        return next(iter(self.encoders.values()))

    def warm(self) -> None:
        for encoder in self.encoders.values():
            encoder.tag_vectors()

    def native(self, model: str) -> MuqTextEncoder:
        """The model's own text tower; ModelUnavailable when its weights are not here."""
        with self._lock:
            if model not in self._native:
                managed = self._load_model(model)
                managed.model.model_version  # noqa: B018 - checks the weights folder now
                self._native[model] = MuqTextEncoder(managed)
            return self._native[model]

    def tag_weights(self, prompts: list[str], tag_count: int | None = None) -> np.ndarray:
        """[P, T] tag weights of the prompts over the vocabulary of `tag_count` tags (the
        length of the index's tag vectors; default MSD's 50): see models/text.py."""
        count = tag_count or len(self.tags.tags)
        if count not in self._prompts:
            raise ModelUnavailable(f"no tag vocabulary of {count} tags")
        return np.stack([self._prompts[count].run(p) for p in prompts])

    def penalties(
        self, index: ModelIndex, prompts: list[str], warn: Callable[[str], None]
    ) -> PenaltySet:
        """Negative prompts as penalising items in this model's space; `warn` is told
        when a model cannot apply them (the request is answered without)."""
        if not prompts:
            return PenaltySet()
        if index.model in NATIVE_TEXT_MODELS:
            try:
                return PenaltySet(vectors=self.native(index.model).encode(prompts))
            except ModelUnavailable as exc:
                warn(f"negative prompts not applied with {index.model}: {exc}")
                return PenaltySet()
        if index.has_tags:
            return PenaltySet(tag_weights=self.tag_weights(prompts, index.tag_count))
        warn(f"negative prompts not applied with {index.model}: it has no text support")
        return PenaltySet()

    def close(self) -> None:
        for encoder in self._native.values():
            encoder.close()
