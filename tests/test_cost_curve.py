"""Cost-weighted routing (routing.route_embeddings with a cost weight) and the quality-vs-cost
curve (routerdc.cost_curve: upper convex hull, AIQ, cost to match)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from routerdc.cost_curve import aiq, cost_to_match, point, upper_hull
from routerdc.routing import RouterConfig, normalized_costs, route_embeddings


def _router(n_llms: int = 3, **kw) -> tuple[RouterConfig, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    cfg = RouterConfig(llm_names=tuple(f"llm-{i}" for i in range(n_llms)), **kw)
    return cfg, rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(n_llms, 8)).astype(np.float32)


def test_a_zero_cost_weight_is_the_rule_without_costs_bit_for_bit():
    cfg, emb, keys = _router(llm_bias=(0.1, 0.0, -0.1))
    priced = dataclasses.replace(cfg, llm_cost=(0.01, 0.5, 2.0))
    plain = route_embeddings(emb, keys, cfg)
    for lam in (0, 0.0):
        r = route_embeddings(emb, keys, priced, cost_weight=lam)
        assert r.probs.tobytes() == plain.probs.tobytes() and r.cost_weight == 0.0


def test_the_cost_term_follows_the_formula_and_moves_choices_to_cheaper_llms():
    cfg, emb, keys = _router(llm_cost=(1.0, 3.0, 5.0))
    c = normalized_costs(cfg.llm_cost)
    np.testing.assert_allclose(c, [0.0, 0.5, 1.0])
    r = route_embeddings(emb, keys, cfg, temperature=0.5, cost_weight=0.4)
    logits = (r.similarities - 0.4 * c) / 0.5
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(r.probs, expected / expected.sum(1, keepdims=True), rtol=1e-5)
    assert r.cost_weight == pytest.approx(0.4)
    spend = [normalized_costs(cfg.llm_cost)[route_embeddings(emb, keys, cfg, cost_weight=lam).choice].sum()
             for lam in np.linspace(0, 3, 13)]
    assert all(b <= a + 1e-9 for a, b in zip(spend, spend[1:])) and spend[-1] == 0.0  # all on the cheapest


def test_bad_cost_weights_and_costs_are_refused():
    cfg, emb, keys = _router()
    with pytest.raises(ValueError, match="no LLM costs"):
        route_embeddings(emb, keys, cfg, cost_weight=0.5)
    priced = dataclasses.replace(cfg, llm_cost=(1.0, 2.0, 3.0))
    for bad in (-0.1, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="cost weight"):
            route_embeddings(emb, keys, priced, cost_weight=bad)
    with pytest.raises(ValueError, match="llm_cost must hold 3"):
        dataclasses.replace(cfg, llm_cost=(1.0, 2.0))
    with pytest.raises(ValueError, match="llm_cost must hold 3"):
        dataclasses.replace(cfg, llm_cost=(1.0, -2.0, 1.0))
    d = priced.to_dict()
    assert d["llm_cost"] == [1.0, 2.0, 3.0] and RouterConfig.from_dict(d) == priced
    assert "llm_cost" not in cfg.to_dict()  # configs without costs serialise as before


def test_upper_hull_keeps_only_the_concave_non_decreasing_frontier():
    pts = np.array([[1.0, 0.5], [2.0, 0.55], [3.0, 0.8], [4.0, 0.7], [5.0, 0.85], [0.5, 0.2], [3.0, 0.6]])
    hull = upper_hull(pts)
    # (2, .55) lies under the chord (1, .5)-(3, .8); (4, .7) and (3, .6) are dominated.
    np.testing.assert_allclose(hull, [[0.5, 0.2], [1.0, 0.5], [3.0, 0.8], [5.0, 0.85]])


def test_aiq_is_the_mean_height_of_the_hull_over_the_cost_range():
    hull_pts = np.array([[1.0, 0.5], [3.0, 0.8], [5.0, 0.85]])
    # trapezoids on [1, 3] and [3, 5]: (0.5 + 0.8) / 2 * 2 + (0.8 + 0.85) / 2 * 2, over a range of 4
    assert aiq(hull_pts, 1.0, 5.0) == pytest.approx((1.3 + 1.65) / 4)
    # held flat beyond the dearest point, 0 below the cheapest
    assert aiq(hull_pts, 1.0, 7.0) == pytest.approx((1.3 + 1.65 + 0.85 * 2) / 6)
    assert aiq(np.array([[2.0, 0.6]]), 1.0, 3.0) == pytest.approx(0.6 / 2, abs=1e-6)
    with pytest.raises(ValueError, match="cost range"):
        aiq(hull_pts, 2.0, 2.0)
    assert cost_to_match(hull_pts, 0.65) == pytest.approx(2.0)
    assert cost_to_match(hull_pts, 0.4) == pytest.approx(1.0) and cost_to_match(hull_pts, 0.9) is None


def test_point_sums_costs_and_averages_values():
    values = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    costs = np.array([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]])
    assert point(values, costs, np.array([0, 1, 0])) == pytest.approx((12.0, 1.0))
