"""Pure parts of the app: the embedding map (fit, placement, cache file), figure functions,
query checks and settings. No server, no browser."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from routerdc.inference.embedding_map import EmbeddingMap, fit_map, load_map, map_key, nearest, place, save_map


def _clusters(n=60, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, d)) * 4
    labels = np.arange(n) % 3
    return centres[labels] + rng.normal(size=(n, d)) * 0.3, labels, centres


def test_pca_map_places_a_known_query_on_itself_and_keeps_clusters_apart(tmp_path):
    x, labels, centres = _clusters()
    m = fit_map(x, centres, method="pca")
    assert m.method == "pca" and m.coords.shape == (60, 2) and m.llm_coords.shape == (3, 2)
    xy = m.place(x[:5])
    assert np.allclose(xy, m.coords[:5], atol=1e-3)
    idx, sims = m.neighbours(x[7], k=4)
    assert idx.shape == (1, 4) and (labels[idx[0]] == labels[7]).all() and sims[0, 0] > 0.99
    path = save_map(m, tmp_path / "m.npz", raw=x)
    m2, extra = load_map(path)
    assert np.array_equal(m2.coords, m.coords) and np.array_equal(extra["raw"], x) and m2.method == "pca"


def test_nearest_respects_a_mask_and_place_is_fast():
    x, labels, centres = _clusters(n=3000, d=384)
    m = fit_map(x, centres, method="pca")
    mask = labels == 1
    idx, _ = nearest(x[:2], m.embeddings, k=5, among=mask)
    assert mask[idx].all()
    import time

    t = time.perf_counter()
    for _ in range(20):
        place(x[:1], m.embeddings, m.coords)
    assert (time.perf_counter() - t) / 20 < 0.1  # the 100 ms budget, with room


def test_map_validation_and_keys(tmp_path):
    with pytest.raises(ValueError):
        fit_map(np.zeros((0, 4)), np.ones((2, 4)), method="pca")
    with pytest.raises(ValueError):
        fit_map(np.ones((3, 4)), np.ones((2, 4)), method="tsne")
    with pytest.raises(ValueError):
        EmbeddingMap(np.ones((3, 4)), np.ones((2, 2)), np.ones((1, 2)), "pca")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="unreadable"):
        load_map(tmp_path / "bad.npz")
    assert map_key("a", texts=["x"]) != map_key("a", texts=["y"]) and len(map_key("a")) == 24


@pytest.mark.slow
def test_umap_map_on_real_router_geometry():
    pytest.importorskip("umap")
    x, labels, centres = _clusters(n=150, d=32)
    m = fit_map(x, centres, method="umap")
    assert m.method == "umap" and np.isfinite(m.coords).all()
    # each point's map neighbour is mostly of its own cluster
    d = ((m.coords[:, None] - m.coords[None]) ** 2).sum(-1) + np.eye(len(x)) * 1e9
    assert (labels[d.argmin(1)] == labels).mean() > 0.9


def test_figures():
    from app import plots

    llms = ["org/a", "org/b", "c"]
    fig = plots.routing_bar(llms, np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.4, 0.2]), 1, 1.0)
    assert fig.data[0].marker.color[1] == plots.CHOSEN and list(fig.data[0].x) == ["a", "b", "c"]
    m = plots.map_figure(np.zeros((4, 2)), ["t1", "t1", "t2", "t2"], ["<b>q</b>"] * 4, np.ones((3, 2)), llms,
                         [{"x": 0.0, "y": 1.0, "query": "<script>", "llm": "org/a"}])
    names = [t.name for t in m.data]
    assert names == ["t1", "t2", "LLM embeddings", "your queries"]
    assert "<script>" not in m.data[-1].hovertext[0]
    hist = [{"step": 1, "total": 2.0, "sample_llm": 1.5, "sample_sample": 0.5},
            {"step": 2, "total": 1.8, "sample_llm": 1.4, "sample_sample": 0.4, "test/mmlu": 55.0, "test/avg": 55.0}]
    assert len(plots.loss_figure(hist).data) == 3
    acc = plots.accuracy_figure(hist, {"mmlu": "MMLU"})
    assert [t.name for t in acc.data] == ["MMLU", "average"]
    table = pd.DataFrame({"MMLU": [50.0, 60.0], "ID avg": [50.0, 60.0]}, index=["org/a", "oracle"])
    bars = plots.results_bars(table, highlight=["oracle"])
    assert bars.layout.barmode == "group" and len(bars.data) == 2


def test_check_query():
    import gradio as gr

    from app.common import check_query

    for bad in (None, "", "  \n", "\x00\x01"):
        with pytest.raises(gr.Error):
            check_query(bad)
    with pytest.raises(gr.Error, match="limit"):
        check_query("a" * 100_001)
    q, notes = check_query("hi\x07 there")
    assert q == "hi  there" and "control" in notes[0]
    q, notes = check_query("b" * 100_000)
    assert len(q) == 100_000 and "Long query" in notes[0]
    assert check_query("你好 😀") == ("你好 😀", [])


def test_settings_from_env_and_args(monkeypatch):
    from app.settings import DEFAULT_CHECKPOINT, parse_args

    monkeypatch.setenv("ROUTERDC_PORT", "9999")
    monkeypatch.setenv("ROUTERDC_MODELS_CONFIG", "models.yaml")
    monkeypatch.delenv("ROUTERDC_CHECKPOINT", raising=False)
    s, _ = parse_args([])
    assert s.port == 9999 and s.models_config == "models.yaml" and s.checkpoint == DEFAULT_CHECKPOINT
    s, a = parse_args(["--port", "7000", "--checkpoint", "x", "--host", "0.0.0.0", "--prepare"])
    assert (s.port, s.checkpoint, s.host, a.prepare) == (7000, "x", "0.0.0.0", True)


def test_missing_checkpoint_falls_back_with_a_message(tmp_path, data_dir):
    from app.context import AppContext
    from app.settings import Settings

    s = Settings(checkpoint=str(tmp_path / "absent"), data_dir=str(data_dir), data_files=(), discover=False)
    ctx = AppContext.create(s)
    assert ctx.default_key is None and "not there" in ctx.notes[0] and "Train tab" in ctx.notes[0]
    from app.common import status_markdown

    md = status_markdown(ctx, None)
    assert "none loaded" in md and "Generation backend" in md


def test_app_import_is_light():
    import subprocess
    import sys

    code = "import sys, app; print(int('gradio' in sys.modules), int('torch' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0"]


def test_a_calibrated_copy_reuses_the_map_but_routes_with_its_offsets(minilm_router, tiny_set, tmp_path):
    from app.services.data import DataBank, DataEntry
    from app.services.routers import RouterView
    from routerdc.train.calibration import calibrate_checkpoint
    from routerdc.model.router import RouterDC

    minilm_router.save_pretrained(tmp_path / "plain")
    calibrate_checkpoint(tmp_path / "plain", [tiny_set], output=tmp_path / "cal")
    bank = DataBank([DataEntry("t/train/mmlu", "t", "train", tiny_set, "memory")])
    views = {}
    for name in ("plain", "cal"):
        view = RouterView(name, RouterDC.from_pretrained(tmp_path / name), tmp_path / name)
        view.map.compute(bank, per_set=12, method="pca", cache_dir=str(tmp_path / "cache"))
        assert view.map.emap is not None, view.map.state
        views[name] = view
    assert len(list((tmp_path / "cache" / "maps").glob("*.npz"))) == 1  # one map for both
    assert views["plain"].fingerprint != views["cal"].fingerprint  # the ONNX form differs
    np.testing.assert_array_equal(views["plain"].map.emap.coords, views["cal"].map.emap.coords)
    expected = views["cal"].route_embeddings(views["cal"].map.raw).choice
    np.testing.assert_array_equal(views["cal"].map.routed, expected)  # routed colouring uses the offsets


def test_compact_map_round_trip_is_small_and_close(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(200, 32)).astype(np.float32)
    m = fit_map(raw, rng.normal(size=(3, 32)), method="pca")
    full = save_map(m, tmp_path / "full.npz", raw=raw)
    compact = save_map(m, tmp_path / "compact.npz", compact=True, raw=raw, rows=np.arange(200),
                       files=np.asarray(["a/b.json"] * 200))
    assert compact.stat().st_size < 0.5 * full.stat().st_size
    m2, extra = load_map(compact)
    assert m2.embeddings.dtype == np.float32 and extra["raw"].dtype == np.float32
    np.testing.assert_allclose(m2.embeddings @ m2.embeddings.T, m.embeddings @ m.embeddings.T, atol=2e-3)
    np.testing.assert_allclose(m2.coords, m.coords, rtol=1e-3, atol=1e-3)
    assert list(extra["rows"][:3]) == [0, 1, 2] and str(extra["files"][0]) == "a/b.json"
    q = raw[:5] + 0.01 * rng.normal(size=(5, 32)).astype(np.float32)
    np.testing.assert_array_equal(m2.neighbours(q, k=1)[0], m.neighbours(q, k=1)[0])
    with pytest.raises(ValueError, match="raw"):
        save_map(m, tmp_path / "x.npz", compact=True)


def test_a_router_that_ships_its_map_starts_with_it(minilm_router, tiny_set, tmp_path):
    from app.services.data import DataBank, DataEntry
    from app.services.routers import RouterView
    from routerdc.model.router import RouterDC

    minilm_router.save_pretrained(tmp_path / "r")
    bank = DataBank([DataEntry("t/train/mmlu", "t", "train", tiny_set, str(tmp_path / "data" / "mmlu.json"))],
                    data_dir=str(tmp_path / "data"))
    first = RouterView("r", RouterDC.from_pretrained(tmp_path / "r"), tmp_path / "r")
    first.map.compute(bank, per_set=10, method="pca", cache_dir=str(tmp_path / "cache-1"))
    assert "fitted" in first.map.state
    shipped = first.map.ship(bank)
    assert shipped.parent == tmp_path / "r" / "maps"
    # A fresh clone: the same router files, an empty cache. The map comes from the router's folder.
    again = RouterView("r", RouterDC.from_pretrained(tmp_path / "r"), tmp_path / "r")
    again.map.compute(bank, per_set=10, method="pca", cache_dir=str(tmp_path / "cache-2"))
    assert "shipped with the router" in again.map.state, again.map.state
    assert not (tmp_path / "cache-2" / "maps").exists()
    np.testing.assert_allclose(again.map.emap.coords, first.map.emap.coords, atol=1e-2)
    np.testing.assert_array_equal(again.map.routed, first.map.routed)
    # Another pool (more rows per set) is another map: fitted, not the shipped one.
    other = RouterView("r", RouterDC.from_pretrained(tmp_path / "r"), tmp_path / "r")
    other.map.compute(bank, per_set=11, method="pca", cache_dir=str(tmp_path / "cache-2"))
    assert "fitted" in other.map.state
    # A damaged shipped map is ignored (the map is fitted again), never fatal.
    shipped.write_bytes(b"not a map")
    broken = RouterView("r", RouterDC.from_pretrained(tmp_path / "r"), tmp_path / "r")
    broken.map.compute(bank, per_set=10, method="pca", cache_dir=str(tmp_path / "cache-3"))
    assert broken.map.emap is not None and "fitted" in broken.map.state


def test_the_background_engine_measurement_runs_in_a_separate_low_priority_process(minilm_router, tmp_path):
    from app.services.routers import RouterView, prepare_engine
    from routerdc.inference import onnx_dir
    from routerdc.model.router import RouterDC

    minilm_router.save_pretrained(tmp_path / "r")
    view = RouterView("r", RouterDC.from_pretrained(tmp_path / "r"), tmp_path / "r")
    assert view.engine.engine_name == "torch" and view.engine.decision is None
    msg = prepare_engine(view, str(tmp_path / "cache"), separate_process=True)
    assert msg.startswith("routing on "), msg
    assert view.engine.decision is not None and onnx_dir(str(tmp_path / "cache"), view.fingerprint).is_dir()
    assert "auto: " in view.describe()
    texts = ["What is 2 + 2?", "def add(a, b): return a + b"]
    np.testing.assert_allclose(view.route_embeddings(view.embed(texts)).probs,
                               view.route_embeddings(view.router.embed_texts(texts, project=True)).probs, atol=1e-2)
    # A router folder the child cannot load: a clear message, routing stays on torch.
    broken = RouterView("b", view.router, tmp_path / "absent", fingerprint="0" * 24)
    assert prepare_engine(broken, str(tmp_path / "cache"), separate_process=True).startswith("routing stays on torch")
    assert broken.engine.engine_name == "torch" and broken.engine.decision is None


def _routerbench_view(tmp_path, data_dir, with_costs=True):
    """A router over the 11 RouterBench LLMs (untrained keys: routing is not the point), costed like
    `python -m routerdc costs` does, and the RouterBench MBPP test set (it records costs)."""
    from app.services.routers import RouterView
    from routerdc.data import load_scores
    from routerdc.evaluate.cost_curve import mean_costs
    from routerdc.model.router import RouterDC

    test = load_scores(data_dir / "routerbench" / "routerbench_zs" / "mbpp_test.csv", missing="drop")[0]
    test = test.subset(np.arange(60))
    model = RouterDC.build(list(test.llms), max_length=64)
    if with_costs:
        costs = mean_costs([test])
        model = RouterDC(dataclasses.replace(model.config, llm_cost=tuple(costs[n] for n in test.llms)),
                         model.encoder, model.tokenizer)
    return RouterView("rb", model, tmp_path / "rb", fingerprint="0" * 24), test


def test_the_cost_weight_trades_quality_for_cost_and_is_ignored_without_costs(tmp_path, data_dir):
    from app.tabs.route import _cost_weight

    view, test = _routerbench_view(tmp_path, data_dir)
    emb = view.embed(test.queries)
    cost = np.asarray(view.config.llm_cost)
    totals = [cost[view.route_embeddings(emb, None, lam).choice].sum() for lam in (0.0, 0.2, 0.5, 1.0, 3.0)]
    assert all(b <= a + 1e-12 for a, b in zip(totals, totals[1:])) and totals[-1] < totals[0]
    np.testing.assert_array_equal(view.route_embeddings(emb, None, 0.0).probs, view.route_embeddings(emb).probs)
    assert _cost_weight(view, 0.7) == 0.7
    plain, _ = _routerbench_view(tmp_path, data_dir, with_costs=False)
    notices: list[str] = []
    assert _cost_weight(plain, 0.7, notices) == 0.0 and "no LLM costs" in notices[0]


def test_the_evaluate_cost_curve_has_the_router_the_llms_and_the_oracle(tmp_path, data_dir):
    from app.tabs.evaluate import cost_curve

    view, test = _routerbench_view(tmp_path, data_dir)
    md, fig = cost_curve(view, [test])
    names = [t.name for t in fig.data]
    assert names[0] == "RouterDC (rb)" and "single LLMs" in names and any("oracle" in n for n in names)
    llm_trace = next(t for t in fig.data if t.name == "single LLMs")
    assert len(llm_trace.x) == 11 and len(llm_trace.text) == 11  # every LLM a labelled point
    assert "AIQ" in md and "zero router" in md


def test_a_recorded_answer_shows_the_chosen_llms_recorded_price(data_dir):
    """RouterBench rows carry each LLM's answer and price: the answer box shows both, the price as in the CSV."""
    import types

    from app.services.data import DataEntry
    from app.tabs.route import answer_markdown
    from routerdc.data import load_scores

    s = load_scores(data_dir / "routerbench" / "routerbench_zs" / "mbpp_test.csv", missing="drop")[0]
    entry = DataEntry("routerbench/test/mbpp", "routerbench", "test", s, "mbpp_test.csv")
    col = 3
    md = answer_markdown(types.SimpleNamespace(generation=None), (entry, 0), s.llms[col])
    assert f"Recorded answer of `{s.llms[col]}`" in md and f"recorded price **${float(s.costs[0][col]):.5f}**" in md


def test_the_route_text_says_when_the_probabilities_are_calibrated():
    from app.tabs.route import _margin_text

    probs, sims = np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.2, 0.1])
    llms = ("a/x", "b/y", "c/z")
    assert "fitted on the training data" in _margin_text(llms, probs, sims, 0.05, None, 0.05)
    assert "calibrated tau of this router is 0.05" in _margin_text(llms, probs, sims, 1.0, None, 0.05)
    assert "tau" in _margin_text(llms, probs, sims, 1.0) and "fitted" not in _margin_text(llms, probs, sims, 1.0)


def test_training_service_keeps_the_latest_cancelled_runs_to_continue():
    from app.services.training import Busy, TrainingService

    svc = TrainingService(max_resumable=2)
    for name in ("a", "b", "c"):
        svc.keep_resumable(name, {"run": name})
    assert svc.resumable("a") is None and svc.resumable("c") == {"run": "c"} and svc.resumable(None) is None
    svc.forget_resumable("c")
    assert svc.resumable("c") is None and svc.resumable("b") == {"run": "b"}
    rid, _ = svc.begin(10, "b")
    with pytest.raises(Busy):
        svc.begin(10, "b")
    svc.end(rid)
    svc.end(rid)  # a second end does nothing
    svc.end(svc.begin(10, "b")[0])
