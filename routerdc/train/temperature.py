"""Temperature scaling: routing probabilities that mean what they say.

The contrastive losses train at tau = 1 on cosines, which lie in [-1, 1], so the softmax over
seven LLMs is close to uniform (20% against 16%) even when the choice is right. Temperature
scaling (Guo et al., ICML 2017) fits one scalar tau on training rows, after the offsets b_t:

    p(t | x) = softmax_t( (sim(E(x), k_t) + b_t) / tau ).

One positive scalar divides every logit, so **no choice changes**, only the probabilities. What
they are calibrated to (``target``):

* ``"correct"`` (the default): the probability of the chosen LLM, ``max_t p(t|x)``, is the
  probability that the routed LLM answers correctly (its value, see
  :func:`routerdc.evaluate.metrics.query_values`): of the queries routed with 70%, about 70% are
  answered correctly. This is top-label calibration, as in classification, with "the routed LLM
  was right" as the event; tau minimises the binary cross-entropy of that event,

      tau* = argmin_tau 1/|tasks| sum_task mean_x - [c(x) log q(x) + (1 - c(x)) log(1 - q(x))],
      q(x) = max_t p_tau(t | x),  c(x) = value of the chosen LLM on x.

  The other LLMs' probabilities only rank them.
* ``"best"``: ``p(t|x)`` is the probability that t is *the* best LLM for x, ties shared
  (:func:`routerdc.evaluate.metrics.best_llm_targets`), fitted by the NLL of those targets. When
  several LLMs answer a query correctly the credit is split among them, so these probabilities stay
  low on the paper's data, where most queries have several right LLMs.

Both average per task and then over tasks, as the offsets' training-set average does. The fitted
value is stored in the router config as ``calibrated_temperature``, which the routing rule uses
unless a caller passes its own temperature; the record of the fit (its target, the NLL and the
expected calibration error before and after) goes into the config's ``calibration`` record. It is
fitted together with the offsets, by :func:`routerdc.train.calibration.calibrate_checkpoint` and the
fleet changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from routerdc.data import ScoreSet
from routerdc.evaluate.metrics import best_llm_targets, expected_calibration_error, query_values

__all__ = ["TARGETS", "TemperatureFit", "confidence_nll", "fit_temperature", "routing_nll", "softmax",
           "temperature_fit"]

BOUNDS: tuple[float, float] = (1e-3, 10.0)
TARGETS: tuple[str, ...] = ("correct", "best")


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


def confidence_nll(scores: Sequence[np.ndarray], values: Sequence[np.ndarray], temperature: float) -> float:
    """Mean over tasks of the binary cross-entropy of "the chosen LLM is right" (its value, in
    [0, 1]) under the confidence ``max_t softmax(scores / tau)_t``."""
    losses = []
    for s, v in zip(scores, values):
        if len(s):
            p = softmax(s, temperature)
            rows = np.arange(len(p))
            choice = p.argmax(axis=1)
            q = np.clip(p[rows, choice], 1e-9, 1 - 1e-9)
            c = np.clip(np.asarray(v, dtype=np.float64)[rows, choice], 0.0, 1.0)
            losses.append(float(-(c * np.log(q) + (1 - c) * np.log(1 - q)).mean()))
    if not losses:
        raise ValueError("no queries to fit a temperature on")
    return float(np.mean(losses))


def fit_temperature(scores: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                    bounds: tuple[float, float] = BOUNDS, target: str = "best") -> float:
    """tau minimising :func:`routing_nll` (``target="best"``: ``targets`` are best-LLM distributions)
    or :func:`confidence_nll` (``target="correct"``: ``targets`` are the query values), by a bounded
    1-D search over log tau."""
    from scipy.optimize import minimize_scalar

    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if len(scores) != len(targets) or not any(len(s) for s in scores):
        raise ValueError("give one score array and one target array per task, with at least one query")
    for s, y in zip(scores, targets):
        if np.shape(s) != np.shape(y):
            raise ValueError(f"scores {np.shape(s)} and targets {np.shape(y)} must have the same shape")
    loss = routing_nll if target == "best" else confidence_nll
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    res = minimize_scalar(lambda lt: loss(scores, targets, float(np.exp(lt))), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted tau and what it did on the rows it was fitted on: the fitted loss (nats) and the
    expected calibration error (percent) of the chosen LLM's probability, against "the routed LLM is
    right" (``ece_*``) and against "it is the best LLM" (``ece_best_*``)."""

    temperature: float
    before_temperature: float
    target: str
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    ece_best_before: float
    ece_best_after: float
    n_queries: int

    def to_dict(self) -> dict[str, Any]:
        rule = {"correct": "the chosen LLM's probability is the probability that it answers correctly",
                "best": "p(t|x) is the probability that t is the best LLM for x (ties shared)"}[self.target]
        return {**asdict(self), "rule": f"tau fitted on the training rows after the offsets so that {rule}; "
                                        "no choice changes"}


def temperature_fit(scores: Sequence[np.ndarray], sets: Sequence[ScoreSet], before: float = 1.0,
                    target: str = "correct") -> TemperatureFit:
    """Fit tau on ``scores`` (per set, ``(n, T)`` similarity + offsets, columns in the sets' order)."""
    values = [query_values(s.scores, s.metric) for s in sets]
    best = [best_llm_targets(v) for v in values]
    fitted = values if target == "correct" else best
    tau = fit_temperature(scores, fitted, target=target)
    loss = confidence_nll if target == "correct" else routing_nll
    flat_s = np.concatenate([np.asarray(s) for s in scores])
    flat_v, flat_b = np.concatenate(values), np.concatenate(best)
    p0, p1 = softmax(flat_s, before), softmax(flat_s, tau)
    return TemperatureFit(
        temperature=round(tau, 6), before_temperature=float(before), target=target,
        nll_before=loss(scores, fitted, before), nll_after=loss(scores, fitted, tau),
        ece_before=expected_calibration_error(p0, flat_v), ece_after=expected_calibration_error(p1, flat_v),
        ece_best_before=expected_calibration_error(p0, flat_b), ece_best_after=expected_calibration_error(p1, flat_b),
        n_queries=len(flat_s))
