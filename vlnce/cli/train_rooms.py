"""``vlnce train-rooms``: train the room sense (room types from RGB-D frames) on a trajectory store."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", action="append", required=True, metavar="DIR",
                   help="a training run's RUN/store with room labels (repeat for several)")
    p.add_argument("--val-store", default=None, metavar="DIR",
                   help="held-out frames, e.g. the store `vlnce probe --houses val_unseen` writes (unseen houses); "
                        "default: a share of the training stores' trajectories")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share held out when there is no --val-store")
    p.add_argument("--stride", type=int, default=3, help="keep every N-th frame of a trajectory")
    p.add_argument("--channels", type=int, default=128, help="grid channels of each CNN")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256, help="frames per batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--probe", default=None, metavar="CKPT",
                   help="train only the heads, on the frozen RGB and depth encoders of this VLN policy "
                        "checkpoint: how well do its encoders know the rooms?")
    p.add_argument("--mirror", action="store_true",
                   help="mirror a random half of each batch left to right (frames and the cells' labels)")
    p.add_argument("--door-weight", type=float, default=1.0,
                   help="weight of the cells that look into another room than the agent's in the cells' loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory (resumes when it holds a run)")


def run(args) -> int:
    from agents.training.room_sense import RoomSenseConfig, train_room_sense

    cfg = RoomSenseConfig(stores=tuple(args.store), val_store=args.val_store, val_fraction=args.val_fraction,
                          stride=args.stride, channels=args.channels, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, probe=args.probe, mirror=args.mirror,
                          door_weight=args.door_weight, seed=args.seed)
    summary = train_room_sense(cfg, args.out)
    for h in summary["history"]:
        print(f"epoch {h['epoch']}: loss {h['loss']:.3f}, held-out accuracy: here {h['here']:.3f} (commonest type "
              f"{h['here_majority']:.3f}), cells {h['cells']:.3f} ({h['cells_majority']:.3f}), through doors "
              f"{h['through_doors']:.3f} ({h['through_doors_majority']:.3f})")
    use = "a measurement of the probed encoders" if args.probe else "use with vlnce train --agent cma --room-sense"
    print(f"{summary['train_frames']} training frames, {summary['val_frames']} held out; best: epoch "
          f"{summary['best_epoch']} -> {args.out}/best.pt ({use})")
    return 0
