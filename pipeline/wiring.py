"""Settings -> objects, in one place.

The typed settings are loaded once (by the command line) and passed down;
this module is where they become the objects the services run on: the model
an embedder loads, the Milvus store, the text encoders. Services call these
functions; the core (`recommender/`, `models/`) receives the objects built
here and never reads settings of other parts itself. The Navidrome clients
are built by their own `from_settings` (`pipeline.navidrome`), because the
recommender's seed modes open them per request.

Layer: below the services, above the core and the adapters (it builds both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from models.base import ManagedModel, ModelOptions
from models.registry import create_model
from pipeline.config import Settings
from pipeline.store import VectorStore

if TYPE_CHECKING:  # imported when used: the query side loads PyTorch, an embedder need not
    from pipeline.recommender.prompts import TextSupport


def model_options(settings: Settings, model: str) -> ModelOptions:
    """A model's device, weights folder, idle unload, threads and its own parameters."""
    embed = settings.embed
    return ModelOptions(
        device=embed.device,
        weights_dir=embed.weights_dir / model if embed.weights_dir else None,
        cache_dir=settings.cache_dir,
        idle_unload_s=embed.idle_unload_s,
        threads=embed.threads,  # the embedders' CPU cap: torch threads, set at load
        params=embed.params.get(model, {}),
    )


def embedding_model(settings: Settings, model: str) -> ManagedModel:
    """The model by name, lazily loaded (weights are read on first use)."""
    return create_model(model, model_options(settings, model))


def vector_store(settings: Settings) -> VectorStore:
    """The Milvus store of the settings (Milvus Lite's folder is created if missing)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    return VectorStore(settings.milvus, settings.milvus_uri)


def text_support(settings: Settings) -> TextSupport:
    """Prompt encoders: the sentence model at `query.text_precision`, models' text towers."""
    from models.text import SentenceEncoder
    from pipeline.recommender.prompts import TextSupport

    sentences = SentenceEncoder(settings.query.text_encoder_dir, settings.query.text_precision)
    return TextSupport(
        sentences,
        tag_temperature=settings.query.text_tag_temperature,
        load_model=lambda model: embedding_model(settings, model),
    )
