"""torch-bf16-checked: bf16 embeddings with the near-ties re-encoded in fp32 routes like torch fp32
(the shipped router on real test queries of every task), its bounds come from the probe and are
cached with auto's decision, and the margin arithmetic reads the one routing rule's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routerdc.data import paper_files, read_queries
from routerdc.inference import load_router, select
from routerdc.inference.checked import (MIN_BOUND, SAFETY, CheckedEngine, bounds_from_errors, pair_errors,
                                        score_gaps)
from routerdc.inference.features import cpu_features
from routerdc.routing import RouterConfig, route_embeddings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "checkpoints" / "routerdc-minilm"
PER_TASK = 6
needs_bf16 = pytest.mark.skipif(not cpu_features().bf16, reason="the CPU has neither AMX-BF16 nor AVX512-BF16")


def test_score_gaps_and_pair_errors_are_score_differences():
    cfg = RouterConfig(("a", "b", "c"), temperature=0.05, llm_bias=(0.0, 0.01, -0.02))
    rng = np.random.default_rng(0)
    keys, emb = rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    r = route_embeddings(emb, keys, cfg)
    scores = r.similarities + np.asarray(cfg.llm_bias, dtype=np.float32)
    want = scores[np.arange(5), r.choice][:, None] - scores
    np.testing.assert_allclose(score_gaps(r, cfg.temperature), want, atol=1e-5)
    noisy = route_embeddings(emb + 0.01 * rng.normal(size=emb.shape).astype(np.float32), keys, cfg)
    err = noisy.similarities.astype(np.float64) - r.similarities
    e = pair_errors(noisy, r)
    assert e.shape == (3, 3) and np.allclose(np.diag(e), 0) and np.allclose(e, e.T)
    assert np.isclose(e[0, 1], np.abs(err[:, 0] - err[:, 1]).max())
    b = bounds_from_errors(e)
    assert np.allclose(np.diag(b), 0) and np.all(b[~np.eye(3, dtype=bool)] >= MIN_BOUND)
    assert np.isclose(b[0, 1], max(SAFETY * e[0, 1], MIN_BOUND))


@pytest.fixture(scope="module")
def shipped():
    from routerdc.model.router import RouterDC

    return RouterDC.from_pretrained(SHIPPED)


def _held_out(data_dir) -> tuple[list[str], list[str]]:
    """The last PER_TASK queries of each paper test file (the probe takes every k-th from the first)."""
    queries, tasks = [], []
    for path in paper_files(data_dir)[1]:
        qs = read_queries(path)[-PER_TASK:]
        queries += qs
        tasks += [path.name] * len(qs)
    return queries, tasks


@needs_bf16
def test_checked_engine_routes_like_fp32_on_every_task(shipped, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTERDC_PROBE_PER_TASK", "8")  # the bounds are measured on 64 probe queries
    router = load_router(SHIPPED, "torch-bf16-checked", "cpu", cache_dir=tmp_path, model=shipped, data_dir=data_dir)
    assert isinstance(router.engine, CheckedEngine) and router.engine_name == "torch-bf16-checked"
    ref = load_router(SHIPPED, "torch", "cpu", cache_dir=tmp_path, model=shipped)
    bf16 = load_router(SHIPPED, "torch-bf16", "cpu", cache_dir=tmp_path, model=shipped)
    queries, tasks = _held_out(data_dir)
    want, got = ref.route(queries), router.route(queries)
    t = np.asarray(tasks)
    for task in sorted(set(tasks)):
        np.testing.assert_array_equal(got.choice[t == task], want.choice[t == task], err_msg=task)
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-2)
    # the fallback really ran: the near-ties (most Chinese queries) carry fp32 embeddings, the rest bf16 ones
    engine = router.engine
    assert 0 < engine.rechecked < engine.embedded == len(queries)
    fast = bf16.embed(queries)
    near = engine.near_ties(fast)
    assert near.size == engine.rechecked
    emb = router.embed(queries)
    exact = ref.embed(queries)
    np.testing.assert_allclose(emb[near], exact[near], atol=1e-4)
    far = np.setdiff1d(np.arange(len(queries)), near)
    np.testing.assert_allclose(emb[far], fast[far], atol=1e-6)
    assert not np.allclose(fast[far], exact[far], atol=1e-4)  # bf16 vectors do differ from fp32's


@needs_bf16
def test_auto_measures_the_bounds_and_caches_them(saved_router, minilm_router, tmp_path, monkeypatch):
    queries = ["What is 2 + 2?", "def add(a, b): return a + b", "x", "以下哪个城市是中国的首都？A. 上海 B. 北京",
               "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"]
    monkeypatch.setattr(select, "probe_texts", lambda data_dir=None, per_task=None: (queries, "5 test queries"))
    candidates = ("torch", "torch-bf16", "torch-bf16-checked")
    router = load_router(saved_router, "auto", "cpu", cache_dir=tmp_path, model=minilm_router, candidates=candidates)
    [path] = (tmp_path / "engines").glob("*.json")
    trial = next(t for t in json.loads(path.read_text())["trials"] if t["engine"] == "torch-bf16-checked")
    t = len(minilm_router.config.llm_names)
    assert np.asarray(trial["bounds"]).shape == (t, t) and 0 <= trial["rechecked"] <= 1
    assert trial["agreement"] == 1.0  # on the probes it was calibrated on, by construction
    decision = select.read_decision(path, candidates)
    assert decision is not None and decision.bounds("torch-bf16-checked").shape == (t, t)
    assert select.Decision.from_dict(json.loads(json.dumps(decision.to_dict()))) == decision
    # asked for by name, the checked engine reuses auto's bounds instead of measuring
    monkeypatch.setattr("routerdc.inference.checked.calibrate", lambda *a: pytest.fail("measured again"))
    monkeypatch.setattr(select, "decision_path", lambda *a: path)
    named = load_router(saved_router, "torch-bf16-checked", "cpu", cache_dir=tmp_path, model=minilm_router)
    np.testing.assert_array_equal(named.engine.bounds, np.asarray(trial["bounds"]))
    assert router.route(queries).probs.shape == (len(queries), t)


def test_a_decision_from_before_an_engine_existed_is_measured_again(tmp_path):
    old = select.Decision("onnx", "auto: onnx ...", (select.Trial("torch", True, 10.0, 1.0, 0.0),
                                                    select.Trial("onnx", True, 12.0, 1.0, 1e-7)), "probe")
    path = tmp_path / "d.json"
    path.write_text(json.dumps(old.to_dict()))
    assert select.read_decision(path, ("torch", "onnx")) == old
    assert select.read_decision(path) is None  # torch-bf16-checked (and others) were never tried
    checked = select.Decision("torch-bf16-checked", "auto", (select.Trial("torch", True, 1.0, 1.0, 0.0),
                                                             select.Trial("torch-bf16-checked", True, 2.0)), "p")
    path.write_text(json.dumps(checked.to_dict()))
    assert select.read_decision(path, ("torch", "torch-bf16-checked")) is None  # no bounds: measured again


@pytest.fixture(scope="module")
def saved_router(_minilm_base, tmp_path_factory):
    return _minilm_base.save_pretrained(tmp_path_factory.mktemp("checked") / "router", include_encoder=False)
