"""scripts/nested_q_study.py's choice of the novelty quantile: the smallest q of the grid at which
the novelty fallback is no worse than the fallback LLM on every inner held-out task."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from nested_q_study import choose_q  # noqa: E402

GRID = (0.05, 0.2, 0.5, 1.0)


def _fold(task: str, fallback: float, by_q: dict[float, float]) -> dict:
    """An inner fold's result: the held-out ``task``'s fallback accuracy and (g)'s at each q."""
    return {"tasks": {task: {"fallback": fallback, "g": {f"{q:g}": v for q, v in by_q.items()}}}}


def test_choose_q_takes_the_smallest_q_that_meets_the_goal_on_every_fold():
    inner = {"a": _fold("a", 50.0, {0.05: 49.0, 0.2: 50.0, 0.5: 51.0, 1.0: 50.0}),
             "b": _fold("b", 30.0, {0.05: 31.0, 0.2: 29.9, 0.5: 30.0, 1.0: 30.0})}
    assert choose_q(inner, GRID) == 0.5  # 0.2 meets fold a but not b


def test_choose_q_falls_back_to_the_largest_q_when_none_meets_it():
    inner = {"a": _fold("a", 50.0, {0.05: 40.0, 0.2: 41.0, 0.5: 42.0, 1.0: 49.0})}
    assert choose_q(inner, GRID) == 1.0
