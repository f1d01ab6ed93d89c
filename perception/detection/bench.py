"""``vlnce detect bench``: detector images/s on CPU, and on CUDA (fp32 and fp16) when present.

The baseline, measured in the same run, is the backbone alone (what every detector pays before its
heads), so ``to_backbone_ratio`` is the share of the time left for the RPN, NMS, RoIAlign and the
box head on this machine.
"""

from __future__ import annotations


def bench_detector(checkpoint: str | None = None, iters: int = 5, batch_size: int = 4, size=(240, 320),
                   cuda_iters: int = 50) -> dict:
    import torch

    from perception.detection.checkpoint import load_detector
    from perception.detection.plugin import default_checkpoint
    from perception.detection.ops import torchvision_ops_available
    from perception.timing import devices, machine, throughput

    path = checkpoint or default_checkpoint()
    model, _ = load_detector(path, "cpu")
    out = {"checkpoint": str(path), "backbone": f"{model.cfg.backbone} width {model.cfg.width}",
           "image_size": f"{size[0]}x{size[1]}", "batch": batch_size, "torchvision_ops": torchvision_ops_available(),
           **machine(), "results": []}
    for dev, sync in devices():
        n = cuda_iters if dev == "cuda" else iters
        m = model.to(dev).eval()
        x = torch.rand(batch_size, 3, *size, device=dev)
        row = {"device": dev}
        row["detector_fp32_images_per_s"] = round(throughput(m.predict, x, n, sync), 2)
        row["backbone_fp32_images_per_s"] = round(throughput(lambda t: m.backbone(m.batch(t)[0]), x, n, sync), 2)
        row["to_backbone_ratio"] = round(row["detector_fp32_images_per_s"] / row["backbone_fp32_images_per_s"], 3)
        if dev == "cuda":
            half = load_detector(path, dev)[0].half()
            row["detector_fp16_images_per_s"] = round(throughput(half.predict, x.half(), n, sync), 2)
        out["results"].append(row)
    return out


__all__ = ["bench_detector"]
