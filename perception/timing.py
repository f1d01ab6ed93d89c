"""Throughput timing shared by the perception benchmarks."""

from __future__ import annotations

import time
from typing import Callable


def throughput(fn: Callable, x, iters: int, sync: Callable[[], None], warmup: int = 2) -> float:
    """Samples per second of ``fn(x)`` over ``iters`` calls after ``warmup`` calls (cudnn autotune,
    compilation), with ``sync`` (e.g. ``torch.cuda.synchronize``) around the timed loop."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn(x)
        sync()
    return iters * x.shape[0] / (time.perf_counter() - t0)
