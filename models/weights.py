"""Helpers shared by the models whose weights live in a local folder (MERT, MuQ, Music2Latent).

sonicbus never downloads weights, so every such model does the same few
things: check that the folder holds the files a published repo ships (and say
exactly which are missing and where they come from), fingerprint them so that
`model_version` changes when the weights do, read checkpoint tensors without
unpickling arbitrary objects, and report checkpoint keys that do not fit the
architecture. Keeping them here means one wording for those errors and one
digest cache per process.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.base import ModelUnavailable

# The file names a Hugging Face repo stores its weights under, preferred first.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_DIGEST_CACHE: dict[tuple[str, int, int], str] = {}


def require_files(
    folder: Path | None, label: str, required: Sequence[str | tuple[str, ...]], source: str
) -> Path:
    """Return `folder` if it holds every required file, else say exactly what is missing.

    A tuple entry means "one of these". The message names the folder, each
    missing file and where the files come from, because the fix is always a
    manual copy: sonicbus never downloads weights.
    """
    hint = (
        f"put the files of {source} there and point weights_dir at it "
        "(sonicbus never downloads weights)"
    )
    if folder is None:
        wanted = ", ".join(" or ".join(r) if isinstance(r, tuple) else r for r in required)
        raise ModelUnavailable(f"{label} needs a local weights folder with {wanted}: {hint}")
    folder = Path(folder)
    missing = []
    for entry in required:
        options = entry if isinstance(entry, tuple) else (entry,)
        if not any((folder / name).is_file() for name in options):
            missing.append(" or ".join(str(folder / name) for name in options))
    if missing:
        raise ModelUnavailable(f"{label} weights incomplete, missing {'; '.join(missing)}: {hint}")
    return folder


def first_existing(folder: Path, names: Sequence[str]) -> Path:
    """The first of `names` present in `folder` (callers ran `require_files` first)."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ModelUnavailable(f"none of {', '.join(names)} in {folder}")


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content, cached per (path, size, mtime).

    Content, not size or mtime: a fine-tuned checkpoint of the same
    architecture has the same size, and a copied file gets a new mtime. A 1 GB
    file hashes in about a second, once per process.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGEST_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(8 << 20), b""):
                digest.update(block)
        _DIGEST_CACHE[key] = digest.hexdigest()
    return _DIGEST_CACHE[key]


def settings_digest(settings: dict[str, Any]) -> str:
    """Short stable hash of JSON-able settings (preprocessing, layer mix, chunking)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors; ``pytorch_model.bin`` is memory-mapped and never fully unpickled.

    ``weights_only`` refuses pickled code, so a foreign file fails here with
    a `ModelUnavailable` naming it instead of running anything.
    """
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelUnavailable(f"{path} is not a readable weights file: {exc}") from exc


def list_keys(keys: Sequence[str], limit: int = 6) -> str:
    """The first `limit` checkpoint keys, comma-separated, with " ..." when there are more.

    Mismatch errors name real keys so the user can tell a truncated file from
    another architecture, without pasting hundreds of names into a log line.
    """
    return ", ".join(keys[:limit]) + (" ..." if len(keys) > limit else "")
