"""P x K identity sampling: batches of P identities with K images each (triplet training)."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np


class PKSampler:
    """Yields lists of dataset indices, P identities x K images per batch, as torchreid.

    Each epoch every identity's images are shuffled and cut into chunks of K (an identity with
    fewer than K images is topped up by drawing its images again); batches take one chunk from
    each of P randomly chosen identities until fewer than P identities have chunks left.

    Args:
        pids: identity of every dataset item.
        p, k: identities per batch and images per identity.
        seed: the epoch-e order uses seed + e, so runs and resumed runs repeat.

    Raises:
        ValueError: fewer than P identities, or an identity with a single image (no positive pair
            for the triplet loss), naming the identity.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0) -> None:
        if p < 2 or k < 1:
            raise ValueError(f"need P >= 2 identities and K >= 1 images per batch, got P={p}, K={k}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.by_pid[int(pid)].append(i)
        single = [pid for pid, idx in self.by_pid.items() if len(idx) < 2]
        if single:
            raise ValueError(f"identities {single[:5]}{' ...' if len(single) > 5 else ''} have a single "
                             "training image; P x K sampling needs at least 2 per identity (drop them)")
        if len(self.by_pid) < p:
            raise ValueError(f"P x K sampling needs at least P={p} identities, the data has {len(self.by_pid)}")
        self.p, self.k, self.seed = p, k, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        chunks: dict[int, list[list[int]]] = {}
        for pid in sorted(self.by_pid):
            idx = list(rng.permutation(self.by_pid[pid]))
            if len(idx) < self.k:
                idx += list(rng.choice(self.by_pid[pid], self.k - len(idx), replace=True))
            chunks[pid] = [idx[i:i + self.k] for i in range(0, len(idx) - self.k + 1, self.k)]
        out = []
        while sum(1 for c in chunks.values() if c) >= self.p:
            live = sorted(pid for pid, c in chunks.items() if c)
            chosen = rng.choice(live, self.p, replace=False)
            out.append([int(i) for pid in chosen for i in chunks[int(pid)].pop()])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
