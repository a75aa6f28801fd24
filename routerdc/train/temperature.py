"""Temperature scaling: routing probabilities that mean what they say.

The contrastive losses train at tau = 1 on cosines, which lie in [-1, 1], so the softmax over
seven LLMs is close to uniform (17% against 16%) even when the choice is right. Temperature
scaling (Guo et al., ICML 2017) fits one scalar tau on training rows so that

    p(t | x) = softmax_t( (sim(E(x), k_t) + b_t) / tau )

estimates the probability that LLM t is the best one for x (ties shared, see
:func:`routerdc.evaluate.metrics.best_llm_targets`). tau minimises the negative log-likelihood of
those targets, averaged per task and then over tasks (as the offsets' training-set average is):

    tau* = argmin_tau 1/|tasks| sum_task mean_{x in task} - sum_t y_t(x) log p_tau(t | x).

One positive scalar divides every logit, so no choice changes, only the probabilities. The fitted
value is stored in the router config as ``calibrated_temperature``, which the routing rule uses
unless a caller passes its own temperature; the record of the fit (NLL and expected calibration
error before and after) goes into the config's ``calibration`` record. It is fitted together with
the offsets, by :func:`routerdc.train.calibration.calibrate_checkpoint` and the fleet changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from routerdc.data import ScoreSet
from routerdc.evaluate.metrics import best_llm_targets, expected_calibration_error, query_values

__all__ = ["TemperatureFit", "fit_temperature", "routing_nll", "softmax", "temperature_fit"]

BOUNDS: tuple[float, float] = (1e-3, 10.0)


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(scores / temperature)`` over the last axis, float64."""
    z = np.asarray(scores, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def routing_nll(scores: Sequence[np.ndarray], targets: Sequence[np.ndarray], temperature: float) -> float:
    """Mean over tasks of the mean cross-entropy ``-sum_t y_t log softmax(scores / tau)_t``."""
    losses = []
    for s, y in zip(scores, targets):
        if len(s):
            z = np.asarray(s, dtype=np.float64) / float(temperature)
            z = z - z.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            losses.append(float(-(np.asarray(y) * logp).sum(axis=1).mean()))
    if not losses:
        raise ValueError("no queries to fit a temperature on")
    return float(np.mean(losses))


def fit_temperature(scores: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                    bounds: tuple[float, float] = BOUNDS) -> float:
    """tau minimising :func:`routing_nll` (a bounded 1-D search over log tau)."""
    from scipy.optimize import minimize_scalar

    if len(scores) != len(targets) or not any(len(s) for s in scores):
        raise ValueError("give one score array and one target array per task, with at least one query")
    for s, y in zip(scores, targets):
        if np.shape(s) != np.shape(y):
            raise ValueError(f"scores {np.shape(s)} and targets {np.shape(y)} must have the same shape")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda lt: routing_nll(scores, targets, float(np.exp(lt))), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted tau and what it did on the rows it was fitted on (NLL in nats, ECE in percent)."""

    temperature: float
    before_temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    n_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rule": "tau minimising the NLL of the best-LLM targets (ties shared) on the "
                                        "training rows, after the offsets; no choice changes"}


def temperature_fit(scores: Sequence[np.ndarray], sets: Sequence[ScoreSet], before: float = 1.0) -> TemperatureFit:
    """Fit tau on ``scores`` (per set, ``(n, T)`` similarity + offsets, columns in the sets' order)."""
    targets = [best_llm_targets(query_values(s.scores, s.metric)) for s in sets]
    tau = fit_temperature(scores, targets)
    flat_s = np.concatenate([np.asarray(s) for s in scores])
    flat_y = np.concatenate(targets)
    return TemperatureFit(
        temperature=round(tau, 6), before_temperature=float(before),
        nll_before=routing_nll(scores, targets, before), nll_after=routing_nll(scores, targets, tau),
        ece_before=expected_calibration_error(softmax(flat_s, before), flat_y),
        ece_after=expected_calibration_error(softmax(flat_s, tau), flat_y), n_queries=len(flat_s))
