"""Models load on first use, unload when idle, and serve concurrent callers safely."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import weakref

import numpy as np

from models.base import ModelOptions, TrackAudio, enrich
from models.registry import create_model


def test_enrich_is_mean_robust_spread_and_motion() -> None:
    sequence = np.array([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 10.0]], dtype=np.float32)
    vector = enrich(sequence)
    assert vector.shape == (6,)
    assert vector[:2].tolist() == [3.0, 2.0]
    # IQR / 1.349: the outlier in row 2 barely moves the robust spread.
    assert vector[2] == np.float32(2.0 / 1.349)
    assert vector[3] == 0.0
    assert vector[4:].tolist() == [1.0, 2.5]


def test_lazy_load_idle_unload_and_reload() -> None:
    model = create_model("musicnn", ModelOptions(idle_unload_s=0.5, device="cpu"))
    assert not model.loaded
    audio = [TrackAudio("a", np.zeros(16000 * 3, dtype=np.float32))]
    first = model.embed(audio)[0].vector
    assert model.loaded
    deadline = time.monotonic() + 10
    while model.loaded and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not model.loaded, "the model stayed loaded after its idle timeout"
    again = model.embed(audio)[0].vector
    assert np.allclose(first, again)
    model.close()


def test_concurrent_callers_share_one_model() -> None:
    model = create_model("musicnn", ModelOptions(idle_unload_s=0, device="cpu"))
    rng = np.random.default_rng(0)
    tracks = [TrackAudio(str(i), rng.normal(size=16000 * 3).astype(np.float32)) for i in range(4)]
    expected = {e.track_id: e.vector for e in model.embed(tracks)}
    results: dict[str, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(track: TrackAudio) -> None:
        try:
            results[track.track_id] = model.embed([track])[0].vector
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tracks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for track_id, vector in expected.items():
        # Alone or in a batch, a track gets the same vector.
        assert np.allclose(results[track_id], vector, atol=1e-4)
    model.close()


def test_a_prepared_track_lets_its_samples_go() -> None:
    samples = np.zeros(16000 * 60, dtype=np.float32)
    track = TrackAudio("t", samples)
    alive = weakref.ref(samples)
    del samples
    track.features = np.zeros((2, 3), dtype=np.float32)
    track.drop_samples()
    assert alive() is None and track.samples.size == 0


def test_a_cpu_model_never_loads_pytorch_to_choose_its_device() -> None:
    script = (
        "import sys; from models.base import resolve_device; "
        "print(resolve_device('cpu'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["cpu", "False"]
