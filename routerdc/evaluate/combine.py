"""Ways to combine a router's scores with other evidence, each fitted on training rows only.

All work on per-query scores ``(n, T)`` (similarity + offsets, the routing rule's logits times
tau) and per-query values ``(n, T)`` (:func:`routerdc.evaluate.metrics.query_values`), in numpy:

* **Confidence fallback**: when the choice leads the runner-up by less than a margin m,

      choice(x) = t_fallback   if  s_(1)(x) - s_(2)(x) < m,   else argmax_t s_t(x),

  with t_fallback the LLM with the best training-set average (a user's default LLM) and m fitted
  to maximise the training-set average (:func:`fit_fallback_margin`).
* **k-NN combination**: a convex mix of the router's probabilities and the mean value of each LLM
  over the query's k nearest training queries,

      q_t(x) = (1 - a) p(t | x) + a * mean_{x' in kNN(x)} value_t(x'),

  with a fitted on training rows whose neighbours exclude the row itself (:func:`knn_values`).
* **Novelty fallback**: route to t_fallback when the query is far from every training query,

      choice(x) = t_fallback   if  max_{x'} cos(E(x), E(x')) < r_q,   else the router's choice,

  with r_q the q-quantile of the training queries' own nearest-neighbour similarities (each one's
  neighbours excluding itself; :func:`nearest_similarity`). It needs no labels, so it cannot be
  fitted to the training average (which an in-distribution router always wins): q is fixed a priori.
* **Seed ensembles**: the mean of several routers' probabilities (:func:`ensemble_probs`).

Scores are always compared per task and averaged over tasks, as the training-set average is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from routerdc.novelty import nearest_similarity  # re-exported: the routing rule's own

__all__ = ["best_llm", "ensemble_probs", "fallback_choices", "fit_fallback_margin", "fit_knn_weight",
           "knn_mix_choices", "knn_values", "nearest_similarity", "novelty_choices", "task_average", "top2_margin"]


def task_average(values: Sequence[np.ndarray], choices: Sequence[np.ndarray]) -> float:
    """Mean over tasks of the mean value of the chosen LLM, in percent."""
    accs = [v[np.arange(len(v)), c].mean() for v, c in zip(values, choices) if len(v)]
    if not accs:
        raise ValueError("no queries")
    return float(np.mean(accs) * 100.0)


def best_llm(values: Sequence[np.ndarray]) -> int:
    """The LLM with the best training-set average (mean over tasks of its mean value)."""
    return int(np.mean([v.mean(axis=0) for v in values if len(v)], axis=0).argmax())


def top2_margin(scores: np.ndarray) -> np.ndarray:
    """``s_(1) - s_(2)`` per query (0 for a single LLM's inf-free rows with one column: inf)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[1] < 2:
        return np.full(len(s), np.inf)
    top = np.sort(s, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def fallback_choices(scores: np.ndarray, margin: float, fallback: int) -> np.ndarray:
    """The argmax, except ``fallback`` where the top-two margin is below ``margin``."""
    s = np.asarray(scores)
    return np.where(top2_margin(s) < margin, fallback, s.argmax(axis=1)).astype(np.int64)


def fit_fallback_margin(scores: Sequence[np.ndarray], values: Sequence[np.ndarray], fallback: int,
                        n_grid: int = 101) -> float:
    """The margin m maximising the training-set average of :func:`fallback_choices` (0: never fall
    back), over a grid of the training margins' quantiles; the smallest best m on ties."""
    margins = np.concatenate([top2_margin(s) for s in scores])
    grid = np.unique(np.concatenate([[0.0], np.quantile(margins[np.isfinite(margins)], np.linspace(0, 1, n_grid))]))
    best_m, best = 0.0, -np.inf
    for m in grid:
        avg = task_average(values, [fallback_choices(s, m, fallback) for s in scores])
        if avg > best + 1e-9:
            best_m, best = float(m), avg
    return best_m


def knn_values(train_emb: np.ndarray, train_values: np.ndarray, emb: np.ndarray, k: int = 10,
               exclude_self: bool = False) -> np.ndarray:
    """Mean value of each LLM over each query's ``k`` nearest training queries (cosine), ``(n, T)``.
    ``exclude_self``: ``emb`` are the training queries themselves; each one's own row is skipped."""
    a = np.asarray(train_emb, dtype=np.float32)
    b = np.asarray(emb, dtype=np.float32)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(b), train_values.shape[1]), dtype=np.float64)
    for start in range(0, len(b), 1024):
        sim = b[start:start + 1024] @ a.T
        if exclude_self:
            sim[np.arange(sim.shape[0]), np.arange(start, start + sim.shape[0])] = -np.inf
        idx = np.argpartition(-sim, k, axis=1)[:, :k]
        out[start:start + len(sim)] = train_values[idx].mean(axis=1)
    return out


def novelty_choices(choice: np.ndarray, nearest: np.ndarray, threshold: float, fallback: int) -> np.ndarray:
    """``choice``, except ``fallback`` where the nearest training query is less similar than ``threshold``."""
    return np.where(np.asarray(nearest) < threshold, fallback, np.asarray(choice)).astype(np.int64)


def knn_mix_choices(probs: np.ndarray, knn: np.ndarray, weight: float) -> np.ndarray:
    """``argmax_t (1 - a) p_t + a * knn_t``."""
    return ((1.0 - weight) * np.asarray(probs) + weight * np.asarray(knn)).argmax(axis=1).astype(np.int64)


def fit_knn_weight(probs: Sequence[np.ndarray], knn: Sequence[np.ndarray], values: Sequence[np.ndarray],
                   grid: Sequence[float] = tuple(np.round(np.linspace(0, 1, 21), 2))) -> float:
    """The mixing weight a maximising the training-set average (``knn`` from :func:`knn_values` with
    ``exclude_self``); the smallest best a on ties (0: the router alone)."""
    best_a, best = 0.0, -np.inf
    for a in grid:
        avg = task_average(values, [knn_mix_choices(p, q, a) for p, q in zip(probs, knn)])
        if avg > best + 1e-9:
            best_a, best = float(a), avg
    return best_a


def ensemble_probs(probs: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of several routers' probabilities over the same queries and LLMs."""
    if not probs:
        raise ValueError("no routers to ensemble")
    shapes = {np.shape(p) for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"the routers' probabilities must have one shape, got {sorted(shapes)}")
    return np.mean(np.stack(probs), axis=0)
