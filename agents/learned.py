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
    """

    arch: str = ""
    takes_checkpoint = True

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", stop_bias: float = 0.0) -> None:
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

    def sensor_config(self) -> dict:
        return self.policy.cfg.sensors()

    @torch.inference_mode()
    def reset(self, info: EpisodeInfo) -> None:
        tokens = torch.tensor([self.vocab.encode(info.instruction)], device=self.device)
        self.instruction = self.policy.encode_instruction(tokens)
        self.state = self.policy.initial_state(1)
        self.prev_action = torch.full((1,), -1, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def act(self, observations: dict) -> int:
        logits, progress, self.state, self.last_extras = self.policy.act(
            self.instruction, *self.policy.frame_inputs(observations), self.prev_action, self.state,
            rooms=self.policy.room_inputs(observations))
        self.last_progress = None if progress is None else float(progress[0])
        self.last_logits = logits[0].float()
        decision = self.last_logits
        if self.stop_bias:
            decision = decision.clone()
            decision[Action.STOP] -= self.stop_bias
        action = int(decision.argmax())
        self.prev_action = torch.tensor([action], device=self.device)
        return action

    def executed(self, action: int) -> None:
        self.prev_action = torch.tensor([int(action)], device=self.device)


@AGENTS.register("seq2seq")
class Seq2SeqAgent(LearnedAgent):
    arch = "seq2seq"


@AGENTS.register("cma")
class CMAAgent(LearnedAgent):
    arch = "cma"
