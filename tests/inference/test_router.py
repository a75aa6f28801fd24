"""The inference layer: token-budget batches, load_router and its engines, auto's choice and
cache, CPU features, and the routed API's micro-batcher (real MiniLM, few queries)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from routerdc.inference import ENGINES, EngineUnavailable, Router, load_router
from routerdc.inference import features, select
from routerdc.model.batching import token_budget_batches
from routerdc.routing import route_embeddings
from routerdc.serving.batcher import BatchConfig, MicroBatcher, length_groups

QUERIES = ["What is 2 + 2?", "def add(a, b): return a + b", "x",
           "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳",
           "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " * 3]


@pytest.mark.parametrize("budget,rows", [(1, 8), (40, 8), (200, 3), (10_000, 256)])
def test_token_budget_batches_cover_every_index_within_budget(budget, rows):
    lengths = np.random.default_rng(0).integers(1, 60, size=97).tolist()
    batches = token_budget_batches(lengths, budget, rows)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(97))
    assert [lengths[i] for i in flat] == sorted(lengths)  # sorted by length
    for b in batches:
        assert len(b) <= rows
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


def test_token_budget_batches_refuse_nonsense():
    with pytest.raises(ValueError, match="token_budget"):
        token_budget_batches([3, 4], 0)
    assert token_budget_batches([], 100) == []


def test_embed_texts_token_budget_matches_one_by_one(minilm_router):
    alone = minilm_router.embed_texts(QUERIES, sort_by_length=False, batch_size=1)
    for budget in (8, 64, 4096):
        np.testing.assert_allclose(minilm_router.embed_texts(QUERIES, token_budget=budget), alone, atol=2e-5)


@pytest.fixture(scope="module")
def saved_router(_minilm_base, tmp_path_factory):
    return _minilm_base.save_pretrained(tmp_path_factory.mktemp("inference") / "router", include_encoder=False)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_load_router_engines_route_like_the_model(engine, saved_router, minilm_router, tmp_path):
    router = load_router(saved_router, engine, "cpu", cache_dir=tmp_path, model=minilm_router)
    assert isinstance(router, Router) and router.engine_name == engine
    assert router.llm_names == minilm_router.config.llm_names and router.config == minilm_router.config
    want = minilm_router.route(QUERIES)
    got = router.route(QUERIES)
    np.testing.assert_array_equal(got.choice, want.choice)
    np.testing.assert_allclose(got.probs, want.probs, atol=1e-5)
    emb = router.embed(QUERIES)
    assert emb.shape == (len(QUERIES), router.dim) and emb.dtype == np.float32
    # one routing rule: the Router's is routing.route_embeddings over its keys
    np.testing.assert_array_equal(router.route_embeddings(emb, 0.1).probs,
                                  route_embeddings(emb, router.keys, router.config, 0.1).probs)
    assert router.route([]).probs.shape == (0, len(router.llm_names))


def test_load_router_refuses_unknown_and_unsupported_engines(saved_router, minilm_router, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="engine must be one of"):
        load_router(saved_router, "tensorrt", "cpu", cache_dir=tmp_path)
    monkeypatch.setattr(features, "cpu_features", lambda: features.CpuFeatures("old CPU", 2, frozenset({"avx2"})))
    monkeypatch.setattr("routerdc.inference.engines.cpu_features", features.cpu_features)
    with pytest.raises(EngineUnavailable, match="neither AMX-BF16 nor AVX512-BF16"):
        load_router(saved_router, "torch-bf16", "cpu", cache_dir=tmp_path, model=minilm_router)
    with pytest.raises(EngineUnavailable, match="CPU only"):
        load_router(saved_router, "onnx", "cuda", cache_dir=tmp_path, model=minilm_router)


def test_cpu_flags_are_read_not_assumed():
    model, flags = features._read_flags("processor: 0\nmodel name : Test CPU\nflags : fpu avx2 avx512_bf16 avx512_vnni\n")
    f = features.CpuFeatures(model, 2, flags)
    assert model == "Test CPU" and f.bf16 and f.int8 and "avx512_bf16" in f.summary()
    plain = features.CpuFeatures("x", 1, frozenset({"avx2"}))
    assert not plain.bf16 and not plain.int8
    assert features.machine_key("cpu") != features.machine_key("cuda")


def test_pick_takes_the_fastest_engine_that_agrees():
    trials = [select.Trial("torch", True, 10.0, 1.0, 0.0), select.Trial("int8", False, 30.0, 0.97, 0.2, "agrees on 97%"),
              select.Trial("onnx", True, 15.0, 1.0, 1e-6), select.Trial("torch-bf16", False, note="no bf16")]
    d = select.pick(trials, "probe")
    assert d.engine == "onnx" and "1.50x torch fp32" in d.reason and "int8 30 q/s rejected" in d.reason
    assert select.Decision.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_measure_times_the_qualifying_engines_in_interleaved_rounds_and_keeps_each_ones_best(
        saved_router, minilm_router, tmp_path, monkeypatch):
    from routerdc.inference.engines import Sources

    speeds = {"torch": [10.0, 40.0, 20.0], "onnx": [30.0, 25.0, 35.0]}  # q/s of each call, in order
    calls = []

    def scripted(engine, texts, token_budget):
        calls.append(engine.name)
        return engine.embed(texts, token_budget=token_budget), speeds[engine.name][calls.count(engine.name) - 1]

    monkeypatch.setattr(select, "_timed_embed", scripted)
    sources = Sources(saved_router, device="cpu", threads=0, onnx_dir=tmp_path / "onnx", model=minilm_router)
    trials = {t.engine: t for t in select.measure(sources, QUERIES, ("torch", "onnx"), rounds=3)}
    assert calls == ["torch", "onnx", "torch", "onnx", "torch", "onnx"]  # one timing each, then 2 interleaved rounds
    assert trials["torch"].queries_per_second == 40.0 and trials["onnx"].queries_per_second == 35.0
    assert select.pick(list(trials.values()), "probe").engine == "torch"  # onnx led after the first round only
    calls.clear()
    assert [t.queries_per_second for t in select.measure(sources, QUERIES, ("torch",), rounds=3)] == [10.0]
    assert calls == ["torch"]  # nothing to choose between: no more rounds


def test_auto_measures_once_and_caches_with_the_cpu_flags(saved_router, minilm_router, tmp_path, monkeypatch):
    monkeypatch.setattr(select, "probe_texts", lambda data_dir=None: (QUERIES, "5 test queries"))
    router = load_router(saved_router, "auto", "cpu", cache_dir=tmp_path, model=minilm_router,
                         candidates=("torch", "int8"))
    assert router.engine_name in ("torch", "int8") and router.reason.startswith("auto: ")
    [path] = (tmp_path / "engines").glob("*.json")
    record = json.loads(path.read_text())
    assert record["engine"] == router.engine_name and record["cpu"]["flags"] == sorted(features.cpu_features().flags)
    assert {t["engine"] for t in record["trials"]} == {"torch", "int8"}
    monkeypatch.setattr(select, "measure", lambda *a, **k: pytest.fail("measured again"))
    again = load_router(saved_router, "auto", "cpu", cache_dir=tmp_path, model=minilm_router,
                        candidates=("torch", "int8"))
    assert again.engine_name == router.engine_name and "decision cached" in again.reason
    path.write_text("{not json")  # a damaged decision is measured again, not an error
    monkeypatch.setattr(select, "measure", lambda *a, **k: [select.Trial("torch", True, 5.0, 1.0, 0.0)])
    assert load_router(saved_router, "auto", "cpu", cache_dir=tmp_path, model=minilm_router,
                       candidates=("torch", "int8")).engine_name == "torch"
    with pytest.raises(ValueError, match="unknown engines"):
        load_router(saved_router, "auto", "cpu", cache_dir=tmp_path, model=minilm_router, candidates=("tpu",))
    assert set(ENGINES) == {"torch", "torch-bf16", "torch-bf16-checked", "int8", "onnx", "onnx-int8"}


class _Counting:
    """The real router, counting its forward passes."""

    def __init__(self, router):
        self.router, self.calls, self.config = router, [], router.config

    def route(self, texts):
        self.calls.append(len(texts))
        return self.router.route(texts)


def test_micro_batcher_gathers_concurrent_queries(minilm_router):
    counting = _Counting(minilm_router)
    batcher = MicroBatcher(counting, BatchConfig(enabled=True, window_ms=200, max_batch=64, max_pad_ratio=1e6))
    want = minilm_router.route(QUERIES * 2)
    got = [None] * len(want.choice)
    start = threading.Barrier(len(got))

    def client(i, q):
        start.wait()
        got[i] = batcher.route(q)

    threads = [threading.Thread(target=client, args=(i, q)) for i, q in enumerate(QUERIES * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    assert sum(counting.calls) == len(got) and len(counting.calls) < len(got)
    np.testing.assert_allclose(np.concatenate([r.probs for r in got]), want.probs, atol=1e-4)


def test_micro_batcher_alone_waits_at_most_the_window(minilm_router):
    counting = _Counting(minilm_router)
    minilm_router.route(["warm up"])
    t0 = time.perf_counter()
    minilm_router.route(["What is 2 + 2?"])
    direct = time.perf_counter() - t0
    batcher = MicroBatcher(counting, BatchConfig(enabled=True, window_ms=100))
    t0 = time.perf_counter()
    r = batcher.route("What is 2 + 2?")
    waited = time.perf_counter() - t0
    batcher.close()
    assert counting.calls == [1] and r.probs.shape == (1, len(minilm_router.config.llm_names))
    assert waited < direct + 0.1 + 1.0  # the window plus scheduling slack on a shared machine
    off = MicroBatcher(counting, BatchConfig(enabled=False))
    off.route("a")
    assert counting.calls == [1, 1] and off.batches == 1
    with pytest.raises(ValueError, match="window_ms"):
        BatchConfig(window_ms=-1)


def test_cli_route_says_which_engine(saved_router, tmp_path, capsys):
    from routerdc.cli.main import main

    src = tmp_path / "queries.txt"
    src.write_text("\n".join(QUERIES[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "routes.jsonl"
    assert main(["route", "--checkpoint", str(saved_router), "--input", str(src), "--output", str(out),
                 "--engine", "torch", "--verbose", "--token-budget", "64"]) == 0
    assert "routing on engine torch (torch: asked for)" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["query"] for r in rows] == QUERIES[:3]


def test_micro_batching_is_off_by_default_and_splits_batches_by_length(minilm_router):
    # the defaults measured best by bench/api_speed.py (README): on, no window, length groups
    assert (BatchConfig().enabled, BatchConfig().window_ms, BatchConfig().max_pad_ratio) == (True, 0.0, 1.5)
    texts = ["a" * 4, "b" * 400, "c" * 8, "d" * 420, "e" * 6, "f" * 900]
    groups = length_groups(texts, 1.5)
    assert sorted(i for g in groups for i in g) == list(range(len(texts)))
    lens = [len(t.encode()) // 4 + 2 for t in texts]
    assert all(max(lens[i] for i in g) <= 1.5 * min(lens[i] for i in g) for g in groups)
    assert [sorted(g) for g in groups] == [[0, 2, 4], [1, 3], [5]]
    assert length_groups(texts, 1e9) == [[0, 4, 2, 1, 3, 5]]  # one pass for the whole batch
    with pytest.raises(ValueError, match="max_pad_ratio"):
        BatchConfig(max_pad_ratio=0.5)
    counting = _Counting(minilm_router)
    batcher = MicroBatcher(counting, BatchConfig(enabled=True, window_ms=300, max_pad_ratio=1.5))
    got = [None] * len(texts)
    start = threading.Barrier(len(texts))

    def client(i):
        start.wait()
        got[i] = batcher.route(texts[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    want = minilm_router.route(texts)
    np.testing.assert_allclose(np.concatenate([r.probs for r in got]), want.probs, atol=1e-4)
    assert sum(counting.calls) == len(texts) and max(counting.calls) <= 3  # length groups, not one batch of 6
