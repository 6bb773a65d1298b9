"""Concurrent requests share one computation: micro-batching without a timer.

Scoring a query against 50,000 x 600 floats reads 120 MB, whether for one
query or for eight: the matrix product is memory-bound. Measured (2 cores,
one thread each): one query 5.8-7.8 ms, four at once 7.4 ms in total. The
same holds for the sentence model: a forward pass over four short prompts
costs little more than over one. So while one thread computes, requests that
arrive queue up, and the next free thread takes all of them at once. Nothing
waits for a batch to fill: an idle batcher computes a lone request at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class _Item(Generic[In, Out]):
    __slots__ = ("done", "error", "result", "value")

    def __init__(self, value: In) -> None:
        self.value = value
        self.done = False
        self.result: Out | None = None
        self.error: BaseException | None = None


class Batcher(Generic[In, Out]):
    """`run(x)` from many threads; `compute([x1, x2, ...])` runs once per batch.

    The calling threads do the work themselves (no extra thread): the first
    caller to find the batcher idle computes everything queued so far, the
    others wait; when it is done, one of those still waiting takes the next
    batch. `compute` must return one result per input, in order.
    """

    def __init__(self, compute: Callable[[Sequence[In]], Sequence[Out]], max_batch: int = 32):
        self.compute = compute
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Item[In, Out]] = []
        self._busy = False
        self.batches = 0
        self.items = 0

    def run(self, value: In) -> Out:
        item: _Item[In, Out] = _Item(value)
        with self._cond:
            self._pending.append(item)
            while not item.done:
                if self._busy:
                    self._cond.wait()
                    continue
                self._busy = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._cond.release()
                try:
                    self._compute(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error
        return item.result  # type: ignore[return-value]

    def _compute(self, batch: list[_Item[In, Out]]) -> None:
        try:
            results = self.compute([item.value for item in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
            for item, result in zip(batch, results, strict=True):
                item.result = result
        except BaseException as exc:  # every waiter learns of the failure
            for item in batch:
                item.error = exc
        finally:
            for item in batch:
                item.done = True
            self.batches += 1
            self.items += len(batch)
