"""``vlnce probe``: does a policy read the instruction where only the instruction can tell?"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="a training run directory whose store holds destination groups "
                                          "(trained with --aug --aug-all-destinations); or use --houses")
    p.add_argument("--checkpoint", required=True, help="the policy to probe (any, as long as its vocabulary and "
                                                       "image sizes match the run's)")
    p.add_argument("--houses", choices=("train", "val_unseen", "test"),
                   help="instead of a run: generate destination groups on this split's houses of the embedded "
                        "benchmark, collect their expert paths into --out, and probe there (val_unseen: does the "
                        "policy read in houses it never saw?)")
    p.add_argument("--out", help="with --houses: where the groups and their store are kept (reused when present)")
    p.add_argument("--groups-per-house", type=int, default=40,
                   help="with --houses: grouped episodes generated per house")
    p.add_argument("--groups-seed", type=int, default=1,
                   help="with --houses: generation seed (0 on train houses regenerates a --seed 0 run's groups)")
    p.add_argument("--dataset", default="embedded",
                   help="with --houses: a benchmark directory made by `vlnce data build` (default: the embedded one)")
    p.add_argument("--look-around", action="store_true",
                   help="with --houses: the expert scans the start room first, as for a policy trained with "
                        "`vlnce train --look-around` (its decisions come after the scan)")
    p.add_argument("--workers", type=int, default=2, help="with --houses: generation and collection processes")
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

    if args.trajectories < 1:
        raise ConfigError(f"--trajectories must be >= 1, got {args.trajectories}")
    if (args.run is None) == (args.houses is None):
        raise ConfigError("give either a training run directory or --houses SPLIT --out DIR, not both or neither")
    if args.look_around and args.houses is None:
        raise ConfigError("--look-around applies to --houses (a run's own store holds the paths it was trained on)")
    if args.houses is not None:
        if not args.out:
            raise ConfigError("--houses needs --out DIR, where the groups and their trajectories are kept")
        if args.groups_per_house < 1 or args.workers < 1:
            raise ConfigError(f"--groups-per-house and --workers must be >= 1, got {args.groups_per_house} and "
                              f"{args.workers}")
        from agents.training.probe import build_group_store
        from sim.tasks.benchmark import ensure_benchmark

        data_dir = ensure_benchmark(progress=False) if args.dataset == "embedded" else Path(args.dataset)
        if not (data_dir / "benchmark.json").is_file():
            raise ConfigError(f"--dataset {data_dir} is not a generated benchmark (no benchmark.json in it); "
                              "--houses needs the generator's house seeds")
        train = load_dataset(data_dir, "train", strict=False)
        policy, _ = load_policy(args.checkpoint, vocab_words=train.vocab.word_list if train.vocab else None)
        store, episodes = build_group_store(args.out, args.houses, policy.cfg.sensors(), train.vocab.word_list,
                                            args.groups_per_house, args.groups_seed, args.workers,
                                            progress=not args.json, data_dir=data_dir,
                                            look_around=args.look_around)
        where = f"{args.out}/store ({args.houses} houses)"
        scenes_dir = data_dir / "scenes"
    else:
        run_dir = Path(args.run)
        if not (run_dir / "train_config.json").is_file() or not (run_dir / "store").is_dir():
            raise ConfigError(f"{run_dir} is not a training run (expected train_config.json and store/ in it)")
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
        where = f"{run_dir}/store"
        # the groups are Aug episodes; a run with --aug-houses keeps their new houses beside them
        scenes_dir = run_dir / "aug" / "scenes" if (run_dir / "aug" / "scenes").is_dir() else data_dir / "scenes"
    pc = policy.cfg
    store.check_frames(pc.rgb_size if pc.uses_rgb else None, pc.depth_size if pc.uses_depth else None)
    result = instruction_probe(policy, store, episodes, args.trajectories, args.seed, scenes_dir=scenes_dir)
    if args.json:
        print(json.dumps(result, indent=1))
    elif not result["trajectories"]:
        raise ConfigError(f"{where} holds no destination groups: train with --aug --aug-all-destinations")
    else:
        print(f"{result['trajectories']} trajectories probed at their first sibling decision (same frames, other "
              f"instruction and expert action): the expert's action {result['own_instruction']:.3f} with their "
              f"own instruction, {result['sibling_instruction']:.3f} with the sibling's (equal for a policy that "
              f"ignores it); other steps {result['other_steps']:.3f}")
        split = ", ".join(f"{result[f'own_instruction_{k}']:.3f} {w}" for k, w in
                          (("at_start", "there"), ("later", "at the others")) if result[f"own_instruction_{k}"] is not None)
        print(f"{result['at_start']:.3f} of the decisions are taken where the agent started, before any forward "
              f"step: with the own instruction {split}")
        if result["own_instruction_exit_choice"] is not None:
            print(f"{result['exit_choice']:.3f} of those choose the doorway (the two paths leave into different "
                  f"rooms): {result['own_instruction_exit_choice']:.3f} with the own instruction")
        if result["distinct_attention"] is not None:
            split = ", ".join(f"{result[f'distinct_attention_{k}']:.3f} where it chose {k}" for k in ("right", "wrong")
                              if result[f"distinct_attention_{k}"] is not None)
            print(f"instruction attention at the decision on the words the sibling's instruction lacks: "
                  f"{result['distinct_attention']:.3f} ({split}), against {result['distinct_share']:.3f} spread "
                  "evenly")
    return 0
