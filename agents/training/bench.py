"""``vlnce bench train``: training throughput of the learned policies, as ratios to baselines
measured in the same run.

- teacher forcing: frames/s of forward + backward + Adam step over padded trajectories, against
  the forward pass alone (no gradients) on the same batch;
- DAgger collection: frames/s of collection with the policy in the loop (beta = 0.5), against
  collection with the expert alone (beta = 1, no policy) on the same episodes; one process,
  counting the time inside episodes (rendering, expert, policy), not dataset or scene loading.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass


@dataclass
class TrainBenchConfig:
    agent: str = "cma"
    image_size: int = 32
    batch_size: int = 16
    steps: int = 64
    iterations: int = 3
    episodes: int = 24
    collect_envs: int = 8
    dataset: str = "embedded"


def _time(fn, iterations: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations


def run_train_benchmark(cfg: TrainBenchConfig, progress: bool = False) -> dict:
    import torch

    from agents.models import PolicyConfig, build_policy
    from agents.training.collect import CollectJob, run_job
    from agents.training.trainer import hardware
    from sim.tasks.benchmark import ensure_benchmark
    from sim.tasks.dataset import load_dataset

    torch.manual_seed(0)
    from pathlib import Path

    data_dir = ensure_benchmark(progress=progress) if cfg.dataset == "embedded" else Path(cfg.dataset)
    train = load_dataset(data_dir, "train", strict=False)
    vocab = train.vocab.word_list
    pc = PolicyConfig(arch=cfg.agent, vocab_size=len(vocab), rgb_size=cfg.image_size, depth_size=cfg.image_size)
    policy = build_policy(pc)
    opt = torch.optim.Adam(policy.parameters(), 1e-4)
    b, t, s = cfg.batch_size, cfg.steps, cfg.image_size
    tokens = torch.randint(2, len(vocab), (b, 24))
    rgb = torch.randint(0, 256, (b, t, s, s, 3), dtype=torch.uint8)
    depth = torch.rand(b, t, s, s, 1)
    prev = torch.randint(-1, 4, (b, t))
    target = torch.randint(0, 4, (b, t))

    def train_step():
        logits, _ = policy.forward_sequence(tokens, rgb, depth, prev)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def forward_only():
        with torch.no_grad():
            policy.forward_sequence(tokens, rgb, depth, prev)

    t_train = _time(train_step, cfg.iterations)
    t_fwd = _time(forward_only, cfg.iterations)

    first_scene = train.episodes[0].scene_id
    ids = [e.episode_id for e in train.episodes if e.scene_id == first_scene][: cfg.episodes]
    blob = {"config": asdict(pc), "state_dict": {k: v.detach().clone() for k, v in policy.state_dict().items()}}
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, beta, pol, envs in (("expert", 1.0, None, 1), ("dagger", 0.5, blob, 1),
                                      ("dagger_vector", 0.5, blob, cfg.collect_envs)):
            job = CollectJob(str(data_dir), "train", str(data_dir / "scenes"), ids, pc.sensors(), vocab, beta, tmp,
                             name, 1, pol, max_steps=300, envs=envs)
            res = run_job(job)  # timed inside episodes: dataset and scene loading are not counted
            rates[name] = res["steps"] / max(res["step_seconds"], 1e-9)
    frames = b * t
    return {
        "agent": cfg.agent, "image_size": s, "batch": [b, t], "hardware": hardware(),
        "teacher_forcing_frames_per_s": round(frames / t_train, 1),
        "forward_only_frames_per_s": round(frames / t_fwd, 1),
        "teacher_forcing_ratio_to_forward": round(t_fwd / t_train, 3),
        "dagger_collection_frames_per_s": round(rates["dagger"], 1),
        "expert_collection_frames_per_s": round(rates["expert"], 1),
        "dagger_collection_ratio_to_expert": round(rates["dagger"] / rates["expert"], 3),
        "dagger_collection_vector_frames_per_s": round(rates["dagger_vector"], 1),
        "dagger_vector_ratio_to_one_env": round(rates["dagger_vector"] / rates["dagger"], 3),
        "collection_envs": min(cfg.collect_envs, len(ids)),
        "collection_workers": 1,
    }
