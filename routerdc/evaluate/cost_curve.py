"""Quality against cost: a router's operating points, their upper convex hull and RouterBench's AIQ.

A router swept over cost weights lambda (``p(t|x) = softmax((sim + b - lambda * c) / tau)``) gives
one point per lambda: (total cost, quality) on a test set, where quality is the mean value of the
chosen LLMs (:func:`routerdc.evaluate.metrics.query_values`: 0/1 for single-answer tasks, pass rates as is)
and the total cost sums each query's recorded cost of its chosen LLM. Any two points can be mixed
at random, so what a router offers is the **upper convex hull** of its points, made
non-decreasing (paying more never has to cost quality). RouterBench (Hu et al., 2024) scores it by
the **AIQ**, the mean height of that curve over the fleet's cost range::

    AIQ = 1 / (c_max - c_min) * integral_{c_min}^{c_max} hull(c) dc

with c_min, c_max the cheapest and the dearest single LLM's total cost, the hull held flat
beyond its dearest point and 0 below its cheapest. The **zero router** is the hull of the single
LLMs themselves (mixing them at random), the baseline a router must beat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from routerdc.data import ScoreSet

__all__ = ["CostCurve", "aiq", "cost_to_match", "mean_costs", "point", "upper_hull"]


def point(values: np.ndarray, costs: np.ndarray, choice: np.ndarray) -> tuple[float, float]:
    """``(total cost, quality)`` of choosing ``choice[i]`` for query ``i``, from ``(n, T)`` values and costs."""
    rows = np.arange(len(choice))
    return float(costs[rows, choice].sum()), float(values[rows, choice].mean())


def upper_hull(points: np.ndarray) -> np.ndarray:
    """The non-decreasing upper convex hull of ``(cost, quality)`` points, ``(m, 2)`` sorted by cost.

    Only points that no cheaper point matches survive (the Pareto front), then those under the
    chord of their neighbours are dropped (Andrew's monotone chain, upper part).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        raise ValueError("no points")
    p = p[np.lexsort((-p[:, 1], p[:, 0]))]  # by cost, the best quality first among equal costs
    front = [p[0]]
    for x, y in p[1:]:
        if y > front[-1][1]:
            front.append(np.array([x, y]))
    hull: list[np.ndarray] = []
    for q in front:
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (q[1] - y1) - (y2 - y1) * (q[0] - x1) >= 0:  # hull[-1] on or under the chord
                hull.pop()
            else:
                break
        hull.append(q)
    return np.asarray(hull)


def _height(hull: np.ndarray, x: np.ndarray) -> np.ndarray:
    y = np.interp(x, hull[:, 0], hull[:, 1], left=0.0, right=hull[-1, 1])
    return np.where(x < hull[0, 0], 0.0, y)


def aiq(points: np.ndarray, c_min: float, c_max: float) -> float:
    """The mean height of the points' :func:`upper_hull` over ``[c_min, c_max]`` (see the module)."""
    if not c_max > c_min:
        raise ValueError(f"the cost range must not be empty, got [{c_min}, {c_max}]")
    hull = upper_hull(points)
    # Exact for a piecewise-linear curve: evaluate at the range's ends and at every kink inside it,
    # and just before the hull's first point, where the curve steps up from 0.
    kinks = hull[:, 0]
    if kinks[0] > c_min:
        kinks = np.concatenate([[np.nextafter(kinks[0], -np.inf)], kinks])
    xs = np.unique(np.clip(np.concatenate([[c_min, c_max], kinks]), c_min, c_max))
    return float(np.trapezoid(_height(hull, xs), xs) / (c_max - c_min))


def cost_to_match(points: np.ndarray, quality: float) -> float | None:
    """The lowest cost at which the points' hull reaches ``quality`` (interpolated), or None."""
    hull = upper_hull(points)
    if hull[-1, 1] < quality:
        return None
    if hull[0, 1] >= quality:
        return float(hull[0, 0])
    i = int(np.argmax(hull[:, 1] >= quality))
    (x1, y1), (x2, y2) = hull[i - 1], hull[i]
    return float(x1 + (quality - y1) * (x2 - x1) / (y2 - y1))


def mean_costs(sets: Sequence["ScoreSet"]) -> dict[str, float]:
    """Each LLM's mean recorded cost per query over ``sets`` (which must all record costs)."""
    missing = [s.source or s.task for s in sets if s.costs is None]
    if missing or not sets:
        raise ValueError(f"no recorded costs in {missing or 'no files'}")
    llms = sets[0].llms
    total = np.concatenate([s.align(llms).costs for s in sets])  # type: ignore[misc]
    return {n: float(v) for n, v in zip(llms, total.mean(axis=0))}


@dataclass(frozen=True)
class CostCurve:
    """One method's operating points (``(k, 2)``: total cost, quality) with the lambdas that made them."""

    label: str
    points: np.ndarray
    cost_weights: Sequence[float] = ()

    def aiq(self, c_min: float, c_max: float) -> float:
        return aiq(self.points, c_min, c_max)

    def hull(self) -> np.ndarray:
        return upper_hull(self.points)
