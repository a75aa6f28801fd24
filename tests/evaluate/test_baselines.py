"""The k-NN, ZOOTER-style MLP and per-task baseline routers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from routerdc.evaluate.baselines import KNNRouter, MLPRouter, TaskRouter

# Four training points on the unit circle, and their scores for 3 LLMs.
TRAIN_X = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
TRAIN_Y = np.array(
    [
        [0.9, 0.1, 0.0],  # best: 0
        [0.2, 0.8, 0.3],  # best: 1
        [0.0, 0.4, 0.6],  # best: 2
        [0.5, 0.1, 0.2],  # best: 0
    ]
)


def test_knn_k1_routes_to_neighbours_best() -> None:
    r = KNNRouter(k=1).fit(TRAIN_X, TRAIN_Y)
    q = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2], [0.3, -5.0]])
    assert r.route(q).tolist() == [0, 1, 2, 0]
    assert r.route(q).dtype == np.int64
    np.testing.assert_allclose(r.predict_scores(q), TRAIN_Y)


def test_knn_k2_means_by_hand() -> None:
    r = KNNRouter(k=2, metric="euclidean").fit(TRAIN_X, TRAIN_Y)
    # (0.9, 0.8) is nearest to points 0 and 1; (-0.6, -0.9) to points 3 and 2.
    pred = r.predict_scores(np.array([[0.9, 0.8], [-0.6, -0.9]]))
    np.testing.assert_allclose(pred, [[0.55, 0.45, 0.15], [0.25, 0.25, 0.4]])
    assert r.route(np.array([[0.9, 0.8], [-0.6, -0.9]])).tolist() == [0, 2]


def test_knn_ties_go_to_lowest_index_and_k_is_clamped() -> None:
    r = KNNRouter(k=50).fit(TRAIN_X[:1], np.array([[0.5, 0.5, 0.1]]))
    assert r.k_ == 1
    assert r.route(np.array([[1.0, 1.0]])).tolist() == [0]


def _clusters(n: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    centers = np.random.default_rng(123).normal(size=(2, d)) * 2.0  # shared by all draws
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, size=n)
    x = centers[label] + rng.normal(size=(n, d))
    # LLM 0 is best for cluster 0, LLM 2 for cluster 1; LLM 1 is mediocre everywhere.
    y = np.where(label[:, None] == 0, [[0.9, 0.5, 0.1]], [[0.1, 0.5, 0.9]])
    y = np.clip(y + rng.normal(scale=0.05, size=y.shape), 0, 1)
    best = np.where(label == 0, 0, 2)
    return x, y, best


def test_mlp_learns_separable_problem() -> None:
    x, y, _ = _clusters(256)
    xt, _, best_t = _clusters(200, seed=1)  # held-out draw around the same centers
    r = MLPRouter(hidden=32, epochs=40, lr=1e-2, batch_size=64, seed=0, num_threads=1).fit(x, y)
    assert (r.route(xt) == best_t).mean() > 0.95
    p = r.predict_proba(xt)
    assert p.shape == (200, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert r.loss_history_[-1] < r.loss_history_[0]
    lin = MLPRouter(hidden=0, epochs=40, lr=1e-2, batch_size=None, num_threads=1).fit(x, y)
    assert (lin.route(xt) == best_t).mean() > 0.95


def test_mlp_is_deterministic_and_leaves_global_rng() -> None:
    x, y, _ = _clusters(100)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a = MLPRouter(hidden=16, epochs=5, seed=3, num_threads=1).fit(x, y).predict_proba(x)
    b = MLPRouter(hidden=16, epochs=5, seed=3, num_threads=1).fit(x, y).predict_proba(x)
    c = MLPRouter(hidden=16, epochs=5, seed=4, num_threads=1).fit(x, y).predict_proba(x)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("cls", [KNNRouter, MLPRouter])
def test_shape_errors(cls) -> None:
    r = cls()
    with pytest.raises(RuntimeError, match="not fitted"):
        r.route(TRAIN_X)
    with pytest.raises(ValueError, match="rows"):
        r.fit(TRAIN_X, TRAIN_Y[:3])
    with pytest.raises(ValueError, match="no queries"):
        r.fit(np.zeros((0, 2)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        r.fit(TRAIN_X[0], TRAIN_Y)
    with pytest.raises(ValueError, match=r"\(n, T\)"):
        r.fit(TRAIN_X, TRAIN_Y[:, 0])
    if cls is MLPRouter:
        r = cls(hidden=4, epochs=1, num_threads=1)
    r.fit(TRAIN_X, TRAIN_Y)
    with pytest.raises(ValueError, match=r"\(m, 2\)"):
        r.route(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="no queries"):
        r.route(np.zeros((0, 2)))


def test_task_router_sends_each_task_to_its_best_llm_and_an_unseen_task_to_the_task_average() -> None:
    tasks = ["math", "math", "code", "code", "code"]
    values = np.array([[1.0, 0.0, 0.5],
                       [1.0, 0.0, 0.5],   # math means: 1.0, 0.0, 0.5   -> LLM 0
                       [0.0, 1.0, 0.4],
                       [0.0, 1.0, 0.4],
                       [0.0, 0.7, 0.4]])  # code means: 0.0, 0.9, 0.4   -> LLM 1
    r = TaskRouter().fit(tasks, values)
    # The training-set average is the mean of the task means (0.5, 0.45, 0.45), not of the 5 rows
    # (0.4, 0.54, 0.44): an unseen task goes to LLM 0, where the row mean would say LLM 1.
    np.testing.assert_allclose(r.predict_scores(["unseen"]), [[0.5, 0.45, 0.45]])
    assert r.route(["code", "math", "unseen", "code"]).tolist() == [1, 0, 0, 1]
    assert r.route(["math"]).dtype == np.int64


def test_task_router_refuses_bad_input() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        TaskRouter().route(["a"])
    with pytest.raises(ValueError, match="2 task names for 3 rows"):
        TaskRouter().fit(["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        TaskRouter().fit([], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="finite"):
        TaskRouter().fit(["a"], np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="no queries"):
        TaskRouter().fit(["a"], np.ones((1, 2))).route([])
