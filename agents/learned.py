"""Learned agents (Seq2Seq, CMA) acting from a checkpoint through the common Agent interface."""

from __future__ import annotations

import math

import torch

from agents.base import AGENTS, Agent, EpisodeInfo
from sim.actions import Action
from vlnce.errors import ConfigError


class LearnedAgent(Agent):
    """Runs a policy checkpoint greedily (argmax over the action logits), one step per call.

    The instruction text is tokenised with the checkpoint's own vocabulary, so the agent acts on
    any dataset; the simulator must render the sensors of ``sensor_config()``.

    Args:
        checkpoint: policy checkpoint path.
        device: torch device the policy runs on.
        stop_bias: nats subtracted from the STOP logit before the argmax, so the agent stops only
            when STOP beats the best move by this margin; 0 is the paper's greedy decoding. A
            calibration knob for agents that stop short, to be chosen on val_seen, not val_unseen.
        exit_gate: True (default thresholds) or an ``ExitGateConfig``: the exit gate
            (``agents.exit_gate``) checks the first room the agent enters (or the first
            ``rooms``, in turn) against the rooms the instruction names, with the policy's own
            room sense, and walks back out of a wrong one. Needs a policy with a room sense
            (``--room-sense``).
    """

    arch: str = ""
    takes_checkpoint = True

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", stop_bias: float = 0.0,
                 exit_gate=False) -> None:
        from agents.models import load_policy
        from sim.tasks.dataset import Vocab

        if checkpoint is None:
            raise ConfigError(f"agent {self.arch!r} needs a checkpoint (--checkpoint PATH)")
        if not math.isfinite(stop_bias):
            raise ConfigError(f"stop_bias must be a finite number of nats, got {stop_bias}")
        self.stop_bias = float(stop_bias)
        self.policy, blob = load_policy(checkpoint, arch=self.arch, device=device)
        self.policy.eval()
        self.vocab = Vocab(list(blob["vocab"]))
        self.device = torch.device(device)
        self.last_extras: dict = {}
        self.last_progress: float | None = None
        self.last_logits: torch.Tensor | None = None  # (4,) action logits of the last act()
        self.gate = None
        if exit_gate:
            from agents.exit_gate import ExitGate, ExitGateConfig

            if self.policy.room_sense is None:
                raise ConfigError(f"the exit gate reads the policy's room sense; {checkpoint} has none "
                                  "(train with --room-sense)")
            self.gate = ExitGate(exit_gate if isinstance(exit_gate, ExitGateConfig) else None)

    def sensor_config(self) -> dict:
        return self.policy.cfg.sensors()

    @torch.inference_mode()
    def reset(self, info: EpisodeInfo) -> None:
        tokens = torch.tensor([self.vocab.encode(info.instruction)], device=self.device)
        self.instruction = self.policy.encode_instruction(tokens)
        self._restart()
        if self.gate is not None:
            from agents.exit_gate import named_route_rooms

            self._mark()
            self.gate.reset(named_route_rooms(info.instruction))

    def _restart(self) -> None:
        self.state = self.policy.initial_state(1)
        self.prev_action = torch.full((1,), -1, dtype=torch.long, device=self.device)

    def _mark(self) -> None:
        # the policy returns a new state each step and never writes into the old one
        self._marked = (self.state, self.prev_action)

    def _rewind(self) -> None:
        self.state, self.prev_action = self._marked

    @torch.inference_mode()
    def act(self, observations: dict) -> int:
        if self.gate is None:
            action = int(self._decision(observations).argmax())
        else:
            here, _ = self.policy.room_sense.probabilities(*self.policy.frame_inputs(observations))
            action, by_policy = self.gate.act(here[0].float().cpu().numpy(),
                                              lambda: self._decision(observations).cpu().numpy(), self._rewind, self._mark)
            if not by_policy:  # the gate's own step: the policy was not asked and keeps its last action
                return action
        self.prev_action = torch.tensor([action], device=self.device)
        return action

    def _decision(self, observations: dict) -> torch.Tensor:
        """Runs the policy on one frame (its state advances) and returns the logits the action is
        chosen from: the action head's, less ``stop_bias`` on STOP."""
        logits, progress, self.state, self.last_extras = self.policy.act(
            self.instruction, *self.policy.frame_inputs(observations), self.prev_action, self.state,
            rooms=self.policy.room_inputs(observations))
        self.last_progress = None if progress is None else float(progress[0])
        self.last_logits = logits[0].float()
        decision = self.last_logits
        if self.stop_bias:
            decision = decision.clone()
            decision[Action.STOP] -= self.stop_bias
        return decision

    def executed(self, action: int) -> None:
        if self.gate is not None:
            raise ConfigError("the exit gate dead-reckons from the actions it chose; an agent with it cannot be "
                              "overridden (--expert-exit)")
        self.prev_action = torch.tensor([int(action)], device=self.device)


@AGENTS.register("seq2seq")
class Seq2SeqAgent(LearnedAgent):
    arch = "seq2seq"


@AGENTS.register("cma")
class CMAAgent(LearnedAgent):
    arch = "cma"
