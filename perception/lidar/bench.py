"""``vlnce lidar bench``: SqueezeSegV3-21 scans/s at 64x512 and 64x2048.

Baseline measured in the same run: the same network with plain convolutions (SAC off), so the
ratio is SAC's cost on this machine. On CUDA also float16 + channels_last, and torch.compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from perception.timing import devices, machine, throughput

from perception.lidar.ssgv3 import ssgv3_21


@dataclass
class LidarBenchConfig:
    sizes: tuple[tuple[int, int], ...] = ((64, 512), (64, 2048))
    width: float = 1.0
    batch: int = 1
    cpu_iters: int = 3
    cuda_iters: int = 50
    compile: bool = True


def run_lidar_benchmark(cfg: LidarBenchConfig, progress: bool = True) -> dict:
    say = print if progress else (lambda *a, **k: None)
    out = {"model": f"SSGV3-21 width {cfg.width}", "batch": cfg.batch, **machine(), "results": []}
    for dev, sync in devices():
        iters = cfg.cuda_iters if dev == "cuda" else cfg.cpu_iters
        for h, w in cfg.sizes:
            x = torch.randn(cfg.batch, 5, h, w, device=dev)
            row = {"device": dev, "size": f"{h}x{w}"}
            base = ssgv3_21(20, conv="none", width=cfg.width).eval().to(dev)
            sac = ssgv3_21(20, conv="ISK", width=cfg.width).eval().to(dev)
            row["plain_conv_fp32_scans_per_s"] = round(throughput(base, x, iters, sync), 2)
            row["sac_isk_fp32_scans_per_s"] = round(throughput(sac, x, iters, sync), 2)
            if dev == "cuda":
                half = sac.half().to(memory_format=torch.channels_last)
                xh = x.half().contiguous(memory_format=torch.channels_last)
                row["sac_isk_fp16_channels_last_scans_per_s"] = round(throughput(half, xh, iters, sync), 2)
                if cfg.compile:
                    try:
                        row["sac_isk_fp16_compiled_scans_per_s"] = round(throughput(torch.compile(half), xh, iters, sync), 2)
                    except Exception as exc:  # compilation needs a toolchain; report, don't fail
                        row["compile_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            row["sac_to_plain_ratio"] = round(row["sac_isk_fp32_scans_per_s"] / row["plain_conv_fp32_scans_per_s"], 3)
            best = max(v for k, v in row.items() if k.startswith("sac_isk") and k.endswith("scans_per_s"))
            row["best_sac_isk_scans_per_s"] = best
            say(f"{dev} {h}x{w}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("device", "size")))
            out["results"].append(row)
    gpu_2048 = [r["best_sac_isk_scans_per_s"] for r in out["results"] if r["device"] == "cuda" and r["size"] == "64x2048"]
    out["target_gpu_64x2048_scans_per_s"] = 160.0
    out["target_met"] = (gpu_2048[0] >= 160.0) if gpu_2048 else None
    return out
