"""MusiCNN on ONNX Runtime: the CPU path, measured ~3x faster than PyTorch on this machine.

Measured on 2 cores (AMD EPYC with AVX-512), 16-patch batches: PyTorch ran the
fused network (`FastMusiCNN`) at ~26 ms per patch, ONNX Runtime's CPU provider
ran the same graph at ~9 ms, with embeddings equal to 6e-6. PyTorch's CPU
convolutions here reach about the rate of its own matmul, which is well below
what the CPU does with AVX-512; ONNX Runtime's kernels use it.

The graph is exported once from the loaded `FastMusiCNN` (torch's exporter) into
the model cache, named by the checkpoint, the weights' hash and `GRAPH_VERSION`,
and written atomically; later loads only open it. Bump `GRAPH_VERSION` when
`FastMusiCNN` changes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from models.musicnn_spec import N_MELS, PATCH_FRAMES

if TYPE_CHECKING:  # PyTorch is loaded only to export the graph, once
    from models.musicnn_fast import FastMusiCNN

log = logging.getLogger(__name__)

GRAPH_VERSION = "g1"
# Patches per session run. ONNX Runtime keeps the largest run's buffers in its arena
# (~45 MB per patch: the timbral maps and their im2col), and 4, 8 or 16 patches per
# run were equally fast (8.2 ms a patch), so 4 keeps a head's arena near 200 MB
# instead of 740 MB. Without the arena, runs were 2x slower (fresh pages every run).
RUN_PATCHES = 4


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_graph(fast: FastMusiCNN, path: Path) -> Path:
    """`fast` as an ONNX graph at `path` (kept when there), batch size left free."""
    if path.is_file():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    example = torch.zeros(2, PATCH_FRAMES, N_MELS)
    handle, part = tempfile.mkstemp(dir=path.parent, suffix=".onnx.part")
    os.close(handle)
    try:
        with warnings.catch_warnings():
            # torch says its TorchScript exporter is deprecated; it is the one that needs
            # no onnxscript, and the graph it writes is checked against the port by the tests.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                fast,
                (example,),
                part,
                dynamo=False,
                input_names=["patches"],
                output_names=["tags", "embedding"],
                dynamic_axes={"patches": {0: "batch"}},
                opset_version=17,
            )
        os.replace(part, path)
    finally:
        Path(part).unlink(missing_ok=True)
    log.info("exported MusiCNN to ONNX in %.1f s: %s", time.perf_counter() - started, path)
    return path


class OnnxMusiCNN:
    """An ONNX Runtime session over the exported graph; `run` matches `FastMusiCNN.forward`."""

    def __init__(self, graph: Path, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: one thread per core
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def run(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tags, embeddings = [], []
        for start in range(0, len(patches), RUN_PATCHES):
            chunk = np.ascontiguousarray(patches[start : start + RUN_PATCHES], dtype=np.float32)
            t, e = self.session.run(None, {"patches": chunk})
            tags.append(t)
            embeddings.append(e)
        return np.concatenate(tags), np.concatenate(embeddings)
