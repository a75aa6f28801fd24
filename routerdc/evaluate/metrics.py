"""The RouterDC test metric.

RouterDC (Chen et al., NeurIPS 2024) scores a router by the quality of the LLM it picks for
each test query:

* ``"probability"`` tasks (multiple choice, scored by the normalised probability the LLM puts
  on the correct answer): a query counts 1 when the chosen LLM's score is ``> 0`` (the LLM
  answered correctly), else 0;
* ``"multi_attempt"`` tasks (generation, scored by the fraction of sampled attempts that pass):
  the chosen LLM's score counts as is.

The accuracy of a router on a task is the mean of that per-query value, in percent. The results
table over these metrics is :mod:`routerdc.evaluate.table`; :mod:`routerdc.evaluate.evaluator`
evaluates routers with them.
"""

from __future__ import annotations

import numpy as np

from routerdc.data.scoreset import METRICS

ID_AVG = "ID avg"
OOD_AVG = "OOD avg"
RANDOM = "random"
ORACLE = "oracle"
BEST_SINGLE = "best single LLM"

__all__ = [
    "ID_AVG",
    "OOD_AVG",
    "RANDOM",
    "ORACLE",
    "BEST_SINGLE",
    "query_correct",
    "query_values",
    "accuracy",
    "llm_accuracies",
    "random_accuracy",
    "oracle_accuracy",
    "best_llm_targets",
    "expected_calibration_error",
]


def _check_scores(scores: np.ndarray, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be an (n, T) array with T >= 1, got shape {s.shape}")
    return s


def _per_query(s: np.ndarray, metric: str) -> np.ndarray:
    """The per-query value of every LLM: ``(n, T)`` float64 (0/1 for probability tasks)."""
    return (s > 0).astype(np.float64) if metric == "probability" else s


def query_values(scores: np.ndarray, metric: str) -> np.ndarray:
    """The value every LLM would earn on every query, ``(n, T)`` float64: 0/1 for
    ``"probability"`` tasks (score > 0), the score itself for ``"multi_attempt"`` tasks."""
    return _per_query(_check_scores(scores, metric), metric)


def query_correct(scores: np.ndarray, choice: np.ndarray, metric: str) -> np.ndarray:
    """The value of the chosen LLM for each query.

    Args:
        scores: ``(n, T)`` scores, one column per LLM.
        choice: ``(n,)`` integer indices in ``[0, T)``, the LLM chosen for each query.
        metric: ``"probability"`` (1.0 if ``scores[i, choice[i]] > 0`` else 0.0) or
            ``"multi_attempt"`` (``scores[i, choice[i]]`` as is).

    Returns:
        ``(n,)`` float64 array.
    """
    s = _check_scores(scores, metric)
    c = np.asarray(choice)
    if c.ndim != 1 or c.shape[0] != s.shape[0]:
        raise ValueError(f"choice must have shape ({s.shape[0]},), got {c.shape}")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"choice must hold integer LLM indices, got dtype {c.dtype}")
    c = c.astype(np.int64, copy=False)
    if c.size and (c.min() < 0 or c.max() >= s.shape[1]):
        bad = int(np.flatnonzero((c < 0) | (c >= s.shape[1]))[0])
        raise ValueError(
            f"choice[{bad}] = {int(c[bad])} is not an LLM index in [0, {s.shape[1]})"
        )
    picked = s[np.arange(s.shape[0]), c]
    return (picked > 0).astype(np.float64) if metric == "probability" else picked


def accuracy(scores: np.ndarray, choice: np.ndarray, metric: str) -> float:
    """Mean of :func:`query_correct`, in percent (0-100). Raises ValueError on no queries."""
    values = query_correct(scores, choice, metric)
    if values.size == 0:
        raise ValueError("no queries to compute an accuracy over")
    return float(values.mean() * 100.0)


def llm_accuracies(scores: np.ndarray, metric: str) -> np.ndarray:
    """``(T,)`` accuracy in percent of each single LLM (it is chosen for every query)."""
    s = _check_scores(scores, metric)
    if s.shape[0] == 0:
        raise ValueError("no queries to compute an accuracy over")
    return _per_query(s, metric).mean(axis=0) * 100.0


def random_accuracy(scores: np.ndarray, metric: str) -> float:
    """Exact expected accuracy of choosing an LLM uniformly at random per query (percent)."""
    return float(llm_accuracies(scores, metric).mean())


def oracle_accuracy(scores: np.ndarray, metric: str) -> float:
    """Accuracy of the per-query best LLM (percent): any score > 0, or the row maximum."""
    s = _check_scores(scores, metric)
    if s.shape[0] == 0:
        raise ValueError("no queries to compute an accuracy over")
    return float(_per_query(s, metric).max(axis=1).mean() * 100.0)


def best_llm_targets(values: np.ndarray) -> np.ndarray:
    """What the routing probabilities estimate: for each query, the distribution that puts equal
    mass on every LLM whose value (:func:`query_values`) is the query's best, ``(n, T)`` float64
    (rows sum to 1). When all LLMs tie, the row is uniform: no choice is better than another."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] == 0:
        raise ValueError(f"values must be an (n, T) array with T >= 1, got shape {v.shape}")
    best = np.isclose(v, v.max(axis=1, keepdims=True), rtol=0.0, atol=1e-9)
    return best / best.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al., 2017), in percent.

    The confidence of a query is the probability of its chosen LLM, ``max_t p(t|x)``; its
    correctness is ``targets`` at that LLM: the query values (:func:`query_values`: "the routed LLM
    answers correctly") or the best-LLM targets (:func:`best_llm_targets`: 1 when it is the only
    best LLM, 1/k when it is one of k tied best, 0 otherwise). Queries are binned by confidence
    into ``n_bins`` equal-width bins over [0, 1], and

        ECE = sum_bins |bin| / n * | mean correctness - mean confidence |.

    A router whose probabilities mean what they say (of the queries it routes with 80%, it is
    right on 80%) has ECE 0.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if p.ndim != 2 or p.shape != y.shape or p.shape[0] == 0:
        raise ValueError(f"probs {p.shape} and targets {y.shape} must be the same non-empty (n, T) shape")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    choice = p.argmax(axis=1)
    rows = np.arange(len(p))
    conf, correct = p[rows, choice], y[rows, choice]
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / len(p) * 100.0)
