"""Does a policy read the instruction where nothing else can tell it which way to go?

A teacher-forced probe on a training run's store. Two expert paths from one start pose (a
destination group, ``--aug-all-destinations``) take the same actions until one step, their
sibling decision (``sibling_decision_steps``): there the frames and the previous action agree and
only the instructions differ. At a trajectory's first such step the probe asks the policy for
the action twice, once with the trajectory's own instruction and once with the instruction of
the sibling that parts from it there. A policy that ignores the instruction answers both the
same; one that reads it matches the expert with its own and not with the sibling's.
"""

from __future__ import annotations

import numpy as np

from agents.training.store import TrajectoryStore, sibling_decisions, sibling_groups


def sibling_pairs(store: TrajectoryStore, groups: list[list[int]],
                  decisions: dict[int, np.ndarray]) -> list[tuple[int, int, int]]:
    """(trajectory i, sibling j, step t) for each trajectory i of ``groups`` (``sibling_groups``)
    with sibling decisions (``sibling_decisions``): t is its first, j the first sibling (by index)
    that parts from it at t."""
    pairs = []
    for members in groups:
        for i in members:
            if i not in decisions:
                continue
            t, a = int(decisions[i][0]), store.actions(i)
            j = next(m for m in members
                     if m != i and len(b := store.actions(m)) > t and (b[:t] == a[:t]).all() and b[t] != a[t])
            pairs.append((i, j, t))
    return pairs


def instruction_probe(policy, store: TrajectoryStore, episodes, trajectories: int = 300, seed: int = 0,
                      batch_size: int = 16) -> dict:
    """Teacher-forced accuracy of ``policy`` at sibling decisions.

    Args:
        policy: a ``VLNPolicy`` (evaluated without gradients, on the CPU or where it is).
        store: a training run's trajectory store; episodes: the ``Episode`` records of its
            trajectories (training and Aug), which give the start poses.
        trajectories: how many of the trajectories with a sibling decision to probe (drawn with
            ``seed``; all when fewer).

    Returns: ``trajectories`` probed; ``own_instruction``: share of their first sibling decisions
    where the policy's most likely action is the expert's; ``sibling_instruction``: the same
    with the parting sibling's instruction in its place (the expert's action is then the wrong
    one for that instruction); ``other_steps``: accuracy on the steps that are no sibling
    decision, with the own instruction.
    """
    import torch

    groups = sibling_groups(store, episodes)
    decisions = sibling_decisions(store, groups)
    pairs = sibling_pairs(store, groups, decisions)
    if not pairs:
        return {"trajectories": 0, "own_instruction": None, "sibling_instruction": None, "other_steps": None}
    rng = np.random.default_rng(seed)
    pairs = [pairs[k] for k in sorted(rng.permutation(len(pairs))[:trajectories])]
    device = next(policy.parameters()).device
    pc = policy.cfg
    own = swapped = other = other_n = 0

    def twice(x):  # the same frames under both instructions
        return torch.from_numpy(np.concatenate([x, x])).to(device)

    policy.eval()
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s:s + batch_size]
        mine = store.batch([i for i, _, _ in chunk])
        theirs = store.batch([j for _, j, _ in chunk])["tokens"]
        width = max(mine["tokens"].shape[1], theirs.shape[1])
        tokens = np.zeros((2 * len(chunk), width), np.int64)
        tokens[: len(chunk), : mine["tokens"].shape[1]] = mine["tokens"]
        tokens[len(chunk):, : theirs.shape[1]] = theirs
        with torch.no_grad():
            logits = policy.forward_sequence(torch.from_numpy(tokens).to(device),
                                             twice(mine["rgb"]) if pc.uses_rgb else None,
                                             twice(mine["depth"]).float() if pc.uses_depth else None,
                                             twice(mine["prev_action"]))[0]
        best = logits.argmax(-1).cpu().numpy()
        for row, (i, _, t) in enumerate(chunk):
            expert = mine["action"][row]
            own += best[row, t] == expert[t]
            swapped += best[len(chunk) + row, t] == expert[t]
            keep = mine["mask"][row].copy()
            keep[decisions[i]] = False
            other += int((best[row][keep] == expert[keep]).sum())
            other_n += int(keep.sum())
    n = len(pairs)
    return {"trajectories": n, "own_instruction": own / n, "sibling_instruction": swapped / n,
            "other_steps": other / max(other_n, 1)}


__all__ = ["instruction_probe", "sibling_pairs"]
