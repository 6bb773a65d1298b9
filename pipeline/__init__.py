"""sonicbus: music embedding and recommendation pipeline on Kafka and Milvus."""

import sys

__version__ = "0.1.0"

# PyPI's CUDA builds of torch install Triton, and importing transformers imports it
# (transformers -> torch.compiler -> torch._dynamo -> "is Triton installed?"). sonicbus
# compiles no kernels, and Triton's native module prints ~100 "nanobind: leaked ..."
# lines when the interpreter exits: every `sonicbus up`, `query` or `serve` ended in them.
# A None entry makes `import triton` fail as if it were not installed, so torch goes on
# without it (eager CPU and CUDA ops do not use Triton).
sys.modules.setdefault("triton", None)  # type: ignore[arg-type]
