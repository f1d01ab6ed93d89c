"""``vlnce probe``: does a policy read the instruction where only the instruction can tell?"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a training run directory whose store holds destination groups "
                               "(trained with --aug --aug-all-destinations)")
    p.add_argument("--checkpoint", required=True, help="the policy to probe (any, as long as its vocabulary and "
                                                       "image sizes match the run's)")
    p.add_argument("--trajectories", type=int, default=300, help="grouped trajectories to probe")
    p.add_argument("--seed", type=int, default=0, help="which trajectories are drawn")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    import json
    from pathlib import Path

    from agents.models.policy import load_policy
    from agents.training.probe import instruction_probe
    from agents.training.store import TrajectoryStore
    from sim.tasks.dataset import load_dataset
    from vlnce.errors import ConfigError

    run_dir = Path(args.run)
    if not (run_dir / "train_config.json").is_file() or not (run_dir / "store").is_dir():
        raise ConfigError(f"{run_dir} is not a training run (expected train_config.json and store/ in it)")
    if args.trajectories < 1:
        raise ConfigError(f"--trajectories must be >= 1, got {args.trajectories}")
    dataset = json.loads((run_dir / "train_config.json").read_text()).get("dataset", "embedded")
    if dataset == "embedded":
        from sim.tasks.benchmark import ensure_benchmark

        data_dir = ensure_benchmark(progress=False)
    else:
        data_dir = Path(dataset)
    train = load_dataset(data_dir, "train", strict=False)
    episodes = list(train.episodes)
    if (run_dir / "aug" / "aug" / "aug.json.gz").is_file():
        episodes += load_dataset(run_dir / "aug", "aug", strict=False).episodes
    store = TrajectoryStore(run_dir / "store")
    policy, _ = load_policy(args.checkpoint, vocab_words=train.vocab.word_list if train.vocab else None)
    pc = policy.cfg
    store.check_frames(pc.rgb_size if pc.uses_rgb else None, pc.depth_size if pc.uses_depth else None)
    result = instruction_probe(policy, store, episodes, args.trajectories, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    elif not result["trajectories"]:
        raise ConfigError(f"{run_dir}/store holds no destination groups: train with --aug --aug-all-destinations")
    else:
        print(f"{result['trajectories']} trajectories probed at their first sibling decision (same frames, other "
              f"instruction and expert action): the expert's action {result['own_instruction']:.3f} with their "
              f"own instruction, {result['sibling_instruction']:.3f} with the sibling's (equal for a policy that "
              f"ignores it); other steps {result['other_steps']:.3f}")
    return 0
