"""The post-hoc combinations (confidence fallback, k-NN mix, seed ensembles) on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from routerdc.evaluate import combine


def test_fallback_routes_low_margin_queries_to_the_default_llm():
    scores = np.array([[0.50, 0.49, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.25]])
    np.testing.assert_allclose(combine.top2_margin(scores), [0.01, 0.8, 0.05])
    np.testing.assert_array_equal(combine.fallback_choices(scores, 0.02, 2), [2, 0, 1])
    np.testing.assert_array_equal(combine.fallback_choices(scores, 0.0, 2), [0, 0, 1])


def test_fit_fallback_margin_falls_back_only_when_it_pays():
    # Query 0 (margin 0.01) is won only by LLM 2; query 1 (margin 0.8) by the argmax.
    scores = [np.array([[0.50, 0.49, 0.0], [0.9, 0.1, 0.0]])]
    values = [np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])]
    m = combine.fit_fallback_margin(scores, values, fallback=2)
    assert 0.01 < m <= 0.8
    assert combine.task_average(values, [combine.fallback_choices(scores[0], m, 2)]) == 100.0
    # When the fallback never helps, m = 0: the router alone.
    assert combine.fit_fallback_margin(scores, [np.array([[1.0, 0, 0], [1.0, 0, 0]])], fallback=2) == 0.0


def test_knn_values_and_leave_one_out():
    emb = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    vals = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(combine.knn_values(emb, vals, np.array([[1.0, 0.05]]), k=2), [[1.0, 0.0]])
    loo = combine.knn_values(emb, vals, emb, k=1, exclude_self=True)
    np.testing.assert_allclose(loo, vals)  # each row's nearest other row has the same values


def test_knn_weight_and_ensemble():
    probs = [np.array([[0.6, 0.4], [0.6, 0.4]])]
    knn = [np.array([[1.0, 0.0], [0.0, 1.0]])]
    values = [np.array([[1.0, 0.0], [0.0, 1.0]])]
    a = combine.fit_knn_weight(probs, knn, values)
    assert 0 < a <= 1 and combine.knn_mix_choices(probs[0], knn[0], a).tolist() == [0, 1]
    assert combine.fit_knn_weight(probs, knn, [np.array([[1.0, 0.0], [1.0, 0.0]])]) == 0.0
    e = combine.ensemble_probs([np.array([[0.7, 0.3]]), np.array([[0.2, 0.8]])])
    np.testing.assert_allclose(e, [[0.45, 0.55]])
    with pytest.raises(ValueError, match="one shape"):
        combine.ensemble_probs([np.zeros((1, 2)), np.zeros((2, 2))])


def test_novelty_fallback_catches_queries_far_from_the_training_data():
    train = np.array([[1.0, 0.0, 0.0], [0.98, 0.2, 0.0], [0.95, 0.0, 0.3]])
    nn_train = combine.nearest_similarity(train, train, exclude_self=True)
    assert (nn_train < 0.999).all() and (nn_train > 0.9).all()
    queries = np.array([[1.0, 0.1, 0.0], [0.0, 0.0, 1.0]])  # one near the training data, one far from it
    near = combine.nearest_similarity(train, queries)
    thr = float(np.quantile(nn_train, 0.05))
    np.testing.assert_array_equal(combine.novelty_choices(np.array([1, 1]), near, thr, fallback=2), [1, 2])
