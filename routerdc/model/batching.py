"""Token-budget batches for inference: sort by token length, pack each batch up to a budget of
padded tokens (rows x the batch's longest query) instead of a fixed number of queries.

A fixed batch of 64 pads every short query to the longest of 64; sorted and packed by tokens,
short queries travel in large batches and long ones in small ones. Used by every engine, the
trainer's evaluation and the embedding caches. Numpy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["DEFAULT_TOKEN_BUDGET", "MAX_BATCH_ROWS", "token_budget_batches"]
# Padded tokens per inference batch (batch rows x its longest query). Measured best on a 2-core
# Zen4 CPU by ``bench/route_speed.py --budgets`` (see README); configurable everywhere it is used.
DEFAULT_TOKEN_BUDGET = 2048
MAX_BATCH_ROWS = 256


def token_budget_batches(lengths: Sequence[int], token_budget: int = DEFAULT_TOKEN_BUDGET,
                         max_rows: int = MAX_BATCH_ROWS) -> list[list[int]]:
    """Index batches for inference: sorted by length, each packed up to ``token_budget`` padded
    tokens (its row count times its longest query), at most ``max_rows`` rows.

    A query longer than the budget gets a batch of its own. Every index appears exactly once.
    """
    if token_budget < 1 or max_rows < 1:
        raise ValueError(f"token_budget and max_rows must be >= 1, got {token_budget}, {max_rows}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(lens, kind="stable")
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order.tolist():
        # sorted ascending: the new query is the longest of the batch it joins
        if current and ((len(current) + 1) * int(lens[i]) > token_budget or len(current) >= max_rows):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
