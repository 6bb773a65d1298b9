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

``--time-files LIST.json --out TIMES.json`` times the original, as it runs, on each file
of a JSON list of paths, in this one process (``bench/tf_peer.py`` drives it): the
extractor rebuilds its graph and restores the checkpoint for every file, and that is
kept. Stopwatch wrappers (no change to what runs) split each file into decode
(``librosa.load``), mel and patching (the rest of ``batch_data``), graph build (graph,
session and variable init), checkpoint restore, and model (the ``sess.run`` calls on the
patches). All patches go through one ``sess.run`` (the shim above; ``--batch-size`` sets
another size), the original's best case for speed. First the original runs once on a 10 s
synthetic clip, untimed (``--no-warmup`` skips it): the first call in a process pays
one-off costs (librosa's lazy imports and JIT, TensorFlow's first session) that a
long-running analyser pays once, not per track.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
import zipfile
from contextlib import redirect_stdout
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


def prepare_environment() -> None:
    """The shims that must be in place before TensorFlow and librosa are first imported."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # librosa < 0.9 (reflect padding, as in 2019) still uses numpy's removed aliases.
    for alias, builtin in (("complex", complex), ("float", float), ("int", int), ("bool", bool)):
        if not hasattr(np, alias):
            setattr(np, alias, builtin)


def run_original(audio: Path, model: str) -> dict[str, Any]:
    """Run the original extractor on ``audio``; return arrays and environment facts."""
    prepare_environment()
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
    parser.add_argument(
        "--time-files", type=Path, help="JSON list of audio paths: time the original on each"
    )
    parser.add_argument(
        "--batch-size", type=int, default=0, help="--time-files: patches per sess.run (0: all)"
    )
    parser.add_argument(
        "--warmup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--time-files: run the original once on a short clip first, untimed",
    )
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke_check(args.wheel, args.model)
    if args.out is None or (args.audio is None and args.time_files is None):
        parser.error("--out and one of --audio or --time-files are required")

    if not args.wheel.is_file():
        raise SystemExit(
            f"{args.wheel} not found; fetch it with: python -m pip download --no-deps "
            f"musicnn==0.1.0 -d {args.wheel.parent}"
        )
    if args.time_files is not None:
        return time_main(args)
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


def time_main(args: argparse.Namespace) -> int:
    """--time-files: time the original on each listed file; write the JSON to ``--out``."""
    started = time.perf_counter()
    out: Path = args.out
    files = [Path(name) for name in json.loads(args.time_files.read_text())]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise SystemExit(f"audio files not found: {missing}")
    with tempfile.TemporaryDirectory(prefix="musicnn_tf_") as tmp:
        unpack_musicnn(args.wheel, Path(tmp))
        sys.path.insert(0, tmp)
        warmup_clip = None
        if args.warmup:
            import soundfile

            warmup_clip = Path(tmp) / "warmup.wav"
            rng = np.random.default_rng(0)
            soundfile.write(warmup_clip, 0.1 * rng.standard_normal((441000, 2)), 44100)
        report = time_original_files(files, args.model, args.batch_size, started, warmup_clip)
    report["process_wall_s"] = round(time.perf_counter() - started, 4)
    report["machine"] = machine_info()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(report, indent=1))
    partial.replace(out)  # a reader never sees half a report
    print(json.dumps({key: value for key, value in report.items() if key != "files"}))
    return 0


def time_original_files(
    files: list[Path],
    model: str,
    batch_size: int,
    process_started: float,
    warmup_clip: Path | None = None,
) -> dict[str, Any]:
    """Run the unmodified extractor on each file with stopwatches around its parts.

    The wrappers only read the clock: ``librosa.load`` (decode + resample), the module's
    ``batch_data`` (decode + mel + patching), ``Saver.restore`` and ``Session.run``
    (after ``batch_data`` has returned, the runs are the network on the patches; before
    it, variable init and the restore's own runs, counted as graph build / restore).
    """
    prepare_environment()
    import librosa
    import tensorflow as tf
    from musicnn import configuration
    from musicnn import extractor as original

    clock: dict[str, float] = {}
    session_cls = tf.compat.v1.Session
    saver_cls = tf.compat.v1.train.Saver
    plain = (librosa.load, original.batch_data, saver_cls.restore, session_cls.run)

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        audio, sr = plain[0](*args, **kwargs)
        clock["decode_s"] += time.perf_counter() - begin
        clock["audio_s"] = len(audio) / sr
        return audio, sr

    def timed_batch_data(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        batch, spectrogram = plain[1](*args, **kwargs)
        clock["batch_data_s"] += time.perf_counter() - begin
        clock["patches"] = int(batch.shape[0])
        clock["patches_ready"] = 1.0
        return batch, spectrogram

    def timed_restore(self: Any, sess: Any, save_path: str) -> Any:
        begin = time.perf_counter()
        clock["graph_build_s"] += begin - clock["file_started"]
        result = plain[2](self, sess, save_path)
        clock["restore_s"] += time.perf_counter() - begin
        clock["restored"] = 1.0
        return result

    def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = plain[3](self, *args, **kwargs)
        if clock.get("patches_ready"):
            clock["model_s"] += time.perf_counter() - begin
            # CPU seconds of all threads: tells a busy machine (wall >> cpu / cores) apart.
            clock["model_cpu_s"] += time.process_time() - begin_cpu
            clock["model_runs"] += 1
        return result

    librosa.load = timed_load
    original.batch_data = timed_batch_data
    saver_cls.restore = timed_restore
    session_cls.run = timed_run
    startup_s = time.perf_counter() - process_started
    per_file: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    runs = ([warmup_clip] if warmup_clip else []) + files
    try:
        for path in runs:
            clock.clear()
            for key in ("decode_s", "batch_data_s", "graph_build_s", "restore_s", "model_s"):
                clock[key] = 0.0
            clock["model_cpu_s"] = 0.0
            clock["cpu_started"] = time.process_time()
            clock["model_runs"] = 0
            configuration.BATCH_SIZE = batch_size if batch_size > 0 else sys.maxsize
            clock["file_started"] = time.perf_counter()
            try:
                with redirect_stdout(sys.stderr):  # its progress print would break our JSON
                    taggram, labels, features = original.extractor(
                        str(path), model=model, input_length=3, input_overlap=False,
                        extract_features=True,
                    )  # fmt: skip
            except Exception as exc:  # e.g. a file under 3 s: the original makes no patch
                if path == warmup_clip:
                    raise
                failures.append({"path": str(path), "error": f"{type(exc).__name__}: {exc}"})
                print(f"the original failed on {path}: {exc!r}", file=sys.stderr)
                continue
            total_s = time.perf_counter() - clock["file_started"]
            clock["total_cpu_s"] = time.process_time() - clock["cpu_started"]
            if not clock.get("restored"):
                raise SystemExit(f"{path}: the checkpoint was not restored; refusing to time it")
            per_file.append(file_timing(path, clock, total_s, taggram, labels, features))
            print(f"timed {path.name}: {total_s:.2f} s", file=sys.stderr)
    finally:
        librosa.load, original.batch_data, saver_cls.restore, session_cls.run = plain
    return {
        "bench": "musicnn_parity_tf",
        "mode": "time_files",
        "model": model,
        "batch_size": batch_size or "all patches in one sess.run",
        "startup_s": round(startup_s, 4),
        "warmup_s": per_file.pop(0)["total_s"] if warmup_clip else None,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "librosa": librosa.__version__,
        "files": per_file,
        "failed": failures,
    }


def file_timing(
    path: Path, clock: dict[str, float], total_s: float, taggram: Any, labels: Any, features: Any
) -> dict[str, Any]:
    """One file's stage seconds, and enough of its outputs to see the model really ran."""
    mel_s = clock["batch_data_s"] - clock["decode_s"]
    # Whatever no stopwatch covered: session close, the extractor's own concatenations.
    other_s = total_s - clock["batch_data_s"] - clock["graph_build_s"] - clock["restore_s"]
    other_s -= clock["model_s"]
    taggram = np.asarray(taggram, dtype=np.float32)
    penultimate = np.asarray(features["penultimate"], dtype=np.float32)
    return {
        "path": str(path),
        "audio_s": round(clock["audio_s"], 4),
        "patches": int(clock["patches"]),
        "decode_s": round(clock["decode_s"], 4),
        "mel_s": round(mel_s, 4),
        "graph_build_s": round(clock["graph_build_s"], 4),
        "restore_s": round(clock["restore_s"], 4),
        "model_s": round(clock["model_s"], 4),
        "model_runs": int(clock["model_runs"]),
        "model_cpu_s": round(clock["model_cpu_s"], 4),
        "total_cpu_s": round(clock["total_cpu_s"], 4),
        "other_s": round(other_s, 4),
        "total_s": round(total_s, 4),
        "outputs_finite": bool(np.isfinite(taggram).all() and np.isfinite(penultimate).all()),
        "embedding_shape": list(penultimate.shape),
        "top_tags": [str(labels[i]) for i in np.argsort(-taggram.mean(axis=0))[:3]],
    }


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
