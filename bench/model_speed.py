"""How close MusiCNN's forward pass runs to what this CPU can do, measured in one process.

`sgemm_peak` times a large float32 matrix product (the fastest thing a CPU
does with BLAS) at the thread count the model uses; `flops_per_patch` counts
the network's multiply-adds from its layer shapes; `time_model_only` runs the
network alone on real patches. Their ratio is the share of the peak the model
reaches, a figure that holds on a noisy machine better than seconds do.
Imported by bench/embed_throughput.py; PyTorch is imported only when a figure needs it,
so that the embedder's peak memory, measured before, is its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.musicnn_spec import N_MELS, PATCH_FRAMES

if TYPE_CHECKING:
    from models.musicnn_net import MusiCNN


def sgemm_peak(threads: int, size: int = 2048, repeats: int = 7) -> dict[str, float]:
    """Best-of-`repeats` GFLOP/s of a size x size float32 matmul on `threads` threads, by
    PyTorch's BLAS, numpy's (OpenBLAS) and ONNX Runtime's (MLAS), and the best as `peak`:
    they differ by 1.5x on this CPU (AVX-512), and the peak is what the CPU can do."""
    import torch
    from threadpoolctl import threadpool_limits

    a, b = np.random.default_rng(0).standard_normal((2, size, size), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            rates = {
                "torch": _best_rate(lambda: ta @ tb, size, repeats),
                "numpy": _best_rate(lambda: a @ b, size, repeats),
            }
        matmul = _onnx_matmul(threads)
        if matmul is not None:
            rates["onnxruntime"] = _best_rate(lambda: matmul(a, b), size, repeats)
    finally:
        torch.set_num_threads(previous)
    return {**rates, "peak": max(rates.values())}


def _onnx_matmul(threads: int) -> Callable[[np.ndarray, np.ndarray], object] | None:
    """A one-node ONNX graph (MatMul) in an ONNX Runtime session, or None without it."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "sgemm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", "n"]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", "n"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    return lambda a, b: session.run(None, {"a": a, "b": b})


def _best_rate(matmul: Callable[[], object], size: int, repeats: int) -> float:
    matmul()  # warm-up: thread pool, page faults
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def flops_per_patch(net: MusiCNN) -> float:
    """Floating-point operations (2 per multiply-add) of one 3-s patch through `net`."""
    total = 0.0
    for block in (*net.timbral, *net.temporal):
        out_ch, _in_ch, kernel_t, kernel_f = block.conv.weight.shape
        total += 2 * out_ch * kernel_t * kernel_f * PATCH_FRAMES * (N_MELS - kernel_f + 1)
    for block in net.midend:
        out_ch, in_ch, kernel_t = block.conv.weight.shape
        total += 2 * out_ch * in_ch * kernel_t * PATCH_FRAMES
    for dense in (net.dense, net.output):
        total += 2 * dense.in_features * dense.out_features
    return total


@dataclass
class ModelOnly:
    patches: int
    seconds: float

    @property
    def ms_per_patch(self) -> float:
        return self.seconds * 1000 / self.patches


def time_model_only(
    forward: Callable[[np.ndarray], object], patches: np.ndarray, batch: int = 16, repeats: int = 2
) -> ModelOnly:
    """Best-of-`repeats` time of `forward` (numpy patches in) over `patches` in batches."""
    stacked = np.ascontiguousarray(patches, dtype=np.float32)
    best = float("inf")
    forward(stacked[:batch])  # warm-up: kernels are picked on the first call
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(stacked), batch):
            forward(stacked[start : start + batch])
        best = min(best, time.perf_counter() - started)
    return ModelOnly(patches=len(stacked), seconds=best)
