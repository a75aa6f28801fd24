"""The novelty fallback: a query unlike every training query goes to the LLM best on the training data.

A router is trained on a few tasks; on a task it has never seen its similarities say little, and
the user's safest bet is the LLM that was best on average. So the routing rule
(:func:`routerdc.routing.route_embeddings`) overrides the router's choice for a *novel* query:

    choice(x) = argmax_t ( prior_t - lambda * c_t )   if  max_{x' in bank} cos(E(x), E(x')) < r,
                the router's choice                   otherwise,

where the bank is a seeded sample of the training queries' embeddings (``novelty.safetensors``
in the router folder, unit vectors in float16), r (``RouterConfig.novelty_threshold``) the
q-quantile of the bank's own nearest-neighbour similarities (each query's neighbours excluding
itself), prior_t (``RouterConfig.llm_prior``) each LLM's training-set average (the mean over tasks
of its mean score, in [0, 1]) and lambda * c_t the routing-time cost term. At lambda = 0 the
fallback is the LLM with the best training-set average.

The threshold needs no labels, so it cannot be fitted to the training average (which an
in-distribution router always wins): q = :data:`DEFAULT_QUANTILE` was fixed before any test set
was seen. Measured in ``results/beyond.md`` and ``results/loto.md`` (``scripts/beyond_study.py``,
``scripts/loto_study.py``). The probabilities are the router's own either way; ``Routing.novel``
says which choices fell back.

No torch: the app and the ONNX engines route with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["DEFAULT_BANK_SIZE", "DEFAULT_QUANTILE", "NOVELTY_FILE", "NoveltyFit", "bank_bytes", "fallback_index",
           "fit_novelty", "load_bank", "nearest_similarity", "prior_record", "training_prior", "unit_rows"]

NOVELTY_FILE = "novelty.safetensors"
BANK_TENSOR = "bank"
DEFAULT_QUANTILE = 0.05
DEFAULT_BANK_SIZE = 2000  # 2000 x 384 float16 = 1.5 MB; the full bank measured no better (results/beyond_bank2000.md)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), float32."""
    a = np.asarray(x, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def nearest_similarity(bank: np.ndarray, emb: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Each query's cosine similarity to its nearest bank row, ``(n,)`` float64 (``exclude_self``:
    ``emb`` are the bank's own rows; each one's own row is skipped)."""
    a, b = unit_rows(bank), unit_rows(emb)
    if a.ndim != 2 or b.ndim != 2 or (len(b) and a.shape[1] != b.shape[1]):
        raise ValueError(f"query embeddings {b.shape} and the novelty bank {a.shape} must be (n, d) and (m, d)")
    out = np.empty(len(b), dtype=np.float64)
    for start in range(0, len(b), 1024):
        # (m, k) = bank @ queries^T: for one query a plain matrix-vector product; the transposed
        # form (queries @ bank^T) took 4 ms instead of 0.07 per query in multi-threaded OpenBLAS
        sim = a @ b[start:start + 1024].T
        k = sim.shape[1]
        if exclude_self:
            sim[np.arange(start, start + k), np.arange(k)] = -np.inf
        out[start:start + k] = sim.max(axis=0) if sim.shape[0] else -np.inf
    return out


def fallback_index(prior: Sequence[float], normalized_cost: np.ndarray | None, cost_weight: float) -> int:
    """``argmax_t prior_t - lambda * c_t`` (the first LLM on ties)."""
    p = np.asarray(prior, dtype=np.float64)
    if cost_weight > 0 and normalized_cost is not None:
        p = p - float(cost_weight) * np.asarray(normalized_cost, dtype=np.float64)
    return int(np.argmax(p))


def training_prior(values: Sequence[np.ndarray]) -> tuple[float, ...]:
    """Each LLM's training-set average: the mean over tasks of its mean value (``values`` the
    per-query values ``(n, T)`` per task; empty tasks are skipped), rounded to 6 digits."""
    kept = [np.asarray(v) for v in values if len(v)]
    if not kept:
        raise ValueError("no training queries to take the LLMs' training-set averages on")
    return tuple(round(float(p), 6) for p in np.mean([v.mean(axis=0) for v in kept], axis=0))


def prior_record(llm_names: Sequence[str], prior: Sequence[float]) -> dict[str, Any]:
    """The fallback LLM and the prior per LLM, as ``calibration.novelty`` records them."""
    return {"fallback_llm": llm_names[int(np.argmax(prior))], "prior": {n: round(float(p), 6) for n, p in zip(llm_names, prior)}}


@dataclass(frozen=True)
class NoveltyFit:
    """A fitted fallback: the bank (unit rows, float16), the threshold r and the per-LLM prior."""

    bank: np.ndarray
    threshold: float
    prior: tuple[float, ...]
    quantile: float
    seed: int
    n_train: int

    def record(self, llm_names: Sequence[str]) -> dict[str, Any]:
        """What goes under ``calibration.novelty`` in config.json."""
        return {"quantile": self.quantile, "threshold": self.threshold, "bank_size": int(len(self.bank)),
                "n_train_queries": self.n_train, "seed": self.seed, **prior_record(llm_names, self.prior),
                "rule": "argmax_t prior_t - lambda * c_t when the nearest bank query's cosine < threshold"}


def fit_novelty(embs: Sequence[np.ndarray], values: Sequence[np.ndarray], *, quantile: float = DEFAULT_QUANTILE,
                bank_size: int = DEFAULT_BANK_SIZE, seed: int = 0) -> NoveltyFit:
    """Fit the fallback on training rows: ``embs`` the router's query embeddings per task and
    ``values`` the per-query values ``(n, T)`` per task (:func:`routerdc.evaluate.metrics.query_values`)."""
    if not 0 < quantile < 1:
        raise ValueError(f"the novelty quantile must be in (0, 1), got {quantile}")
    if bank_size < 2:
        raise ValueError(f"the novelty bank needs at least 2 queries, got {bank_size}")
    kept = [(e, v) for e, v in zip(embs, values) if len(v)]
    if not kept:
        raise ValueError("no training queries to fit the novelty fallback on")
    all_emb = np.concatenate([e for e, _ in kept])
    if len(all_emb) < 2:
        raise ValueError("the novelty fallback needs at least 2 training queries")
    idx = np.arange(len(all_emb))
    if len(all_emb) > bank_size:
        idx = np.sort(np.random.default_rng(seed).choice(len(all_emb), bank_size, replace=False))
    bank = unit_rows(all_emb[idx]).astype(np.float16)  # what is stored; the threshold is taken on it
    threshold = float(np.quantile(nearest_similarity(bank, bank, exclude_self=True), quantile))
    return NoveltyFit(bank, round(threshold, 6), training_prior([v for _, v in kept]), float(quantile), int(seed),
                      int(len(all_emb)))


def bank_bytes(bank: np.ndarray) -> bytes:
    """The bytes of ``novelty.safetensors`` for ``bank``."""
    from safetensors.numpy import save

    return save({BANK_TENSOR: np.ascontiguousarray(np.asarray(bank, dtype=np.float16))},
                metadata={"format": "routerdc-novelty"})


def load_bank(folder: str | os.PathLike, dim: int | None = None) -> np.ndarray | None:
    """The bank of the router (or ONNX) folder as unit rows, float32; None when it has none.
    :class:`routerdc.checkpoint.CheckpointError` when the file is there but not a bank."""
    from routerdc.checkpoint import CheckpointError

    path = Path(folder) / NOVELTY_FILE
    if not path.exists():
        return None
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a damaged file
        raise CheckpointError(f"{path}: unreadable novelty bank ({type(exc).__name__}: {exc})") from None
    bank = tensors.get(BANK_TENSOR)
    if bank is None or bank.ndim != 2 or len(bank) < 1 or (dim is not None and bank.shape[1] != dim):
        shape = None if bank is None else bank.shape
        raise CheckpointError(f"{path}: the novelty bank must be one (m, {dim or 'd'}) tensor {BANK_TENSOR!r}, "
                              f"got {sorted(tensors)} {shape}")
    if not np.all(np.isfinite(bank)):
        raise CheckpointError(f"{path}: the novelty bank holds non-finite values")
    return unit_rows(bank)
