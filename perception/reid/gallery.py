"""A gallery that gives people consistent identities across frames from their re-ID embeddings.

Each known identity keeps a prototype: the running mean direction of its embeddings (unit-norm
exponential moving average). Every frame's detections are matched to prototypes by cosine
distance with a one-to-one assignment (two boxes in one frame are never the same person), greedily
from the closest pair, which is what a tracker needs at these gallery sizes and is deterministic.
A detection further than ``threshold`` from every free prototype starts a new identity. Identities
unseen for ``max_age`` frames are forgotten (0 keeps them forever), the oldest first once the
gallery holds ``max_identities``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GalleryEntry:
    identity: int
    prototype: np.ndarray
    first_frame: int
    last_frame: int
    hits: int = 1


@dataclass
class IdentityGallery:
    """Args:
        threshold: largest cosine distance (1 - cos) at which a detection joins an identity.
        momentum: weight of the old prototype in the update (0 replaces it with the new embedding).
        max_age: frames after which an unseen identity is dropped (0: never).
        max_identities: gallery capacity; the least recently seen identity goes first.
    """

    threshold: float = 0.55
    momentum: float = 0.8
    max_age: int = 0
    max_identities: int = 1000
    entries: list[GalleryEntry] = field(default_factory=list)
    next_identity: int = 1
    frame: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 2.0:
            raise ValueError(f"gallery threshold is a cosine distance in (0, 2], got {self.threshold}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"gallery momentum must be in [0, 1), got {self.momentum}")

    @property
    def dim(self) -> int | None:
        return len(self.entries[0].prototype) if self.entries else None

    def reset(self) -> None:
        self.entries.clear()
        self.next_identity, self.frame = 1, 0

    def assign(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Identities (M,) int64 (from 1) and cosine distances (M,) to the matched prototype (0 for
        a new identity) of one frame's (M, D) embeddings; advances the frame counter.

        Raises:
            ValueError: embeddings that are not (M, D), not finite, or of another D than the gallery's.
        """
        e = np.asarray(embeddings, dtype=np.float64)
        if e.ndim != 2 or (len(e) and not np.isfinite(e).all()):
            raise ValueError(f"embeddings must be a finite (M, D) array, got shape {e.shape}")
        if self.dim is not None and len(e) and e.shape[1] != self.dim:
            raise ValueError(f"embeddings have dimension {e.shape[1]} but the gallery holds {self.dim}-d prototypes "
                             "(another model?); reset the gallery")
        self.frame += 1
        self._expire()
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        ids = np.zeros(len(e), np.int64)
        dists = np.zeros(len(e))
        if self.entries and len(e):
            protos = np.stack([g.prototype for g in self.entries])
            dist = 1.0 - e @ protos.T
            order = np.argsort(dist, axis=None, kind="stable")
            used_det, used_proto = set(), set()
            for flat in order:
                i, j = divmod(int(flat), len(self.entries))
                if dist[i, j] > self.threshold:
                    break
                if i in used_det or j in used_proto:
                    continue
                used_det.add(i)
                used_proto.add(j)
                entry = self.entries[j]
                p = self.momentum * entry.prototype + (1.0 - self.momentum) * e[i]
                entry.prototype = p / max(np.linalg.norm(p), 1e-12)
                entry.last_frame, entry.hits = self.frame, entry.hits + 1
                ids[i], dists[i] = entry.identity, dist[i, j]
        for i in np.flatnonzero(ids == 0):
            if len(self.entries) >= self.max_identities:
                self.entries.remove(min(self.entries, key=lambda g: (g.last_frame, g.identity)))
            self.entries.append(GalleryEntry(self.next_identity, e[i].copy(), self.frame, self.frame))
            ids[i] = self.next_identity
            self.next_identity += 1
        return ids, dists

    def _expire(self) -> None:
        if self.max_age:
            self.entries = [g for g in self.entries if self.frame - g.last_frame <= self.max_age]
