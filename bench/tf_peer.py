"""The peer, side by side: the original TensorFlow ``musicnn`` extractor, timed on real files.

Why: sonicbus' embedder is only fast if it beats what people ran before, on the same
audio. This module times the unmodified original (``bench/musicnn_parity_tf.py
--time-files``) in its own TensorFlow virtualenv, which it creates once under the
sonicbus cache (``<cache>/tf-peer-venv``; ``SONICBUS_TF_PYTHON`` or ``--tf-python``
point at an existing one instead). One process handles all files and, as the original
does, rebuilds the graph and restores the checkpoint for every file: that counts in the
end-to-end seconds (``wall_s``), not in the model-only seconds (``model_s``: the
``sess.run`` of the network on the patches). TensorFlow's import and a warm-up run on a
short clip are reported apart (``startup_s``, ``warmup_s``) and count in neither.

``bench/embed_throughput.py`` imports ``ensure_tf_python`` and ``time_original``. Alone::

    .venv/bin/python bench/tf_peer.py --folder DIR [--limit 3] [--tf-python PATH]

prints one JSON line last. ``--smoke`` never creates the venv: with no TensorFlow python
at hand it says the comparison was skipped, in a second, with no figure it did not
measure; with one, it times the original on a 6 s clip.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import smoke  # noqa: E402  (bench-local helpers, next to this file)
from machine import machine_info  # noqa: E402

TIMER_SCRIPT = REPO_ROOT / "bench" / "musicnn_parity_tf.py"
TF_PYTHON_ENV = "SONICBUS_TF_PYTHON"
VENV_NAME = "tf-peer-venv"
READY_MARKER = ".sonicbus-ready"
# The recipe of musicnn_parity_tf.py, pinned to versions checked to run the original
# (numpy < 2 keeps its float16 log-mel faithful; tf_keras gives tf.compat.v1.layers).
TF_REQUIREMENTS = (
    "tensorflow-cpu==2.21.0",
    "tf_keras==2.21.0",
    "librosa==0.11.0",
    "soundfile==0.14.0",
    "numpy==1.26.4",
    "ml_dtypes<0.6",
)
TF_IMPORT_CHECK = "import tensorflow, tf_keras, librosa, soundfile"
# Float operations of one 3-s MSD_musicnn patch (187 x 96 mel frames), as TensorFlow's
# own profiler counts them on the original graph (multiply and add counted apart).
GFLOP_PER_PATCH = 2.8116


class TfPeerError(RuntimeError):
    """The TensorFlow peer could not be set up or run; the message says what to do."""


class PeerFileTiming(BaseModel):
    """One file through the original extractor, seconds per stage."""

    path: str
    audio_s: float
    patches: int
    decode_s: float
    mel_s: float
    graph_build_s: float
    restore_s: float
    model_s: float
    other_s: float
    total_s: float
    model_cpu_s: float
    total_cpu_s: float
    outputs_finite: bool
    top_tags: list[str]


class PeerTiming(BaseModel):
    """The original on a set of files: per-file figures and their sums.

    ``wall_s`` (end to end) is the sum of the per-file extractor calls, graph rebuild
    and checkpoint restore included; ``model_s`` is only the network's ``sess.run``.
    """

    files: list[PeerFileTiming]
    # Files the original could not process (path, error), left out of every sum.
    failed: list[dict[str, str]] = []
    model: str
    batch_size: str | int
    tensorflow: str
    startup_s: float
    warmup_s: float | None
    process_wall_s: float
    machine: dict[str, Any]

    def _sum(self, field: str) -> float:
        return round(sum(getattr(timing, field) for timing in self.files), 4)

    @property
    def audio_s(self) -> float:
        return self._sum("audio_s")

    @property
    def wall_s(self) -> float:
        return self._sum("total_s")

    @property
    def model_s(self) -> float:
        return self._sum("model_s")

    @property
    def patches(self) -> int:
        return sum(timing.patches for timing in self.files)

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage over all files (they add up to ``wall_s``)."""
        stages = ("decode_s", "mel_s", "graph_build_s", "restore_s", "model_s", "other_s")
        return {stage: self._sum(stage) for stage in stages}

    def summary(self) -> dict[str, Any]:
        """The figures a report prints: totals, realtime factors, model seconds per patch."""
        return {
            "files": len(self.files),
            "failed": self.failed,
            "audio_s": self.audio_s,
            "patches": self.patches,
            "wall_s": self.wall_s,
            "model_s": self.model_s,
            "stages_s": self.stage_seconds(),
            "realtime_end_to_end": round(self.audio_s / self.wall_s, 2),
            "realtime_model_only": round(self.audio_s / self.model_s, 2),
            "model_ms_per_patch": round(1000 * self.model_s / self.patches, 2),
            "model_gflop_per_s": round(GFLOP_PER_PATCH * self.patches / self.model_s, 1),
            # CPU seconds (all threads): wall >> cpu / cores means the machine was busy.
            "model_cpu_s": self._sum("model_cpu_s"),
            "total_cpu_s": self._sum("total_cpu_s"),
            "startup_s": self.startup_s,
            "warmup_s": self.warmup_s,
            "process_wall_s": self.process_wall_s,
            "batch_size": self.batch_size,
            "tensorflow": self.tensorflow,
        }


def default_cache_dir() -> Path:
    """The cache sonicbus' settings use (``SONICBUS_CACHE_DIR`` or ~/.cache/sonicbus)."""
    from pipeline.config import default_cache

    return default_cache()


def find_tf_python(cache_dir: Path | None = None, tf_python: Path | None = None) -> Path | None:
    """A ready TensorFlow python without creating one: the argument, ``$SONICBUS_TF_PYTHON``
    or a finished venv in the cache; None when there is none."""
    explicit = tf_python or (
        Path(os.environ[TF_PYTHON_ENV]) if os.environ.get(TF_PYTHON_ENV) else None
    )
    if explicit is not None:
        if not explicit.is_file():
            raise TfPeerError(f"TensorFlow python {explicit} does not exist")
        return explicit
    venv = (cache_dir or default_cache_dir()) / VENV_NAME
    return venv / "bin" / "python" if (venv / READY_MARKER).is_file() else None


def ensure_tf_python(cache_dir: Path | None = None, tf_python: Path | None = None) -> Path:
    """The python of a TensorFlow venv that runs the original; created once (minutes, a
    ~600 MB download) under ``<cache_dir>/tf-peer-venv`` and reused after.

    A venv is only used once the marker written after a successful install exists, so an
    interrupted install is removed and redone, never half-used; a lock keeps two benches
    from installing at once.
    """
    found = find_tf_python(cache_dir, tf_python)
    if found is not None:
        return found
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / VENV_NAME
    with open(cache / f"{VENV_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / READY_MARKER).is_file():
            return venv / "bin" / "python"
        shutil.rmtree(venv, ignore_errors=True)
        print(f"creating the TensorFlow peer venv in {venv} (once; minutes)", file=sys.stderr)
        _run_setup([sys.executable, "-m", "venv", str(venv)], venv)
        python = venv / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        _run_setup([*pip, *TF_REQUIREMENTS], venv)
        _run_setup([str(python), "-c", TF_IMPORT_CHECK], venv)
        (venv / READY_MARKER).write_text(" ".join(TF_REQUIREMENTS) + "\n")
    return python


def _run_setup(command: list[str], venv: Path) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout)[-2000:]
        raise TfPeerError(
            f"setting up the TensorFlow peer venv failed ({' '.join(command[:4])} ...: "
            f"exit {result.returncode}):\n{detail}\nFix the cause (network, disk) and rerun, "
            f"or point {TF_PYTHON_ENV} at a python with {' '.join(TF_REQUIREMENTS)}; "
            f"{venv} is removed and redone on the next try."
        )


def time_original(
    files: list[Path],
    tf_python: Path,
    *,
    model: str = "MSD_musicnn",
    batch_size: int = 0,
    warmup: bool = True,
    timeout_s: float | None = None,
) -> PeerTiming:
    """Time the original extractor on ``files`` in one process of ``tf_python``.

    ``batch_size`` 0 sends all of a file's patches through one ``sess.run`` (the
    original's fastest setting, and the only one whose embeddings are right).
    """
    from models.musicnn_checkpoint import ensure_musicnn_wheel

    if not files:
        raise TfPeerError("no audio files to time the original on")
    with tempfile.TemporaryDirectory(prefix="tf_peer_") as scratch:
        listing = Path(scratch) / "files.json"
        listing.write_text(json.dumps([str(Path(path).resolve()) for path in files]))
        out = Path(scratch) / "timing.json"
        command = [
            str(tf_python), str(TIMER_SCRIPT), "--time-files", str(listing), "--out", str(out),
            "--wheel", str(ensure_musicnn_wheel()), "--model", model,
            "--batch-size", str(batch_size), "--warmup" if warmup else "--no-warmup",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, check=False, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise TfPeerError(f"the original extractor ran past {timeout_s} s") from exc
        if result.returncode != 0 or not out.is_file():
            raise TfPeerError(
                f"the original extractor failed (exit {result.returncode}):\n"
                f"{result.stderr[-3000:]}"
            )
        return PeerTiming.model_validate_json(out.read_text())


def audio_files(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` audio files under ``folder``, in path order."""
    from pipeline.config import DEFAULT_AUDIO_EXTENSIONS

    suffixes = {f".{extension}" for extension in DEFAULT_AUDIO_EXTENSIONS}
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    return found[:limit]


def write_smoke_clip(folder: Path) -> Path:
    """A 6 s stereo 44.1 kHz tone-and-noise WAV: the smoke run's one file."""
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    t = np.arange(6 * 44100) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    path = folder / "smoke_clip.wav"
    soundfile.write(path, np.stack([tone, tone], axis=1), 44100)
    return path


def main(argv: list[str] | None = None) -> int:
    """Time the original on a folder's first files; print the summary as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, help="music folder (its first --limit files)")
    parser.add_argument("--limit", type=int, default=3, help="files to time (default 3)")
    parser.add_argument("--tf-python", type=Path, help=f"TensorFlow python (or ${TF_PYTHON_ENV})")
    parser.add_argument("--batch-size", type=int, default=0, help="patches per sess.run (0: all)")
    smoke.add_flag(parser)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"bench": "tf_peer", "smoke": args.smoke}
    started = time.perf_counter()
    try:
        if args.smoke:
            tf_python = find_tf_python(tf_python=args.tf_python)
            if tf_python is None:
                result["tf_comparison"] = (
                    f"skipped: no TensorFlow python (set {TF_PYTHON_ENV} or --tf-python, or run "
                    f"without --smoke once to create {VENV_NAME} in the sonicbus cache)"
                )
                result["machine"] = machine_info()
                print(json.dumps(result))
                return 0
        else:
            if args.folder is None:
                parser.error("--folder is required (or --smoke)")
            tf_python = ensure_tf_python(tf_python=args.tf_python)
        with tempfile.TemporaryDirectory(prefix="tf_peer_smoke_") as scratch:
            if args.smoke:
                files = [write_smoke_clip(Path(scratch))]
            else:
                files = audio_files(args.folder, args.limit)
                if not files:
                    raise TfPeerError(f"no audio files under {args.folder}")
            # Smoke: no warm-up run, seconds matter more than figures there.
            timing = time_original(
                files, tf_python, batch_size=args.batch_size, warmup=not args.smoke
            )
    except TfPeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result["tf_comparison"] = "timed the original (nothing compared here)"
    result["tf_python"] = str(tf_python)
    result.update(timing.summary())
    result["per_file"] = [f.model_dump(exclude={"outputs_finite"}) for f in timing.files]
    result["outputs_finite"] = all(f.outputs_finite for f in timing.files)
    result["bench_s"] = round(time.perf_counter() - started, 2)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    result["machine"] = timing.machine
    print(json.dumps(result))
    return 0 if result["outputs_finite"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
