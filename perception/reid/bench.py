"""``vlnce reid bench``: embedding throughput (images/s) of every recipe, CPU and CUDA when present.

The baseline measured in the same run is the plain global-pooling model on the same backbone, so
each recipe's ``ratio_to_baseline`` is its cost on this machine; flip-test recipes count both
passes (what retrieval pays). On CUDA also float16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from perception.timing import devices, machine, throughput


@dataclass
class ReidBenchConfig:
    recipes: tuple[str, ...] = ("baseline", "rmg", "air", "apinet", "msgn", "adtc", "gasm")
    backbone: str = "resnet50"
    width: float = 1.0
    size: tuple[int, int] = (256, 128)
    batch: int = 32
    cpu_iters: int = 2
    cuda_iters: int = 30


def run_reid_benchmark(cfg: ReidBenchConfig, progress: bool = True) -> dict:
    from perception.reid.registry import RECIPES, build_model

    say = print if progress else (lambda *a, **k: None)
    out = {"backbone": f"{cfg.backbone} width {cfg.width}", "input": f"{cfg.size[0]}x{cfg.size[1]}",
           "batch": cfg.batch, **machine(), "results": []}
    names = ["baseline"] + [r for r in cfg.recipes if r != "baseline"]
    for dev, sync in devices():
        iters = cfg.cuda_iters if dev == "cuda" else cfg.cpu_iters
        x = torch.rand(cfg.batch, 3, *cfg.size, device=dev)
        base = None
        for name in names:
            recipe = RECIPES.get(name)
            model = build_model(name, 100, cfg.backbone, cfg.width).eval().to(dev)

            def embed(inp, m=model, flip=recipe.flip_test):
                f = m(inp)
                return f + m(inp.flip(-1)) if flip else f

            row = {"device": dev, "recipe": name, "embedding_dim": int(model.embedding_dim),
                   "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                   "fp32_images_per_s": round(throughput(embed, x, iters, sync), 1)}
            if dev == "cuda":
                model.half()  # in place: ``embed`` now runs the float16 weights
                row["fp16_images_per_s"] = round(throughput(embed, x.half(), iters, sync), 1)
            base = base or row["fp32_images_per_s"]
            row["ratio_to_baseline"] = round(row["fp32_images_per_s"] / base, 3)
            say(f"{dev} {name}: " + ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("device", "recipe")))
            out["results"].append(row)
            del model
    return out
