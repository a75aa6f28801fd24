"""Sweep the cost weight lambda: quality and total cost of routers, single LLMs, the oracle and k-NN
on test sets that record costs (RouterBench), with the AIQ of each (:mod:`routerdc.evaluate.cost_curve`).

``python -m routerdc evaluate --cost-sweep N`` writes this. Every method is judged on the same
pooled test queries: quality is the mean value of the chosen LLMs (0/1 or pass rate), cost the sum
of the chosen LLMs' recorded costs.

* a RouterDC router: ``argmax_t sim + b_t - lambda * c_t`` for N lambdas (:func:`cost_weights`);
* each single LLM: one point; the **zero router** is their hull;
* the oracle: per query the cheapest LLM among the best ones (one point);
* k-NN (the untrained encoder's neighbours' mean scores s_t): ``argmax_t s_t - lambda * c_t``;
* the per-task baseline (each query's task given; s_t its task's mean value of LLM t on the
  training rows, :class:`routerdc.evaluate.baselines.TaskRouter`): ``argmax_t s_t - lambda * c_t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from routerdc.evaluate.cost_curve import CostCurve, cost_to_match, point
from routerdc.data import ScoreSet
from routerdc.evaluate.metrics import query_values
from routerdc.routing import RouterConfig, normalized_costs, route_embeddings, similarities

__all__ = ["TASK_CURVE_LABEL", "SweepResult", "cost_weights", "pooled", "sweep_scores", "sweep"]

TASK_CURVE_LABEL = "per-task router (each task's training means, task given)"


def pooled(test_sets: Sequence[ScoreSet], llms: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, costs)``, both ``(n, T)``, over all test queries; every set must record costs."""
    missing = [s.source or s.task for s in test_sets if s.costs is None]
    if missing:
        raise ValueError(f"a cost sweep needs recorded costs; none in {missing}")
    sets = [s.align(llms) for s in test_sets]
    return (np.concatenate([query_values(s.scores, s.metric) for s in sets]),
            np.concatenate([s.costs for s in sets]).astype(np.float64))  # type: ignore[misc]


def cost_weights(scores: np.ndarray, costs: Sequence[float], n: int) -> np.ndarray:
    """``n`` lambdas from 0 to the first at which every query goes to the cheapest LLM: 0, then a
    geometric grid up to ``spread / c_min+``, where ``spread`` is the largest score gap to the
    cheapest LLM and ``c_min+`` the smallest positive normalised cost."""
    if n < 2:
        raise ValueError(f"a sweep needs at least 2 cost weights, got {n}")
    c = normalized_costs(costs)
    cheapest = int(np.argmin(c))
    gap = float(np.max(scores - scores[:, [cheapest]])) if len(scores) else 0.0
    positive = c[c > 0]
    if gap <= 0 or positive.size == 0:
        return np.linspace(0.0, 1.0, n)
    top = 1.01 * gap / float(positive.min())
    return np.concatenate([[0.0], np.geomspace(top * 1e-3, top, n - 1)])


def sweep_scores(scores: np.ndarray, costs: Sequence[float], lambdas: Sequence[float], values: np.ndarray,
                 query_costs: np.ndarray, label: str) -> CostCurve:
    """The points of ``argmax_t scores - lambda * c_t`` for each lambda (``scores`` ``(n, T)``)."""
    c = normalized_costs(costs)
    pts = [point(values, query_costs, np.argmax(scores - np.float32(lam) * c, axis=1)) for lam in lambdas]
    return CostCurve(label, np.asarray(pts), tuple(float(x) for x in lambdas))


@dataclass(frozen=True)
class SweepResult:
    """The curves, the fleet's cost range and the summary per method."""

    curves: tuple[CostCurve, ...]
    llm_points: dict[str, tuple[float, float]]
    c_min: float
    c_max: float

    def best_single(self) -> tuple[str, float, float]:
        name = max(self.llm_points, key=lambda n: self.llm_points[n][1])
        return name, *self.llm_points[name]

    def summary(self) -> list[dict[str, Any]]:
        """Per method: AIQ, best quality, and the lowest cost at which it matches the best single LLM."""
        name, cost, quality = self.best_single()
        zero = CostCurve("zero router (single LLMs mixed at random)", np.asarray(list(self.llm_points.values())))
        rows = []
        for curve in (zero, *self.curves):
            match = cost_to_match(curve.points, quality)
            rows.append({"method": curve.label, "AIQ": round(curve.aiq(self.c_min, self.c_max), 4),
                         "best quality": round(float(curve.points[:, 1].max()), 4),
                         "cost to match the best LLM": None if match is None else round(match, 4),
                         "share of its cost": None if match is None else round(match / cost, 3)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        name, cost, quality = self.best_single()
        return {"fleet_cost_range": [self.c_min, self.c_max],
                "best_single_llm": {"llm": name, "total_cost": cost, "quality": quality},
                "single_llms": {n: {"total_cost": c, "quality": q} for n, (c, q) in self.llm_points.items()},
                "curves": [{"label": c.label, "cost_weights": list(c.cost_weights),
                            "points": [{"total_cost": float(x), "quality": float(y)} for x, y in c.points]}
                           for c in self.curves],
                "summary": self.summary()}

    def to_markdown(self) -> str:
        """The summary as a table (:func:`routerdc.evaluate.table.to_markdown`), after a line on the fleet."""
        import pandas as pd

        from routerdc.evaluate.table import to_markdown

        name, cost, quality = self.best_single()
        df = pd.DataFrame([{"AIQ": r["AIQ"], "best quality": r["best quality"],
                            "cost to match the best LLM ($)": r["cost to match the best LLM"],
                            "share of its cost (%)": None if r["share of its cost"] is None
                            else 100 * r["share of its cost"]} for r in self.summary()],
                          index=pd.Index([r["method"] for r in self.summary()], name="method"), dtype=float)
        return (f"Fleet cost range ${self.c_min:.3f} to ${self.c_max:.3f} (total over the test queries); "
                f"best single LLM {name}: quality {quality:.3f} at ${cost:.3f}.\n\n" + to_markdown(df, digits=3))


def sweep(test_sets: Sequence[ScoreSet], routers: Mapping[str, tuple[RouterConfig, np.ndarray, list[np.ndarray]]],
          *, n: int = 25, knn_scores: Sequence[np.ndarray] | None = None,
          task_scores: Sequence[np.ndarray] | None = None) -> SweepResult:
    """Sweep every router, given as ``label -> (config, LLM keys, test embeddings per set[, novelty
    bank])`` (the bank is needed by a router with the novelty fallback); the single LLMs, the oracle
    and (with their predicted scores per set) k-NN and the per-task baseline come along."""
    if not routers:
        raise ValueError("no router to sweep")
    first = next(iter(routers.values()))[0]
    llms = first.llm_names
    values, qcost = pooled(test_sets, llms)
    llm_points = {name: point(values, qcost, np.full(len(values), t)) for t, name in enumerate(llms)}
    totals = [c for c, _ in llm_points.values()]
    curves = []
    for label, (config, keys, embs, *rest) in routers.items():
        if config.llm_cost is None:
            raise ValueError(f"{label}: the router has no LLM costs (llm_cost); set them with `python -m routerdc costs`")
        if tuple(config.llm_names) != tuple(llms):
            raise ValueError(f"{label}: its LLMs differ from {label!r}'s first router's")
        sims = np.concatenate([similarities(e, keys, config.similarity) for e in embs])
        scores = sims + (np.asarray(config.llm_bias, dtype=np.float32) if config.llm_bias else 0.0)
        lambdas = cost_weights(scores, config.llm_cost, n)
        if not config.novelty:
            curves.append(sweep_scores(scores, config.llm_cost, lambdas, values, qcost, label))
            continue
        emb = np.concatenate(embs)  # the novelty fallback: the one routing rule at each lambda
        pts = [point(values, qcost, route_embeddings(emb, keys, config, cost_weight=float(lam),
                                                     bank=rest[0] if rest else None).choice) for lam in lambdas]
        curves.append(CostCurve(label, np.asarray(pts), tuple(float(x) for x in lambdas)))
    best = values.max(axis=1, keepdims=True)
    oracle = np.argmin(np.where(values >= best, qcost, np.inf), axis=1)
    curves.append(CostCurve("oracle (cheapest of the best LLMs per query)", np.asarray([point(values, qcost, oracle)])))
    for label, given in (("k-NN router (k=10)", knn_scores), (TASK_CURVE_LABEL, task_scores)):
        if given is not None:
            pred = np.concatenate(list(given))
            curves.append(sweep_scores(pred, first.llm_cost, cost_weights(pred, first.llm_cost, n), values, qcost,
                                       label))
    return SweepResult(tuple(curves), llm_points, float(min(totals)), float(max(totals)))
