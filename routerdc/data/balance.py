"""The paper's task balancing: each training task truncated or repeated to N samples."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerdc.data.scoreset import DataError, ScoreSet


def balance(sets: Sequence[ScoreSet], n: int | None = 1000, *, seed: int | None = None) -> list[ScoreSet]:
    """Truncate or repeat each set to exactly ``n`` rows (``None`` or ``0`` keeps them as they are).

    Truncation keeps the first ``n`` rows; repetition cycles through the whole set. With a
    ``seed`` each set is shuffled first (one permutation per set, reproducible).
    """
    if not n:
        return list(sets)
    if n < 0:
        raise DataError(f"samples per task must be positive, got {n}")
    rng = np.random.default_rng(seed)
    out = []
    for s in sets:
        if len(s) == 0:
            raise DataError(f"{s.source}: task {s.task!r} has no rows to balance")
        order = rng.permutation(len(s)) if seed is not None else np.arange(len(s))
        idx = np.resize(order, n)  # repeats cyclically or truncates
        out.append(s.subset(idx))
    return out
