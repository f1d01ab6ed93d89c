"""Does a policy read the instruction where nothing else can tell it which way to go?

A teacher-forced probe on a training run's store. Two expert paths from one start pose (a
destination group, ``--aug-all-destinations``) take the same actions until one step, their
sibling decision (``sibling_decision_steps``): there the frames and the previous action agree and
only the instructions differ. At a trajectory's first such step the probe asks the policy for
the action twice, once with the trajectory's own instruction and once with the instruction of
the sibling that parts from it there. A policy that ignores the instruction answers both the
same; one that reads it matches the expert with its own and not with the sibling's.

A run's own store asks about trajectories the policy was trained on; ``build_group_store`` makes
new groups (another generation seed, or the houses of another split) to ask whether that
reading carries over to episodes it never saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agents.training.store import TrajectoryStore, parting_siblings, sibling_decisions, sibling_groups
from sim.actions import Action


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
            t = int(decisions[i][0])
            pairs.append((i, parting_siblings(store, members, i, t)[0], t))
    return pairs


def exits_into_other_rooms(scene, path_a, path_b) -> bool:
    """Whether two paths from one start leave the start room into different rooms (the first room
    each enters after it; a path that never leaves enters none)."""
    from sim.tasks.instructions import rooms_along

    def next_room(path):
        rooms = rooms_along(scene, np.asarray(path, np.float64))
        return rooms[1][0] if len(rooms) > 1 else None

    return next_room(path_a) != next_room(path_b)


def instruction_probe(policy, store: TrajectoryStore, episodes, trajectories: int = 300, seed: int = 0,
                      batch_size: int = 16, scenes_dir=None) -> dict:
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
    decision, with the own instruction. For a policy with instruction attention (CMA), where it
    looked at the decision with its own instruction: ``distinct_attention``, the mean attention
    weight on the words that the sibling's instruction lacks (the ones that can tell the two
    apart), ``distinct_share``, the mean share of such words in the instruction (what attention
    spread evenly would put on them), and ``distinct_attention_right`` / ``_wrong``, the first
    over the decisions it got right / wrong (None when there were none). A policy that looks
    at the telling words and still errs does not ground them; one that looks elsewhere does not
    read them. ``at_start``: the share of the decisions taken where the agent still stands where it
    started (no forward step before it: the first step, or the end of a look-around scan), where
    it has seen only its start room; ``own_instruction_at_start`` / ``_later``: the first
    accuracy over those decisions and over the others (None when there are none). With
    ``scenes_dir`` (where the episodes' scenes are): ``exit_choice``, the share of the decisions at
    the start where the two reference paths leave the start room into different rooms (so the
    choice is which doorway leads to the room the instruction names next), and
    ``own_instruction_exit_choice``, the accuracy over those (None without ``scenes_dir``, or when
    there are none).
    """
    import torch

    groups = sibling_groups(store, episodes)
    decisions = sibling_decisions(store, groups)
    pairs = sibling_pairs(store, groups, decisions)
    looks = ("distinct_attention", "distinct_share", "distinct_attention_right", "distinct_attention_wrong")
    starts = ("at_start", "own_instruction_at_start", "own_instruction_later", "exit_choice",
              "own_instruction_exit_choice")
    if not pairs:
        return {"trajectories": 0, "own_instruction": None, "sibling_instruction": None, "other_steps": None,
                **dict.fromkeys(looks), **dict.fromkeys(starts)}
    rng = np.random.default_rng(seed)
    pairs = [pairs[k] for k in sorted(rng.permutation(len(pairs))[:trajectories])]
    device = next(policy.parameters()).device
    pc = policy.cfg
    swapped = other = other_n = 0
    mass, share = [], []
    at_start, hit = [], []
    by_id = {e.episode_id: e for e in episodes}
    scenes = {}

    def exits_apart(i, j):
        from sim.scenes.scene import load_scene
        from sim.tasks.vln import resolve_scene_id

        a, b = by_id[store.trajectories[i].episode_id], by_id[store.trajectories[j].episode_id]
        if a.scene_id not in scenes:
            scenes[a.scene_id] = load_scene(resolve_scene_id(a.scene_id, Path(scenes_dir)))
        return exits_into_other_rooms(scenes[a.scene_id], a.reference_path, b.reference_path)

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
            logits, _, extras = policy.forward_sequence(torch.from_numpy(tokens).to(device),
                                                        twice(mine["rgb"]) if pc.uses_rgb else None,
                                                        twice(mine["depth"]).float() if pc.uses_depth else None,
                                                        twice(mine["prev_action"]), aux=True,
                                                        rooms=(twice(mine["room"]), twice(mine["view_rooms"]))
                                                        if pc.room_labels else None)
        best = logits.argmax(-1).cpu().numpy()
        alpha = extras.get("instruction_attention")
        alpha = None if alpha is None else alpha.float().cpu().numpy()
        for row, (i, _, t) in enumerate(chunk):
            expert = mine["action"][row]
            at_start.append(not (expert[:t] == Action.MOVE_FORWARD).any())
            hit.append(bool(best[row, t] == expert[t]))
            if alpha is not None:
                words = tokens[row][tokens[row] != 0]
                telling = ~np.isin(words, tokens[len(chunk) + row])
                mass.append(float(alpha[row, t, : len(words)][telling].sum()))
                share.append(float(telling.mean()))
            swapped += best[len(chunk) + row, t] == expert[t]
            keep = mine["mask"][row].copy()
            keep[decisions[i]] = False
            other += int((best[row][keep] == expert[keep]).sum())
            other_n += int(keep.sum())
    n = len(pairs)
    result = {"trajectories": n, "own_instruction": sum(hit) / n, "sibling_instruction": swapped / n,
              "other_steps": other / max(other_n, 1), **dict.fromkeys(looks)}
    first, hit_ = np.array(at_start), np.array(hit)
    result.update(at_start=float(first.mean()),
                  own_instruction_at_start=float(hit_[first].mean()) if first.any() else None,
                  own_instruction_later=float(hit_[~first].mean()) if (~first).any() else None,
                  exit_choice=None, own_instruction_exit_choice=None)
    if scenes_dir is not None and first.any():
        door = np.array([exits_apart(i, j) for (i, j, _), f in zip(pairs, first) if f])
        result.update(exit_choice=float(door.mean()),
                      own_instruction_exit_choice=float(hit_[first][door].mean()) if door.any() else None)
    if mass:
        mass_, right_ = np.array(mass), hit_  # attention is read for every probed decision or none
        result.update(distinct_attention=float(mass_.mean()), distinct_share=float(np.mean(share)),
                      distinct_attention_right=float(mass_[right_].mean()) if right_.any() else None,
                      distinct_attention_wrong=float(mass_[~right_].mean()) if (~right_).any() else None)
    return result


def build_group_store(out, houses: str, sensors: dict, vocab_words: list[str], per_house: int = 40, seed: int = 1,
                      workers: int = 1, progress: bool = True, data_dir=None, look_around: bool = False):
    """Destination groups on the houses of benchmark split ``houses`` and their expert paths.

    The groups (``make_augmentation(..., all_destinations=True)``) are written to ``out/aug`` and
    teacher-forcing trajectories (beta = 1, the benchmark's expert) rendered with ``sensors`` to
    ``out/store``; whatever ``out`` already holds of either is reused, so a second probe of another
    checkpoint with the same sensors costs nothing. On ``train`` houses, ``seed`` 0 regenerates the
    groups a training run with ``--aug-all-destinations --seed 0`` made; other seeds give new ones.
    ``look_around``: the expert scans the start room first (``TrainConfig.look_around``), as the
    runs trained with it were taught, so that their decisions are probed after the scan they
    learned to make.

    Returns (store, episodes): the ``TrajectoryStore`` and the groups' ``Episode`` records.
    """
    from agents.training.collect import CollectJob, collect, pending_shares
    from agents.training.trainer import make_augmentation, scan_steps
    from sim.tasks.benchmark import ensure_benchmark
    from sim.tasks.dataset import load_dataset
    from vlnce.errors import ConfigError
    from vlnce.fileio import atomic_write_bytes, setting_changes

    out = Path(out)
    data_dir = Path(data_dir) if data_dir else ensure_benchmark(progress=progress)
    # what the directory was made for; reusing it for other groups would probe the wrong ones
    scan = scan_steps(sensors) if look_around else 0
    made = {"houses": houses, "per_house": per_house, "seed": seed, "benchmark": str(Path(data_dir).resolve()),
            "look_around_steps": scan}
    record = out / "groups.json"
    if record.is_file():
        # directories made before the scan existed hold plain expert paths
        diff = setting_changes(json.loads(record.read_text()), made, defaults={"look_around_steps": 0})
        if diff:
            raise ConfigError(f"{out} holds groups made with other settings ({diff}); use another --out or the same "
                              "settings")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(record, json.dumps(made, indent=1).encode())
    aug = out / "aug"
    if not (aug / "aug" / "aug.json.gz").is_file():
        make_augmentation(data_dir, aug, per_house, seed, workers, progress, all_destinations=True, houses=houses)
    episodes = load_dataset(aug, "aug", strict=False).episodes
    store = TrajectoryStore(out / "store")
    todo = [CollectJob(str(aug), "aug", str(data_dir / "scenes"), share, sensors, list(vocab_words), 1.0,
                       str(out / "store"), chunk, look_around_steps=scan)
            for chunk, share in pending_shares(store, "0000_aug", episodes, workers)]
    if todo:
        collect(todo, workers, progress, desc=f"collecting groups on {houses} houses")
        store.reload()
    return store, episodes


__all__ = ["build_group_store", "exits_into_other_rooms", "instruction_probe", "sibling_pairs"]
