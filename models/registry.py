"""Models found by name, like plugins: the registry maps a name to where its class lives.

Classes are imported only when asked for, so `sonicbus --help` does not pay
for torch, transformers or a model's own package.
"""

from __future__ import annotations

import importlib

from models.base import EmbeddingModel, ManagedModel, ModelOptions, ModelUnavailable

BUILTIN_MODELS: dict[str, str] = {
    "musicnn": "models.musicnn:MusicnnModel",
    "muq": "models.muq:MuqMulanModel",
    "mert": "models.mert:MertModel",
    "music2latent": "models.music2latent:Music2LatentModel",
}


def available_models() -> list[str]:
    return sorted(BUILTIN_MODELS)


def model_class(name: str) -> type[EmbeddingModel]:
    if name not in BUILTIN_MODELS:
        raise ModelUnavailable(
            f"unknown model {name!r}; available: {', '.join(available_models())}"
        )
    module_name, class_name = BUILTIN_MODELS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelUnavailable(f"model {name!r} cannot be imported: {exc}") from exc
    cls: type[EmbeddingModel] = getattr(module, class_name)
    return cls


def create_model(name: str, options: ModelOptions) -> ManagedModel:
    """A managed (lazy, idle-unloading, thread-safe) instance of the named model."""
    return ManagedModel(model_class(name)(options))
