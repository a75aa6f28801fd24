"""The shipped RouterBench router (checkpoints/routerdc-routerbench): it loads, routes RouterBench
test queries among its 11 LLMs with their costs, spends less as the cost weight grows, and, served
without a models config, answers with the chosen LLM's recorded answer and recorded price."""

from __future__ import annotations

import csv
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from serving_support import ROOT, build_router  # noqa: E402

CKPT = ROOT / "checkpoints" / "routerdc-routerbench"
TESTS = [f"routerbench/routerbench_zs/{t}_test.csv" for t in ("arc_challenge", "mbpp", "winograde")]


@pytest.fixture(scope="module")
def shipped():
    from routerdc.inference import load_router

    return load_router(CKPT, "torch")


@pytest.fixture(scope="module")
def test_sets(data_dir):
    from routerdc.data import load_many

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_many([data_dir / f for f in TESTS], missing="drop")


def _csv_row(path: Path, prompt_key: str) -> dict[str, str]:
    """The raw CSV row whose parsed prompt is ``prompt_key`` (read with csv, not routerdc)."""
    import ast

    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if "\n".join(ast.literal_eval(row["prompt"])).split() == prompt_key.split():
                return row
    raise AssertionError("prompt not found")


def test_shipped_router_has_the_fleet_costs_and_is_listed():
    from routerdc.checkpoint import list_routers, read_config

    cfg = read_config(CKPT)
    r = cfg["router"]
    assert len(r["llm_names"]) == 11 and "gpt-4-1106-preview" in r["llm_names"]
    assert len(r["llm_cost"]) == 11 and all(c > 0 for c in r["llm_cost"])
    gpt4 = r["llm_cost"][r["llm_names"].index("gpt-4-1106-preview")]
    assert gpt4 == max(r["llm_cost"])  # the dearest LLM
    assert cfg.get("calibration") and len(r["llm_bias"]) == 11
    assert cfg["encoder_weights"] == "reference"  # frozen encoder: only the keys ship
    assert sum(f.stat().st_size for f in CKPT.rglob("*") if f.is_file()) < 50 * 2**20
    assert CKPT.resolve() in [p.resolve() for p in list_routers(ROOT / "checkpoints", sweep=False)]


def test_shipped_router_routes_routerbench_queries(shipped, test_sets):
    queries = [q for s in test_sets for q in s.queries[:4]]
    out = shipped.route(queries)
    assert out.probs.shape == (len(queries), 11)
    assert np.allclose(out.probs.sum(axis=1), 1.0, atol=1e-4)
    assert len(set(out.choice.tolist())) >= 2  # it does route, not one LLM for all
    cheap = shipped.route(queries, cost_weight=1e3).choice
    names = shipped.config.llm_names
    costs = np.asarray(shipped.config.llm_cost)
    assert set(cheap.tolist()) == {int(np.argmin(costs))}, [names[i] for i in cheap]


def _check_cost_non_increasing(shipped, test_sets):
    from routerdc.evaluate.cost_sweep import cost_weights, pooled
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.routing import route_embeddings, similarities

    cfg = shipped.config
    values, qcost = pooled(test_sets, cfg.llm_names)
    emb = np.concatenate([router_embeddings(shipped, s.queries, key=embedding_key(shipped)) for s in test_sets])
    scores = similarities(emb, shipped.keys, cfg.similarity) + np.asarray(cfg.llm_bias, dtype=np.float32)
    totals = []
    for lam in cost_weights(scores, cfg.llm_cost, 25):
        choice = route_embeddings(emb, shipped.keys, cfg, cost_weight=float(lam)).choice
        totals.append(float(qcost[np.arange(len(choice)), choice].sum()))
    assert all(b <= a + 1e-9 for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < totals[0]


def test_total_cost_is_non_increasing_in_the_cost_weight_on_a_sample(shipped, test_sets):
    """60 test queries (20 per set): fast, in the default run."""
    _check_cost_non_increasing(shipped, [s.subset(np.arange(20)) for s in test_sets])


@pytest.mark.slow
def test_total_cost_is_non_increasing_in_the_cost_weight(shipped, test_sets):
    """All 945 test queries with every score (about 2 minutes on 2 shared cores: they are embedded)."""
    assert sum(len(s) for s in test_sets) == 945
    _check_cost_non_increasing(shipped, test_sets)


def test_recorded_backend_gives_the_answer_and_its_price(data_dir):
    from routerdc.serving.backends import SamplingParams, make_backend
    from routerdc.serving.recorded_fleet import recorded_config_for

    cfg = recorded_config_for(CKPT, data_dir)
    assert len(cfg.models) == 11 and all(m.backend == "recorded" for m in cfg.models)
    from routerdc.data import load_scores

    s = load_scores(data_dir / TESTS[1], missing="drop")[0]
    query = s.queries[5]
    raw = _csv_row(data_dir / TESTS[1], query)
    from routerdc.serving.backends import Outcome

    b = make_backend(cfg.get("claude-v2"), cfg)
    out = Outcome()
    text = "".join(b.stream([{"role": "user", "content": query}], SamplingParams.clamp(b.spec, cfg.limits),
                            outcome=out))
    assert text == s.responses[5][list(s.llms).index("claude-v2")]
    assert text.strip() and text.strip()[:40] in raw["claude-v2|model_response"].replace("\\n", "\n")
    assert out.cost == pytest.approx(float(raw["claude-v2|total_cost"]))
    assert b.price(query) == out.cost


def test_serve_without_a_models_config_answers_with_recorded_answers_and_prices(data_dir, test_sets):
    from fastapi.testclient import TestClient

    from routerdc.serving.server import build_app

    client = TestClient(build_app(str(CKPT), None, engine="torch", data_dir=str(data_dir)))
    s = test_sets[2]
    query = s.queries[7]
    r = client.post("/v1/chat/completions", json={"model": "routerdc", "messages": [{"role": "user", "content": query}]})
    assert r.status_code == 200, r.text
    body = r.json()
    llm = body["routerdc"]["llm"]
    col = list(s.llms).index(llm)
    assert body["routerdc"]["source"] == "recorded"
    assert body["choices"][0]["message"]["content"] == s.responses[7][col]
    assert body["routerdc"]["cost"] == pytest.approx(float(s.costs[7][col]))
    r = client.post("/v1/chat/completions", json={"model": "routerdc", "stream": True,
                                                  "messages": [{"role": "user", "content": query}]})
    assert r.status_code == 200 and '"cost"' in r.text


def test_no_models_config_and_no_recorded_answers_is_a_clear_error(tmp_path, data_dir):
    from routerdc.serving.config import ConfigError
    from routerdc.serving.recorded_fleet import recorded_config_for

    folder = build_router(tmp_path / "router", ["llm-x", "claude-v2"])
    with pytest.raises(ConfigError, match=r"llm-x.*--models-config"):
        recorded_config_for(folder, data_dir)
