"""Cost-weighted routing (routing.route_embeddings with a cost weight) and the quality-vs-cost
curve (routerdc.evaluate.cost_curve: upper convex hull, AIQ, cost to match)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from routerdc.evaluate.cost_curve import aiq, cost_to_match, point, upper_hull
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


def test_costs_and_the_cost_sweep_commands_on_routerbench(data_dir, tmp_path):
    """A frozen-encoder router over RouterBench's 11 LLMs gets its costs from the training files,
    routes by cost, and `evaluate --cost-sweep` writes every method's curve and AIQ."""
    import json

    from routerdc.cli.main import main
    from routerdc.data import load_scores, write_jsonl
    from routerdc.evaluate.cost_sweep import TASK_CURVE_LABEL
    from routerdc.evaluate.evaluator import TASK_ROUTER_LABEL
    from routerdc.model.router import RouterDC

    rb = data_dir / "routerbench" / "routerbench_zs"
    train = [s.subset(np.arange(40)) for f in ("arc_challenge_train.csv", "mbpp_train.csv")
             for s in load_scores(rb / f, missing="drop")]
    test = [s.subset(np.arange(30)) for f in ("arc_challenge_test.csv", "winograde_test.csv")
            for s in load_scores(rb / f, missing="drop")]
    write_jsonl(train, tmp_path / "train.jsonl")
    write_jsonl(test, tmp_path / "test.jsonl")
    llms = train[0].llms
    RouterDC.build(llms, seed=0).save_pretrained(tmp_path / "r", include_encoder=False)
    assert main(["costs", "--checkpoint", str(tmp_path / "r"), "--scores", str(tmp_path / "train.jsonl")]) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    expected = np.concatenate([s.costs for s in train]).mean(axis=0)
    np.testing.assert_allclose(cfg["router"]["llm_cost"], expected, rtol=1e-9)
    assert cfg["costs"]["from"] == "recorded costs"
    (tmp_path / "q.txt").write_text("Which planet is closest to the sun?\n", encoding="utf-8")
    huge = tmp_path / "routes.jsonl"
    assert main(["route", "--checkpoint", str(tmp_path / "r"), "--input", str(tmp_path / "q.txt"),
                 "--output", str(huge), "--cost-weight", "1000"]) == 0
    cheapest = llms[int(np.argmin(expected))]
    assert json.loads(huge.read_text())["llm"] == cheapest
    out = tmp_path / "table.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "r"), "--test-files", str(tmp_path / "test.jsonl"),
                 "--train-files", str(tmp_path / "train.jsonl"), "--id-tasks", "arc_challenge", "--baselines",
                 "--cost-sweep", "6", "--output", str(out), "--markdown", str(tmp_path / "table.md")]) == 0
    sweep = json.loads(out.with_suffix(".cost_sweep.json").read_text())
    labels = [c["label"] for c in sweep["curves"]]
    assert labels[0] == "RouterDC" and any(x.startswith("oracle") for x in labels) and "k-NN router (k=10)" in labels
    assert TASK_CURVE_LABEL in labels  # told each test query's task (its file's), fitted on the training rows
    router = sweep["curves"][0]
    assert len(router["points"]) == 6 and router["cost_weights"][0] == 0.0
    costs = [p["total_cost"] for p in router["points"]]
    assert all(b <= a + 1e-12 for a, b in zip(costs, costs[1:]))  # total cost never rises with the weight
    summary = {r["method"]: r for r in sweep["summary"]}
    assert 0 < summary["RouterDC"]["AIQ"] <= 1 and "zero router (single LLMs mixed at random)" in summary
    assert "AIQ" in (tmp_path / "table.cost_sweep.md").read_text()
    assert TASK_ROUTER_LABEL in json.loads(out.read_text())["values"]["rows"]  # the accuracy table's baseline row
    assert main(["route", "--checkpoint", str(tmp_path / "r"), "--input", str(tmp_path / "q.txt"),
                 "--output", str(huge), "--cost-weight", "-1"]) == 2


def test_costs_from_a_models_config_count_an_unpriced_llm_as_free(tmp_path):
    import json

    from routerdc.cli.main import main
    from routerdc.model.router import RouterDC

    RouterDC.build(["a", "b"], seed=0).save_pretrained(tmp_path / "r", include_encoder=False)
    (tmp_path / "m.json").write_text(json.dumps({"models": [
        {"name": "a", "backend": "transformers", "model": "x", "cost_per_1k_input": 1.0, "cost_per_1k_output": 3.0},
        {"name": "b", "backend": "transformers", "model": "y"}]}), encoding="utf-8")
    assert main(["costs", "--checkpoint", str(tmp_path / "r"), "--models-config", str(tmp_path / "m.json"),
                 "--prompt-tokens", "100", "--answer-tokens", "10"]) == 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["router"]["llm_cost"] == pytest.approx([(1.0 * 100 + 3.0 * 10) / 1000, 0.0])
