"""Temperature scaling: the fit, what it changes (probabilities) and what it must not (choices),
and where the fitted tau is stored and honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routerdc.evaluate.metrics import best_llm_targets, expected_calibration_error
from routerdc.routing import RouterConfig, route_embeddings
from routerdc.train.temperature import confidence_nll, fit_temperature, routing_nll, softmax, temperature_fit

from tests.conftest import LLMS


def test_best_llm_targets_share_ties():
    y = best_llm_targets(np.array([[1.0, 0.0, 1.0], [0.2, 0.9, 0.5], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(y, [[0.5, 0, 0.5], [0, 1, 0], [1 / 3, 1 / 3, 1 / 3]])


def test_ece_by_hand():
    # Two queries at confidence 0.9 (one right, one wrong), one at 0.6 (right): bins 0.9 and 0.6.
    p = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    y = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    # |0.5 - 0.9| * 2/3 + |1 - 0.6| * 1/3 = 0.2667 + 0.1333 = 0.4
    assert expected_calibration_error(p, y) == pytest.approx(40.0)
    assert expected_calibration_error(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same non-empty"):
        expected_calibration_error(p, y[:2])


def test_fit_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 5)) * 0.1
    true_tau = 0.05
    p = softmax(scores, true_tau)
    labels = np.array([rng.choice(5, p=row) for row in p])
    y = np.eye(5)[labels]
    tau = fit_temperature([scores[:2000], scores[2000:]], [y[:2000], y[2000:]], target="best")
    assert tau == pytest.approx(true_tau, rel=0.1)
    assert routing_nll([scores], [y], tau) < routing_nll([scores], [y], 1.0)
    # Calibrated: ECE falls from the near-uniform tau = 1 to a few percent.
    assert expected_calibration_error(softmax(scores, tau), y) < 5.0 < expected_calibration_error(softmax(scores, 1.0), y)


def test_correct_target_calibrates_the_chosen_llms_probability():
    # The chosen LLM is right with probability sigmoid-like in its margin: a peaked softmax fits.
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(3000, 4)) * 0.05
    p_true = softmax(scores, 0.02)
    values = np.zeros_like(scores)
    rows = np.arange(len(scores))
    right = rng.random(len(scores)) < p_true.max(axis=1)  # the routed LLM is right as often as it says
    values[rows, scores.argmax(axis=1)] = right
    tau = fit_temperature([scores], [values], target="correct")
    assert tau == pytest.approx(0.02, rel=0.2)
    assert confidence_nll([scores], [values], tau) < confidence_nll([scores], [values], 1.0)
    assert expected_calibration_error(softmax(scores, tau), values) < 4.0
    with pytest.raises(ValueError, match="target must be one of"):
        fit_temperature([scores], [values], target="hot")


def test_temperature_never_changes_a_choice(tiny_set):
    rng = np.random.default_rng(1)
    scores = [rng.normal(size=(len(tiny_set), len(LLMS))) * 0.05]
    fit = temperature_fit(scores, [tiny_set])
    assert fit.n_queries == len(tiny_set) and fit.nll_after <= fit.nll_before + 1e-12
    emb, keys = rng.normal(size=(20, 8)), rng.normal(size=(len(LLMS), 8))
    plain = route_embeddings(emb, keys, RouterConfig(LLMS))
    fitted = route_embeddings(emb, keys, RouterConfig(LLMS, calibrated_temperature=fit.temperature))
    np.testing.assert_array_equal(plain.choice, fitted.choice)
    np.testing.assert_allclose(fitted.probs, softmax(plain.similarities, fit.temperature), atol=1e-5)
    # An explicit temperature still wins over the fitted one.
    np.testing.assert_allclose(route_embeddings(emb, keys, RouterConfig(LLMS, calibrated_temperature=0.05),
                                                temperature=1.0).probs, plain.probs, atol=1e-6)


def test_config_validates_and_round_trips_the_fitted_temperature():
    cfg = RouterConfig(LLMS, calibrated_temperature=0.07)
    assert cfg.routing_temperature == 0.07 and RouterConfig(LLMS).routing_temperature == 1.0
    assert RouterConfig.from_dict(cfg.to_dict()) == cfg
    assert "calibrated_temperature" not in RouterConfig(LLMS).to_dict()
    for bad in (0.0, -1.0, float("nan"), "hot"):
        with pytest.raises(ValueError, match="calibrated_temperature"):
            RouterConfig(LLMS, calibrated_temperature=bad)


def test_calibrate_checkpoint_fits_and_stores_the_temperature(minilm_router, tiny_set, tmp_path):
    from routerdc.inference.embed_cache import checkpoint_key
    from routerdc.model.router import RouterDC
    from routerdc.train.calibration import calibrate_checkpoint

    folder = tmp_path / "plain"
    minilm_router.save_pretrained(folder, recipe={"train_files": []})
    out = tmp_path / "cal"
    calibrate_checkpoint(folder, [tiny_set], output=out)
    meta = json.loads((out / "config.json").read_text())
    tau = meta["router"]["calibrated_temperature"]
    rec = meta["calibration"]["temperature"]
    assert tau == rec["temperature"] and rec["nll_after"] <= rec["nll_before"] + 1e-9
    assert checkpoint_key(out, embeddings_only=True) == checkpoint_key(folder, embeddings_only=True)
    router = RouterDC.from_pretrained(out)
    queries = list(tiny_set.queries)
    r = router.route(queries)
    np.testing.assert_allclose(r.probs, softmax(r.similarities + np.asarray(router.config.llm_bias), tau), atol=1e-5)
    # Without the temperature: only the offsets.
    calibrate_checkpoint(folder, [tiny_set], output=tmp_path / "cal2", temperature=False)
    assert "calibrated_temperature" not in json.loads((tmp_path / "cal2" / "config.json").read_text())["router"]


def test_temperature_only_keeps_the_offsets_and_every_choice(minilm_router, tiny_set, tmp_path, capsys):
    from routerdc.cli.main import main
    from routerdc.data import write_jsonl
    from routerdc.model.router import RouterDC

    folder = tmp_path / "r"
    minilm_router.save_pretrained(folder, recipe={"train_files": []})
    data = write_jsonl([tiny_set], tmp_path / "train.jsonl")
    assert main(["calibrate", "--checkpoint", str(folder), "--train-files", str(data), "--no-temperature"]) == 0
    capsys.readouterr()
    before = RouterDC.from_pretrained(folder)
    assert main(["calibrate", "--checkpoint", str(folder), "--train-files", str(data), "--temperature-only",
                 "--output", str(tmp_path / "t")]) == 0
    report = json.loads(capsys.readouterr().out)
    after = RouterDC.from_pretrained(tmp_path / "t")
    assert after.config.llm_bias == before.config.llm_bias
    assert after.config.calibrated_temperature == report["temperature"]["temperature"]
    queries = list(tiny_set.queries)
    np.testing.assert_array_equal(after.route(queries).choice, before.route(queries).choice)
