"""The micro-batcher the query service's searches and prompt encodings go through."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.recommender.batching import Batcher


def test_callers_arriving_during_a_computation_share_the_next_one() -> None:
    batches: list[list[int]] = []
    first_started = threading.Event()

    def compute(values: Sequence[int]) -> list[int]:
        batches.append(list(values))
        first_started.set()
        time.sleep(0.2)  # long enough for the others to queue up behind it
        return [v * 10 for v in values]

    batcher: Batcher[int, int] = Batcher(compute)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.run, 0)
        assert first_started.wait(5)
        rest = [pool.submit(batcher.run, i) for i in range(1, 8)]
        results = [first.result(5), *(f.result(5) for f in rest)]
    assert results == [i * 10 for i in range(8)]
    assert batches == [[0], sorted(batches[1])] and sorted(batches[1]) == list(range(1, 8))
    assert (batcher.batches, batcher.items) == (2, 8)


def test_many_threads_each_get_their_own_result_and_batches_are_capped() -> None:
    sizes: list[int] = []

    def compute(values: Sequence[int]) -> list[int]:
        sizes.append(len(values))
        time.sleep(0.001)
        return [v + 1 for v in values]

    batcher: Batcher[int, int] = Batcher(compute, max_batch=4)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(batcher.run, range(2000)))
    assert results == [v + 1 for v in range(2000)]
    assert max(sizes) <= 4 and sum(sizes) == 2000 and batcher.items == 2000
    assert batcher.batches < 2000  # some calls did share a computation


def test_a_failed_computation_fails_its_own_callers_only() -> None:
    def compute(values: Sequence[int]) -> list[int]:
        if -1 in values:
            raise ValueError("bad value in this batch")
        return list(values)

    batcher: Batcher[int, int] = Batcher(compute)
    with pytest.raises(ValueError, match="bad value"):
        batcher.run(-1)
    assert batcher.run(5) == 5  # the batcher is not left busy


def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    batcher: Batcher[int, int] = Batcher(lambda values: [1, 2, 3])
    with pytest.raises(RuntimeError, match="batch of 1 gave 3 results"):
        batcher.run(1)
