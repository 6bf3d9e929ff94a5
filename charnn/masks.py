"""Dropout masks that do not depend on how the streams are shared between processes.

A data-parallel run (parallel.py) gives each process a block of the B streams. For N processes to
train exactly as one does, stream b must get the same mask whichever process owns it, so a mask
cannot come from one generator drawn in stream order. Each stream's masks for a batch come from a
generator of their own, seeded by SeedSequence(seed, spawn_key=(batch, b)): batch counts the
batches drawn in the run (data.BatchStream.drawn, which a rollback's skipped batch also advances),
so no two (batch, stream) pairs share a mask, and a resumed run draws the masks it would have drawn.

Before data-parallel training, the masks came from the run's generator (RunState.rng) in one
draw of (T, B, H) per layer, so a run with dropout now trains differently from one of that charnn
(same seed, other masks); one without dropout is unchanged, bit for bit.
"""

from __future__ import annotations

import numpy as np


def dropout_masks(seed: int, batch: int, streams: range, num_layers: int, seq_length: int, hidden: int, p: float,
                  dtype) -> np.ndarray:
    """(L, T, B', H) masks for the streams `streams` (B' of them, in order) of batch `batch`: 0
    where a unit is dropped (probability p), 1 / (1 - p) where it is kept, as layers.dropout_forward
    makes them. Layer l's mask, masks[l], is given to layers.dropout_forward for that layer."""
    masks = np.empty((num_layers, seq_length, len(streams), hidden), dtype)
    keep = np.dtype(dtype).type(1 / (1 - p))
    for i, b in enumerate(streams):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(batch, b)))
        u = rng.random((num_layers, seq_length, hidden), dtype=masks.dtype)  # uniform in [0, 1)
        masks[:, :, i, :] = (u >= p) * keep
    return masks
