"""Reference outputs from the ORIGINAL musicnn 0.1.0 TensorFlow code, for parity checks.

Not part of sonicbus: run it by hand in a separate virtualenv that has TensorFlow,
never in the project venv.  It unpacks the ``musicnn`` package (source + TF1
checkpoints) from the wheel sonicbus caches, runs the unmodified
``musicnn.extractor.extractor`` on one audio file and saves the taggram, the
``penultimate`` embeddings, the pooled features and the input patches to an .npz
that ``bench/musicnn_parity.py`` compares against the PyTorch port.

Set up (Python 3.11; TF >= 2.16 needs ``tf_keras`` for ``tf.compat.v1.layers``)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf_keras librosa soundfile \
        "numpy==1.26.4" "ml_dtypes<0.6"

numpy < 2 matters: the extractor computes ``np.log10(10000 * float16_mel + 1)``;
numpy 1.x promotes that to float32 (as it did in 2019), numpy 2 keeps float16 and
overflows to ``inf`` on loud audio.  The script records which one happened.

Shims, none of which touch the math:

* ``TF_USE_LEGACY_KERAS=1`` so ``tf.compat.v1.layers`` exists under TF 2.16+.
* ``configuration.BATCH_SIZE`` is raised so all patches go through one
  ``sess.run``: the extractor's loop for later batches concatenates the *first*
  batch's ``penultimate`` again (it unpacks into ``backend_``), so its features
  are only right for the first batch.  BN uses moving statistics, so batching
  does not change any value.
* numpy's removed ``np.complex``/``np.float``... aliases are restored to the
  builtins they always meant, so librosa < 0.9 (reflect STFT padding, the 2019
  behaviour) can run on numpy 1.26.
* ``Saver.restore`` is wrapped to record success, because the extractor swallows
  restore errors for MSD_musicnn and would silently run random weights.

``--smoke`` (no ``--audio``/``--out``) checks what it can in seconds: the wheel unpacks
and holds the extractor and the model's checkpoint; with TensorFlow importable it also
runs the original on a 4 s clip. Without TensorFlow (the project venv) its JSON line says
``"tf_comparison": "skipped: ..."``; it never prints a figure it did not measure.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import smoke
from machine import machine_info

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"


def default_wheel() -> Path:
    """The wheel sonicbus downloads into ``$SONICBUS_CACHE_DIR/models/musicnn``."""
    root = os.environ.get("SONICBUS_CACHE_DIR") or os.path.join("~", ".cache", "sonicbus")
    return Path(root).expanduser() / "models" / "musicnn" / WHEEL_NAME


def unpack_musicnn(wheel: Path, destination: Path) -> None:
    """Extract the ``musicnn`` package (code and checkpoints) from the wheel."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith("musicnn/")]
        if not members:
            raise SystemExit(f"{wheel} holds no musicnn/ package")
        archive.extractall(destination, members)


def run_original(audio: Path, model: str) -> dict[str, Any]:
    """Run the original extractor on ``audio``; return arrays and environment facts."""
    # Must be set before TensorFlow is first imported.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # librosa < 0.9 (reflect padding, as in 2019) still uses numpy's removed aliases.
    for alias, builtin in (("complex", complex), ("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, builtin)
    import librosa
    import tensorflow as tf
    from musicnn import configuration
    from musicnn import extractor as original

    restored: list[str] = []
    saver_cls = tf.compat.v1.train.Saver
    plain_restore = saver_cls.restore

    def checked_restore(self: Any, sess: Any, save_path: str) -> Any:
        result = plain_restore(self, sess, save_path)
        restored.append(save_path)
        return result

    saver_cls.restore = checked_restore

    n_frames = (
        librosa.time_to_frames(
            3, sr=configuration.SR, n_fft=configuration.FFT_SIZE, hop_length=configuration.FFT_HOP
        )
        + 1
    )
    patches, _spectrogram = original.batch_data(str(audio), n_frames, n_frames)
    configuration.BATCH_SIZE = int(patches.shape[0])
    taggram, labels, features = original.extractor(
        str(audio), model=model, input_length=3, input_overlap=False, extract_features=True
    )
    saver_cls.restore = plain_restore
    if not restored:
        raise SystemExit("the TF checkpoint was not restored; refusing to save random outputs")

    pad_mode = inspect.signature(librosa.stft).parameters["pad_mode"].default
    logc_dtype = (10000 * np.ones(1, dtype=np.float16)).dtype
    return {
        "taggram": np.asarray(taggram, dtype=np.float32),
        "penultimate": np.asarray(features["penultimate"], dtype=np.float32),
        "mean_pool": np.asarray(features["mean_pool"], dtype=np.float32),
        "max_pool": np.asarray(features["max_pool"], dtype=np.float32),
        "patches": np.asarray(patches, dtype=np.float32),
        "labels": np.asarray(labels),
        "meta": {
            "model": model,
            "audio": str(audio),
            "n_frames": int(n_frames),
            "n_patches": int(patches.shape[0]),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "librosa": librosa.__version__,
            "stft_pad_mode": str(pad_mode),
            "logc_dtype": str(logc_dtype),
            "patches_dtype": str(patches.dtype),
            "patches_nonfinite": int(np.size(patches) - np.isfinite(patches).sum()),
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the original model, save the .npz and print its metadata."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audio", type=Path, help="audio file to analyse (required)")
    parser.add_argument("--out", type=Path, help="where to write the .npz (required)")
    parser.add_argument("--wheel", type=Path, default=default_wheel(), help="musicnn wheel")
    parser.add_argument("--model", default="MSD_musicnn")
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke_check(args.wheel, args.model)
    if args.audio is None or args.out is None:
        parser.error("--audio and --out are required")

    if not args.wheel.is_file():
        raise SystemExit(
            f"{args.wheel} not found; fetch it with: python -m pip download --no-deps "
            f"musicnn==0.1.0 -d {args.wheel.parent}"
        )
    with tempfile.TemporaryDirectory(prefix="musicnn_tf_") as tmp:
        unpack_musicnn(args.wheel, Path(tmp))
        sys.path.insert(0, tmp)
        result = run_original(args.audio.resolve(), args.model)
    meta = result.pop("meta")
    if meta["logc_dtype"] != "float32":
        print(
            "WARNING: numpy >= 2 keeps 10000*float16 in float16; loud mel bins overflow to inf "
            "and the original outputs are degenerate. Use numpy<2 for a faithful reference.",
            file=sys.stderr,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, meta=json.dumps(meta), **result)
    print(json.dumps(meta))
    return 0


def smoke_check(wheel: Path, model: str) -> int:
    """--smoke: the wheel unpacks and holds the extractor and the model's checkpoint; with
    TensorFlow importable, the original runs on a 4 s clip. One JSON line; 0 when all ran."""
    result: dict[str, Any] = {"bench": "musicnn_parity_tf", "smoke": True, "wheel": str(wheel)}
    ok = wheel.is_file()
    if not ok:
        result["error"] = "wheel not found: `python -m pip download --no-deps musicnn==0.1.0`"
    else:
        with tempfile.TemporaryDirectory(prefix="musicnn_tf_") as tmp:
            unpack_musicnn(wheel, Path(tmp))
            needed = ["extractor.py", "configuration.py", f"{model}/.index", f"{model}/.meta"]
            missing = [name for name in needed if not (Path(tmp) / "musicnn" / name).is_file()]
            result["wheel_missing_files"] = missing
            ok = not missing
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                result["tf_comparison"] = (
                    f"skipped: TensorFlow is not installed in {sys.executable}; run this script "
                    "in a TensorFlow venv (see its docstring) for the reference outputs"
                )
            else:
                import soundfile

                clip = Path(tmp) / "clip.wav"
                t = np.arange(4 * 16000) / 16000
                soundfile.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
                sys.path.insert(0, tmp)
                outputs = run_original(clip, model)
                result["tf_comparison"] = "ran the original on a 4 s clip (nothing compared)"
                result["taggram_shape"] = list(outputs["taggram"].shape)
                result["penultimate_shape"] = list(outputs["penultimate"].shape)
                result["reference_meta"] = outputs["meta"]
    # The outputs are the reference bench/musicnn_parity.py compares the port against.
    result["target"] = {"port_max_abs_diff": 1e-3}
    result["machine"] = machine_info()
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
