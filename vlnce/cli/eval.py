"""``vlnce eval``: run an agent on a split and report VLN-CE's metrics."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", required=True, help="agent name (random, handcrafted, oracle, instruction_blind, ...)")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (learned agents)")
    p.add_argument("--split", default="val_unseen", help="split (embedded: train, val_seen, val_unseen, test)")
    p.add_argument("--episodes", type=int, default=None, help="evaluate only the first N episodes")
    p.add_argument("--dataset", default="embedded", help="'embedded' or a R2R_VLNCE-style directory")
    p.add_argument("--scenes-dir", default=None, help="where the dataset's scene ids resolve")
    p.add_argument("--workers", type=int, default=1, help="processes")
    p.add_argument("--max-steps", type=int, default=500, help="actions before an episode is cut off (VLN-CE: 500)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the agents' randomness")
    p.add_argument("--video", action="store_true", help="write per-episode videos")
    p.add_argument("--attention", action="store_true",
                   help="CMA: write per-episode pictures of where it attended in the instruction at each step")
    p.add_argument("--no-maps", action="store_true", help="skip the per-episode top-down PNGs")
    p.add_argument("--plugins", default="", help="perception plugins to run on every observation (e.g. lidar_seg)")
    p.add_argument("--plugin-checkpoint", action="append", default=[], metavar="PLUGIN=PATH",
                   help="weights for a plugin (default: the plugin's shipped ones); repeatable")
    p.add_argument("--stop-bias", type=float, default=0.0, metavar="NATS",
                   help="learned agents: take NATS off the STOP logit before the argmax, so they stop "
                        "only when sure by that margin (0: greedy, as the paper; tune on val_seen)")
    p.add_argument("--expert-exit", action="store_true",
                   help="diagnostic: the expert acts until the agent has left the room it starts in, then the "
                        "agent alone (how much SR is lost at the choice of exit; embedded simulator)")
    p.add_argument("--exit-gate", action="store_true",
                   help="learned agents with a room sense: check the first room entered against the room the "
                        "instruction names next and walk back out of a wrong one (agents.exit_gate)")
    p.add_argument("--exit-gate-set", action="append", default=[], metavar="KEY=VALUE",
                   help="change one of the exit gate's settings (agents.exit_gate.ExitGateConfig, e.g. "
                        "max_wrong=0: judge but never walk back); repeatable")
    p.add_argument("--sim-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a simulator config override, e.g. agent.exact_turns=true (repeatable)")
    p.add_argument("--out", default=None,
                   help="output directory (resumes if it holds episodes.jsonl; default: "
                        "outputs/eval/AGENT[-CHECKPOINT]-SPLIT in the current directory)")


def default_out(agent: str, checkpoint: str | None, split: str) -> str:
    """outputs/eval/<agent>[-<checkpoint file stem>]-<split>: one directory per agent, weights and
    split, so a second evaluation of the same ones resumes and another's does not mix with it."""
    from pathlib import Path

    name = "-".join([agent] + ([Path(checkpoint).stem] if checkpoint else []) + [split])
    return str(Path("outputs") / "eval" / name)


def _key_values(items: list[str], flag: str) -> dict:
    from vlnce.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def run(args) -> int:
    from agents.evaluation import (EvalConfig, evaluate, format_destinations, format_exit, format_failures_by_route,
                                   format_gate, format_outcomes, format_table)
    from perception.registry import parse_checkpoint_options, parse_plugin_list

    cfg = EvalConfig(agent=args.agent, split=args.split, dataset=args.dataset, scenes_dir=args.scenes_dir,
                     episodes=args.episodes, workers=args.workers, video=args.video, maps=not args.no_maps,
                     attention=args.attention,
                     seed=args.seed, checkpoint=args.checkpoint, max_steps=args.max_steps,
                     plugins=parse_plugin_list(args.plugins), stop_bias=args.stop_bias,
                     expert_exit=args.expert_exit, exit_gate=args.exit_gate,
                     exit_gate_options=_key_values(args.exit_gate_set, "--exit-gate-set"),
                     sim_overrides=list(args.sim_set) or None)
    cfg.plugin_options = parse_checkpoint_options(cfg.plugins, args.plugin_checkpoint)
    out = args.out or default_out(args.agent, args.checkpoint, args.split)
    results = evaluate(cfg, out)
    print(format_table([results]))
    if results.get("outcomes"):
        print(format_outcomes(results["outcomes"]))
    if results.get("failures_by_route_followed"):
        print(format_failures_by_route(results["failures_by_route_followed"]))
    if format_destinations(results["metrics"]):
        print(format_destinations(results["metrics"]))
    if format_exit(results):
        print(format_exit(results))
    if format_gate(results):
        print(format_gate(results))
    if results.get("expert_exit"):
        print(f"expert_exit: the expert drove {results['mean_expert_steps']:.1f} steps per episode on average, "
              "until the agent stood outside its start room")
    if results.get("perception"):
        print("perception: " + ", ".join(f"{k}={v}" for k, v in results["perception"].items()))
    if results["errors"]:
        print(f"{results['errors']} episode(s) failed; first: {results['error_examples'][0]}")
    print(f"wrote {out}/episodes.jsonl, results.json, submission.json" + (", maps/" if cfg.maps else "")
          + (", videos/" if cfg.video else "") + (", attention/" if cfg.attention else ""))
    return 0
