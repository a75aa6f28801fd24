"""Batching: length-aware batch orders and dynamic-padding collation.

The official RouterDC code pads every query to 512 tokens. Here a batch is padded only to its
longest query, and the training order groups queries of similar length: each window of
``window * batch_size`` shuffled indices is sorted by length, cut into batches, and the batches
are shuffled. ``window = 1`` gives plain random batches (still dynamically padded). The stream's
position can be saved and restored (:class:`LengthGroupedBatches`), for resumable training.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class LengthGroupedBatches:
    """Endless stream of index batches, epoch after epoch, grouped by length within windows.

    Every index appears once per epoch; the last, smaller batch of an epoch is dropped only
    when the data are larger than one batch (so the batch size stays fixed, as in the paper).

    An epoch's batches are drawn from ``generator`` when its first batch is asked for (two
    ``randperm`` draws: the shuffle, then the order of the batches). :meth:`position` (the
    current epoch's batches in order and how many were given out) and :meth:`restore` make the
    stream resumable exactly: restore the position and the generator's state, and the stream
    goes on as if never stopped (the next epoch is drawn from the restored generator).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, window: int = 4,
                 generator: torch.Generator | None = None) -> None:
        if len(lengths) == 0:
            raise ValueError("cannot batch an empty data set")
        if batch_size < 1 or window < 1:
            raise ValueError(f"batch_size and window must be >= 1, got {batch_size}, {window}")
        self.lengths = np.asarray(lengths)
        self.batch_size = min(batch_size, len(lengths))
        self.window = window
        self.generator = generator
        self._epoch: np.ndarray | None = None  # (batches, batch_size) in the order they are given out
        self._given = 0

    def __iter__(self) -> "LengthGroupedBatches":
        return self

    def __next__(self) -> list[int]:
        if self._epoch is None or self._given >= len(self._epoch):
            self._epoch, self._given = self._draw_epoch(), 0
        batch = self._epoch[self._given]
        self._given += 1
        return batch.tolist()

    def _draw_epoch(self) -> np.ndarray:
        n, bs = len(self.lengths), self.batch_size
        perm = torch.randperm(n, generator=self.generator).numpy()
        usable = (n // bs) * bs
        perm = perm[:usable]
        chunk = bs * self.window
        batches: list[np.ndarray] = []
        for start in range(0, usable, chunk):
            part = perm[start:start + chunk]
            if self.window > 1:
                part = part[np.argsort(self.lengths[part], kind="stable")]
            batches.extend(part[i:i + bs] for i in range(0, len(part), bs))
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return np.stack([batches[j] for j in order]).astype(np.int64)

    def position(self) -> tuple[np.ndarray | None, int]:
        """``(the current epoch's batches, how many of them were given out)``; ``(None, 0)``
        before the first batch."""
        return (None if self._epoch is None else self._epoch.copy()), self._given

    def restore(self, epoch: np.ndarray | None, given: int) -> None:
        """Continue from a :meth:`position` of a stream over the same lengths and batch size
        (checked: shape, index range, ``given``); ValueError when it does not fit."""
        if epoch is None:
            if given != 0:
                raise ValueError(f"sampler position {given} without an epoch")
        else:
            epoch = np.asarray(epoch)
            n = len(self.lengths)
            if (epoch.ndim != 2 or epoch.shape[1] != self.batch_size or epoch.shape[0] != n // self.batch_size
                    or not np.issubdtype(epoch.dtype, np.integer) or epoch.min() < 0 or epoch.max() >= n):
                raise ValueError(f"sampler epoch of shape {tuple(epoch.shape)} does not fit {n} rows in batches "
                                 f"of {self.batch_size}")
            if not 0 <= given <= len(epoch):
                raise ValueError(f"sampler position {given} outside the epoch's {len(epoch)} batches")
            epoch = epoch.astype(np.int64)
        self._epoch, self._given = epoch, given


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, window: int = 4, generator: torch.Generator | None = None,
) -> LengthGroupedBatches:
    """A :class:`LengthGroupedBatches` stream (endless; resumable)."""
    return LengthGroupedBatches(lengths, batch_size, window=window, generator=generator)


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
