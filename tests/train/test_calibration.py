"""Calibration: the per-LLM routing offsets, their fit, and where they are stored and honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from routerdc.train.calibration import DEFAULT_GRID, _sweep_values, calibrate, calibrate_checkpoint, fit_llm_bias, objective
from routerdc.checkpoint import CheckpointError
from routerdc.data import ScoreSet
from routerdc.inference.embed_cache import checkpoint_key
from routerdc.model.router import RouterDC
from routerdc.routing import RouterConfig, route_embeddings

from tests.conftest import LLMS


def _toy():
    """Two tasks over 3 LLMs. LLM 2 is right on every query but never the nearest key.

    Task A (probability metric), values per LLM: q1 (1, 0, 1), q2 (0, 0, 1).
    Task B (pass rates):                          q3 (0.5, 1, 0.75), q4 (0, 0, 1).
    Similarities: LLM 0 leads on A by 0.2 (q1) and 0.1 (q2) over LLM 2; LLM 1 leads on B by
    0.3 (q3) and 0.05 (q4) over LLM 2.
    """
    sims = [np.array([[0.5, 0.0, 0.3], [0.4, 0.1, 0.3]]), np.array([[0.0, 0.6, 0.3], [0.1, 0.45, 0.4]])]
    values = [np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]), np.array([[0.5, 1.0, 0.75], [0.0, 0.0, 1.0]])]
    return sims, values


def test_objective_by_hand():
    sims, values = _toy()
    # b = 0: A picks LLM 0 twice -> (1 + 0) / 2 = 0.5; B picks LLM 1 twice -> (1 + 0) / 2 = 0.5.
    assert objective(sims, values, np.zeros(3)) == pytest.approx(50.0)
    # b_2 = 0.15 flips q2 (0.3 + 0.15 > 0.4) and q4 (0.4 + 0.15 > 0.45), not q3: A 1.0, B 1.0 -> 100.
    assert objective(sims, values, np.array([0.0, 0.0, 0.15])) == pytest.approx(100.0)
    # b_2 = 0.35 also flips q3 (0.65 > 0.6), where LLM 2 is worse: A 1.0, B (0.75 + 1) / 2 -> 93.75.
    assert objective(sims, values, np.array([0.0, 0.0, 0.35])) == pytest.approx(93.75)


def test_fit_finds_the_best_offsets_and_centres_them():
    sims, values = _toy()
    bias = fit_llm_bias(sims, values)
    assert bias.sum() == pytest.approx(0.0, abs=1e-9)
    assert objective(sims, values, bias) == pytest.approx(100.0)
    # q2 and q4 flip to LLM 2 (b_2 - b_0 > 0.1, b_2 - b_1 > 0.05), q3 must not (b_2 - b_1 < 0.3).
    assert bias[2] - bias[0] > 0.1 and 0.05 < bias[2] - bias[1] < 0.3


def test_fit_keeps_zero_when_nothing_improves():
    sims = [np.array([[0.9, 0.1], [0.2, 0.8]])]
    values = [np.array([[1.0, 0.0], [0.0, 1.0]])]  # the nearest key is already right everywhere
    assert np.array_equal(fit_llm_bias(sims, values), np.zeros(2))


def test_sweep_matches_brute_force_argmax():
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, size=(40, 5))
    v = (rng.uniform(size=(40, 5)) > 0.5).astype(float)
    bias = rng.uniform(-0.3, 0.3, size=5)
    grid = DEFAULT_GRID[::7]
    for t in range(5):
        fast = _sweep_values(s, v, bias, t, grid)
        for g, f in zip(grid, fast):
            b = bias.copy()
            b[t] = g
            assert f == pytest.approx(v[np.arange(40), (s + b).argmax(axis=1)].mean())


def test_fit_never_lowers_the_objective_on_random_data():
    rng = np.random.default_rng(1)
    sims = [rng.uniform(-1, 1, size=(60, 4)) for _ in range(3)]
    values = [(rng.uniform(size=(60, 4)) > 0.6).astype(float) for _ in range(3)]
    bias = fit_llm_bias(sims, values)
    assert objective(sims, values, bias) >= objective(sims, values, np.zeros(4))


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="one similarity array"):
        fit_llm_bias([], [])
    with pytest.raises(ValueError, match="must both be"):
        fit_llm_bias([np.zeros((2, 3))], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="no queries"):
        fit_llm_bias([np.zeros((0, 3))], [np.zeros((0, 3))])


def test_calibrate_reports_per_task_figures_with_the_metric(tiny_set):
    sims = [np.random.default_rng(0).uniform(-1, 1, size=(len(tiny_set), len(LLMS)))]
    cal = calibrate(LLMS, sims, [tiny_set])
    assert cal.after >= cal.before and set(cal.per_task_after) == {"mmlu"}
    # The probability metric counts any score > 0 as right (not the score itself).
    choice = (sims[0] + np.asarray(cal.bias)).argmax(axis=1)
    expected = (tiny_set.scores[np.arange(len(tiny_set)), choice] > 0).mean() * 100
    assert cal.after == pytest.approx(expected)
    assert set(cal.to_dict()["bias"]) == set(LLMS)


def test_router_config_offsets_are_checked_and_round_trip():
    cfg = RouterConfig(llm_names=("a", "b"), llm_bias=[0.5, -0.5])
    assert cfg.llm_bias == (0.5, -0.5)
    assert RouterConfig.from_dict(cfg.to_dict()) == cfg
    assert "llm_bias" not in RouterConfig(llm_names=("a", "b")).to_dict()  # older readers still load it
    with pytest.raises(ValueError, match="2 finite numbers"):
        RouterConfig(llm_names=("a", "b"), llm_bias=[0.1])
    with pytest.raises(ValueError, match="2 finite numbers"):
        RouterConfig(llm_names=("a", "b"), llm_bias=[0.1, float("nan")])
    with pytest.raises(ValueError, match="list of numbers"):
        RouterConfig(llm_names=("a", "b"), llm_bias=["x", 1])


def test_offsets_move_the_argmax_in_numpy_and_torch(minilm_router):
    keys = np.eye(4, 384, dtype=np.float32)
    emb = np.zeros((1, 384), dtype=np.float32)
    emb[0, :2] = [1.0, 0.9]  # nearest to LLM 0, then LLM 1
    plain = RouterConfig(llm_names=LLMS)
    biased = RouterConfig(llm_names=LLMS, llm_bias=(0.0, 0.2, 0.0, 0.0))
    assert route_embeddings(emb, keys, plain).llms == ["llm-a"]
    r = route_embeddings(emb, keys, biased, temperature=0.5)
    assert r.llms == ["llm-b"]
    # p = softmax((sim + b) / tau); the reported similarities stay the raw cosines.
    sims = emb[0, :4] / np.linalg.norm(emb[0])
    expected = np.exp((sims + biased.llm_bias) / 0.5)
    np.testing.assert_allclose(r.probs[0], expected / expected.sum(), rtol=1e-5)
    np.testing.assert_allclose(r.similarities[0], sims, rtol=1e-5)

    model = RouterDC(biased, minilm_router.encoder, minilm_router.tokenizer)
    with torch.no_grad():
        model.llm_embeddings.weight.copy_(torch.as_tensor(keys))
    t = model.route_embeddings(emb, temperature=0.5)
    assert t.llms == ["llm-b"]
    np.testing.assert_allclose(t.probs, r.probs, rtol=1e-5)


@pytest.fixture
def saved_router(minilm_router, tmp_path):
    folder = tmp_path / "router"
    minilm_router.save_pretrained(folder, recipe={"train_files": []})
    return folder


def test_calibrate_checkpoint_rewrites_only_the_config_and_the_novelty_bank(saved_router, tiny_set, tmp_path):
    weights = {p.name: p.read_bytes() for p in saved_router.glob("*.safetensors")}
    key, emb_key = checkpoint_key(saved_router), checkpoint_key(saved_router, embeddings_only=True)
    assert key == emb_key  # no offsets yet
    out = tmp_path / "calibrated"
    cal = calibrate_checkpoint(saved_router, [tiny_set], output=out)
    assert "llm_bias" not in json.loads((saved_router / "config.json").read_text())["router"]  # source untouched
    meta = json.loads((out / "config.json").read_text())
    assert meta["router"]["llm_bias"] == list(cal.bias) and meta["calibration"]["tasks"] == ["mmlu"]
    assert {p.name: p.read_bytes() for p in out.glob("*.safetensors") if p.name != "novelty.safetensors"} == weights
    assert (out / "novelty.safetensors").exists() and "novelty_threshold" in meta["router"]  # the fallback, beside
    # Same embeddings, different routing: the embedding key is shared, the full key is not.
    assert checkpoint_key(out, embeddings_only=True) == emb_key and checkpoint_key(out) != key
    router = RouterDC.from_pretrained(out)
    assert router.config.llm_bias == cal.bias
    queries = list(tiny_set.queries)
    np.testing.assert_allclose(router.route(queries).similarities, RouterDC.from_pretrained(saved_router)
                               .route(queries).similarities, atol=1e-5)
    # Calibrating again (in place) starts from the raw similarities: the same offsets.
    again = calibrate_checkpoint(out, [tiny_set])
    assert again.bias == cal.bias


def test_a_config_with_wrong_offsets_is_refused(saved_router):
    meta = json.loads((saved_router / "config.json").read_text())
    meta["router"]["llm_bias"] = [0.1, 0.2]
    (saved_router / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="4 finite numbers"):
        RouterDC.from_pretrained(saved_router)


def test_calibrate_cli(saved_router, tiny_set, tmp_path, capsys):
    from routerdc.cli.main import main
    from routerdc.data import write_jsonl

    data = write_jsonl([tiny_set], tmp_path / "train.jsonl")
    assert main(["calibrate", "--checkpoint", str(saved_router)]) == 2
    assert "names no training files" in capsys.readouterr().err
    assert main(["calibrate", "--checkpoint", str(saved_router), "--train-files", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train_avg_after"] >= report["train_avg_before"]
    assert RouterDC.from_pretrained(saved_router).config.llm_bias is not None
    tau = RouterDC.from_pretrained(saved_router).config.calibrated_temperature
    assert tau is not None and report["temperature"]["temperature"] == tau
    # export keeps the offsets and the calibration record
    assert main(["export", "--checkpoint", str(saved_router), "--output", str(tmp_path / "fp16")]) == 0
    exported = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert exported["router"]["llm_bias"] == list(report["bias"].values()) and "calibration" in exported
    bad = ScoreSet(task="mmlu", metric="probability", llms=("x", "y"), queries=("q",), scores=np.ones((1, 2)))
    write_jsonl([bad], tmp_path / "foreign.jsonl")
    assert main(["calibrate", "--checkpoint", str(saved_router), "--train-files",
                 str(tmp_path / "foreign.jsonl")]) == 2
