"""The novelty fallback: its fit, the one routing rule's override, where the bank is stored and
loaded, and every engine, the checked engine, the cost sweep, the fleet edits and the API honouring it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routerdc.checkpoint import CheckpointError, RouterMeta
from routerdc.novelty import NOVELTY_FILE, bank_bytes, fallback_index, fit_novelty, load_bank, nearest_similarity
from routerdc.routing import RouterConfig, normalized_costs, route_embeddings

from tests.conftest import LLMS

ROUTERBENCH = Path(__file__).resolve().parents[2] / "checkpoints" / "routerdc-routerbench"


def _clusters(seed=0, n=40, d=16):
    """Two tight clusters of unit vectors (one per task) and per-query values over 3 LLMs:
    LLM 1 is best on average, LLM 0 best on task A, LLM 2 on task B."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:2]
    embs = [c + 0.05 * rng.normal(size=(n, d)).astype(np.float32) for c in centres]
    values = [np.tile([0.9, 0.8, 0.1], (n, 1)), np.tile([0.1, 0.8, 0.9], (n, 1))]
    return embs, values


def test_fit_takes_the_quantile_of_the_banks_own_neighbours_and_the_training_averages():
    embs, values = _clusters()
    fit = fit_novelty(embs, values, quantile=0.05, bank_size=50, seed=3)
    assert fit.bank.shape == (50, 16) and fit.bank.dtype == np.float16 and fit.n_train == 80
    np.testing.assert_allclose(np.linalg.norm(fit.bank.astype(np.float32), axis=1), 1.0, atol=2e-3)
    own = nearest_similarity(fit.bank, fit.bank, exclude_self=True)
    assert fit.threshold == pytest.approx(np.quantile(own, 0.05), abs=1e-6)
    assert fit.prior == pytest.approx((0.5, 0.8, 0.5))  # the mean over tasks of each LLM's mean value
    again = fit_novelty(embs, values, quantile=0.05, bank_size=50, seed=3)
    assert np.array_equal(again.bank, fit.bank)  # seeded
    assert len(fit_novelty(embs, values, bank_size=1000).bank) == 80  # fewer queries than the bank: all kept
    rec = fit.record(("a", "b", "c"))
    assert rec["fallback_llm"] == "b" and rec["bank_size"] == 50 and rec["quantile"] == 0.05
    for bad in (dict(quantile=0.0), dict(quantile=1.0), dict(bank_size=1)):
        with pytest.raises(ValueError):
            fit_novelty(embs, values, **bad)
    with pytest.raises(ValueError, match="no training queries"):
        fit_novelty([np.zeros((0, 16))], [np.zeros((0, 3))])


def test_the_rule_sends_novel_queries_to_the_prior_and_keeps_the_probabilities():
    embs, values = _clusters()
    fit = fit_novelty(embs, values)
    bank = fit.bank.astype(np.float32)
    keys = np.eye(16, dtype=np.float32)[[0, 2, 1]]  # LLM 0 ~ task A, LLM 2 ~ task B, LLM 1 elsewhere
    plain = RouterConfig(("a", "b", "c"), temperature=0.1, llm_cost=(1.0, 5.0, 0.5))
    cfg = RouterConfig(("a", "b", "c"), temperature=0.1, llm_cost=(1.0, 5.0, 0.5), novelty_threshold=fit.threshold,
                       llm_prior=fit.prior)
    familiar = np.stack([embs[0][0], embs[1][0]])
    novel = np.eye(16, dtype=np.float32)[[2]] + 0.3 * np.eye(16, dtype=np.float32)[[5]]  # far from both clusters
    emb = np.concatenate([familiar, novel])
    r, p = route_embeddings(emb, keys, cfg, bank=bank), route_embeddings(emb, keys, plain)
    np.testing.assert_array_equal(r.probs, p.probs)  # the probabilities are the router's own
    assert list(r.novel) == [False, False, True]
    assert r.llms == ["a", "c", "b"] and p.llms == ["a", "c", "b"][:2] + [p.llms[2]]
    assert list(r.router_choice) == list(p.choice)
    rec = r.records(["x", "y", "z"])[2]
    assert rec["llm"] == "b" and rec["novelty"]["novel"] and rec["novelty"]["fallback_llm"] == "b"
    assert rec["novelty"]["nearest_similarity"] < fit.threshold <= r.novelty_record(0)["nearest_similarity"]
    # Under a cost weight the fallback is argmax prior - lambda * c: the dear LLM b loses to the cheap c.
    lam = 0.5
    assert fallback_index(fit.prior, normalized_costs(cfg.llm_cost), lam) == 2
    assert route_embeddings(emb, keys, cfg, cost_weight=lam, bank=bank).llms[2] == "c"
    # One row at a time gives the same decisions (the API's batcher slices them).
    assert [r.rows([i]).llms[0] for i in range(3)] == r.llms and r.rows([2]).novel[0]
    with pytest.raises(ValueError, match="needs its bank"):
        route_embeddings(emb, keys, cfg)
    with pytest.raises(ValueError, match=r"\(n, d\) and \(m, d\)"):
        route_embeddings(emb, keys, cfg, bank=np.ones((3, 5), dtype=np.float32))


def test_the_config_checks_the_fallback_fields():
    names = ("a", "b")
    with pytest.raises(ValueError, match="go together"):
        RouterConfig(names, novelty_threshold=0.5)
    with pytest.raises(ValueError, match="go together"):
        RouterConfig(names, llm_prior=(0.1, 0.2))
    with pytest.raises(ValueError, match="2 finite numbers"):
        RouterConfig(names, novelty_threshold=0.5, llm_prior=(0.1,))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        RouterConfig(names, novelty_threshold=1.5, llm_prior=(0.1, 0.2))
    cfg = RouterConfig(names, novelty_threshold=0.5, llm_prior=[0.1, 0.2])
    assert cfg.novelty and RouterConfig.from_dict(cfg.to_dict()) == cfg
    assert "novelty_threshold" not in RouterConfig(names).to_dict()  # configs without it stay as they were


def _with_novelty(folder, threshold=None):
    """Give the saved router in ``folder`` a fallback fitted on random queries (``threshold``: forced)."""
    meta = RouterMeta.read(folder)
    rng = np.random.default_rng(0)
    fit = fit_novelty([rng.normal(size=(30, 384)).astype(np.float32)], [rng.random((30, len(LLMS)))])
    meta = meta.with_novelty(fit.threshold if threshold is None else threshold, fit.prior, fit.record(LLMS))
    meta.write(folder, files={NOVELTY_FILE: bank_bytes(fit.bank)})
    return fit


@pytest.fixture
def saved(minilm_router, tmp_path):
    folder = tmp_path / "router"
    minilm_router.save_pretrained(folder, recipe={"train_files": []})
    return folder


def test_the_bank_is_stored_loaded_and_checked(saved, tmp_path):
    from routerdc.inference.embed_cache import checkpoint_key
    from routerdc.model.router import RouterDC

    emb_key, key = checkpoint_key(saved, embeddings_only=True), checkpoint_key(saved)
    fit = _with_novelty(saved, threshold=1.0)  # every query not in the bank is novel
    assert checkpoint_key(saved, embeddings_only=True) == emb_key != checkpoint_key(saved) != key  # caches and maps shared
    model = RouterDC.from_pretrained(saved)
    assert model.config.novelty and model.novelty_bank.shape == (30, 384)
    r = model.route(["what is 2 + 2?", "def f(x): return x"])
    assert r.novel.all() and set(r.llms) == {LLMS[int(np.argmax(fit.prior))]}
    # save_pretrained (export, fleet edits) carries the bank along
    model.save_pretrained(tmp_path / "copy")
    assert np.array_equal(load_bank(tmp_path / "copy"), load_bank(saved))
    (saved / NOVELTY_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable novelty bank"):
        RouterDC.from_pretrained(saved)
    (saved / NOVELTY_FILE).unlink()
    with pytest.raises(CheckpointError, match="novelty.safetensors is missing"):
        RouterDC.from_pretrained(saved)


def test_every_engine_and_the_onnx_form_fall_back_alike(saved, tmp_path):
    from routerdc.inference import load_router

    _with_novelty(saved)
    queries = ["what is 2 + 2?", "以下哪个城市是中国的首都？", "x", "Write a Python function that sorts a list."]
    ref = load_router(saved, "torch", cache_dir=tmp_path / "cache").route(queries)
    assert ref.nearest is not None
    onnx = load_router(saved, "onnx", cache_dir=tmp_path / "cache")
    assert onnx.bank is not None and (onnx.engine.onnx.folder / NOVELTY_FILE).exists()
    got = onnx.route(queries)
    np.testing.assert_allclose(got.nearest, ref.nearest, atol=1e-5)
    assert got.llms == ref.llms and list(got.novel) == list(ref.novel)


def test_the_checked_engine_rechecks_queries_near_the_threshold_whose_choice_can_flip():
    from routerdc.inference.checked import CheckedEngine

    class Fixed:
        name = "fixed"

        def __init__(self, emb, config, keys, bank):
            self.emb, self.config, self.keys, self.bank, self.meta = emb, config, keys, bank, None

        def embed(self, texts, **_):
            return self.emb.copy()

    keys = np.eye(4, dtype=np.float32)[:2]
    bank = np.eye(4, dtype=np.float32)[[0]]
    cfg = RouterConfig(("a", "b"), novelty_threshold=0.5, llm_prior=(0.2, 0.8))
    # rows: a near-tie far inside the bank's reach; a near-tie that is clearly novel; one at the threshold
    # that the router sends to "a" (not the fallback "b"); one at the threshold that it sends clearly to
    # the fallback (the same choice either side: not checked); one at the threshold near a tie with "b"
    emb = np.array([[1.0, 0.999, 0.0, 0.0], [0.0, 0.0, 1.0, 0.001], [0.5, 0.0, np.sqrt(0.75), 0.0],
                    [0.5, 0.8, np.sqrt(0.11), 0.0], [0.5, 0.505, np.sqrt(1 - 0.25 - 0.505 ** 2), 0.0]],
                   dtype=np.float32)
    eng = CheckedEngine(Fixed(emb, cfg, keys, bank), Fixed(emb, cfg, keys, bank), np.full((2, 2), 0.01), "checked",
                        novelty_bound=0.01)
    assert list(eng.near_ties(emb)) == [0, 2, 4]


def test_calibrate_fits_the_fallback_and_can_remove_it(saved, tiny_set, tmp_path):
    from routerdc.train.calibration import calibrate_checkpoint

    out = tmp_path / "calibrated"
    calibrate_checkpoint(saved, [tiny_set], output=out)
    meta = json.loads((out / "config.json").read_text())
    assert meta["router"]["novelty_threshold"] == meta["calibration"]["novelty"]["threshold"]
    assert len(meta["router"]["llm_prior"]) == len(LLMS) and load_bank(out).shape == (len(tiny_set), 384)
    assert not (saved / NOVELTY_FILE).exists()  # the source is untouched
    calibrate_checkpoint(out, [tiny_set], novelty=None)  # in place: the config and the bank change together
    meta = json.loads((out / "config.json").read_text())
    assert "novelty_threshold" not in meta["router"] and "novelty" not in meta["calibration"]
    assert not (out / NOVELTY_FILE).exists()


def test_remove_llm_keeps_the_bank_and_refits_the_prior(saved, tiny_set, tmp_path):
    from routerdc.model.router import RouterDC
    from routerdc.train.calibration import calibrate_checkpoint
    from routerdc.train.fleet import remove_llm

    calibrate_checkpoint(saved, [tiny_set])
    remove_llm(saved, LLMS[0], [tiny_set], output=tmp_path / "removed")
    model = RouterDC.from_pretrained(tmp_path / "removed")
    assert model.config.llm_names == LLMS[1:] and len(model.config.llm_prior) == len(LLMS) - 1
    assert np.array_equal(load_bank(tmp_path / "removed"), load_bank(saved))
    assert model.config.novelty_threshold == RouterDC.from_pretrained(saved).config.novelty_threshold


def test_the_cost_sweep_honours_the_fallback(saved, tiny_set, tmp_path):
    from dataclasses import replace

    from routerdc.evaluate.cost_sweep import sweep
    from routerdc.inference import load_router

    fit = _with_novelty(saved, threshold=1.0)  # every query is novel
    fallback = int(np.argmax(fit.prior))
    RouterMeta.read(saved).with_router(llm_cost=[1.0, 2.0, 3.0, 4.0]).write(saved)
    costed = replace(tiny_set, costs=np.tile(np.arange(1, len(LLMS) + 1, dtype=np.float32), (len(tiny_set), 1)))
    router = load_router(saved, "torch", cache_dir=tmp_path / "cache")
    emb = router.embed(list(costed.queries))
    curve = sweep([costed], {"r": (router.config, router.keys, [emb], router.bank)}, n=5).curves[0]
    # lambda = 0: every query goes to the prior's best LLM; the largest lambda: to the cheapest one.
    assert curve.points[0][0] == pytest.approx(float(costed.costs[:, fallback].sum()))
    assert curve.points[-1][0] == pytest.approx(float(costed.costs[:, 0].sum()))
    with pytest.raises(ValueError, match="needs its bank"):
        sweep([costed], {"r": (router.config, router.keys, [emb])}, n=5)


def test_the_routed_api_reports_the_fallback(data_dir, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from routerdc.serving.server import build_app

    folder = tmp_path / "routerbench"
    shutil.copytree(ROUTERBENCH, folder)
    names = RouterMeta.read(folder).llm_names
    rng = np.random.default_rng(0)
    fit = fit_novelty([rng.normal(size=(30, 384)).astype(np.float32)], [rng.random((30, len(names)))])
    RouterMeta.read(folder).with_novelty(1.0, fit.prior, fit.record(names)).write(
        folder, files={NOVELTY_FILE: bank_bytes(fit.bank)})
    import warnings

    from routerdc.data import load_many

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without every score are dropped
        s = load_many([data_dir / "routerbench/routerbench_zs/mbpp_test.csv"], missing="drop")[0]
    client = TestClient(build_app(str(folder), None, engine="torch", data_dir=str(data_dir)))
    r = client.post("/v1/chat/completions", json={"model": "routerdc", "messages": [
        {"role": "user", "content": s.queries[3]}]})  # a RouterBench query: the fallback LLM's answer is recorded
    assert r.status_code == 200, r.text
    routing = r.json()["routerdc"]
    assert routing["llm"] == names[int(np.argmax(fit.prior))] == routing["novelty"]["fallback_llm"]
    assert routing["novelty"]["novel"] and routing["router_choice"] == routing["llm"]
