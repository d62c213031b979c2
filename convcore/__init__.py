"""convcore: CPU-first convolutional neural networks.

An OpenMP C++ core (tiled SGEMM, blocked im2col, pooling) under a small PyTorch-shaped API:
`convcore.functional` for ops on numpy arrays, `convcore.nn` for layers with explicit backward, `convcore.optim`,
`convcore.models`, `convcore.data`, `convcore.training`, `convcore.summary`.
"""
from . import _core
from ._runtime import (ThreadChoice, _apply_isa_cap, buffer_cache_info, cpu_info, get_num_threads,
                       set_buffer_cache_limit, set_num_threads, threads)

_apply_isa_cap()

from . import functional, models, nn, optim  # noqa: E402
from . import checkpoint, data, training  # noqa: E402
from .summary import summary  # noqa: E402
from .training import History, evaluate, fit, predict  # noqa: E402

__version__ = "0.1.0"

__all__ = ["cpu_info", "set_num_threads", "get_num_threads", "threads", "ThreadChoice", "set_buffer_cache_limit",
           "buffer_cache_info", "functional", "nn", "optim", "models", "summary", "data", "training", "checkpoint",
           "fit", "evaluate", "predict", "History", "__version__"]
