"""Batching: length-aware batch orders and dynamic-padding collation.

The official RouterDC code pads every query to 512 tokens. Here a batch is padded only to its
longest query, and the training order groups queries of similar length: each window of
``window * batch_size`` shuffled indices is sorted by length, cut into batches, and the batches
are shuffled. ``window = 1`` gives plain random batches (still dynamically padded).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, window: int = 4, generator: torch.Generator | None = None,
) -> Iterator[list[int]]:
    """Endless stream of index batches, epoch after epoch, grouped by length within windows.

    Every index appears once per epoch; the last, smaller batch of an epoch is dropped only
    when the data are larger than one batch (so the batch size stays fixed, as in the paper).
    """
    n = len(lengths)
    if n == 0:
        raise ValueError("cannot batch an empty data set")
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size and window must be >= 1, got {batch_size}, {window}")
    lengths_arr = np.asarray(lengths)
    bs = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=generator).numpy()
        usable = (n // bs) * bs
        perm = perm[:usable]
        chunk = bs * window
        batches: list[np.ndarray] = []
        for start in range(0, usable, chunk):
            part = perm[start:start + chunk]
            if window > 1:
                part = part[np.argsort(lengths_arr[part], kind="stable")]
            batches.extend(part[i:i + bs] for i in range(0, len(part), bs))
        for j in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[j].tolist()


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Index batches in ascending length order, for inference (minimal padding)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


class Collator:
    """Pads pre-tokenised queries to the longest in the batch."""

    def __init__(self, tokenizer: Any, input_ids: Sequence[Sequence[int]]) -> None:
        self.tokenizer = tokenizer
        self.input_ids = input_ids

    def __call__(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer.pad({"input_ids": [list(self.input_ids[i]) for i in index]},
                                 padding="longest", return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def pretokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated from the tokenizer's truncation side to ``max_length``."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length,
                    return_attention_mask=False, return_token_type_ids=False)
    return [list(ids) for ids in enc["input_ids"]]
