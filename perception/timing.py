"""Throughput timing shared by the perception benchmarks."""

from __future__ import annotations

import time
from typing import Callable


def machine() -> dict:
    """What a benchmark ran on: torch version, CPU (cores, torch threads) and the GPU when present."""
    import os
    import platform

    import torch

    out = {"torch": torch.__version__,
           "cpu": f"{platform.machine()} {os.cpu_count()} cores, {torch.get_num_threads()} threads"}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def devices() -> list[tuple[str, Callable[[], None]]]:
    """(device, synchronise) pairs to benchmark on: the CPU, then CUDA when available."""
    import torch

    found = [("cpu", lambda: None)]
    if torch.cuda.is_available():
        found.append(("cuda", torch.cuda.synchronize))
    return found


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
