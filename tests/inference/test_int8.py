"""Int8 dynamic quantization (routerdc.inference.int8): a faithful, inference-only copy of the router.

Tolerances. The int8 encoder perturbs each query embedding a little: cosine(fp32, int8) was
>= 0.989 on 497 real test queries and >= 0.99 on the ones below; the bound is 0.97 so that other
CPUs' int8 kernels (and torch releases) pass. A cosine similarity to a key then moves by
|ds| <= 0.018 on these queries (bound 0.04). Softmax changes each probability by at most
(max ds - min ds) / (2 tau) when the similarities change by ds (its Jacobian has l1 norm
<= range / tau and the changes sum to 0), so probabilities are checked against that bound, and
the argmax must agree wherever the fp32 top-1 margin exceeds max ds - min ds. With the fixture's
random LLM embeddings all probabilities are close to 1/T and margins tiny (median 0.02), so the
argmax is checked on a router with task-discriminating keys, as a trained router has (median
top-1 margin 0.18 on a checkpoint).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from routerdc.data import TASKS as TASKS_INFO
from routerdc.data import load_score_set, paper_files
from routerdc.inference.int8 import is_quantized, quantize_int8

TASKS = ("gsm8k", "cmmlu", "mbpp", "mmlu")  # math, Chinese, code, general knowledge
PER_TASK = 5
COS_MIN = 0.97
SIM_TOL = 0.04


@pytest.fixture(scope="module")
def queries(data_dir) -> dict[str, list[str]]:
    """The first 9 test queries of at most 300 characters of four tasks (5 to route, 4 for the keys)."""
    files = {TASKS_INFO[t].test_file: t for t in TASKS}
    out = {files[p.name]: [q for q in load_score_set(p).queries[:100] if len(q) <= 300][:PER_TASK + 4]
           for p in paper_files(data_dir)[1] if p.name in files}
    assert set(out) == set(TASKS)
    return out


@pytest.fixture(scope="module")
def task_router(_minilm_base, queries):
    """A copy of the session's router whose LLM k is the (centred) fp32 centroid of task k's queries."""
    router = copy.deepcopy(_minilm_base)
    centroids = np.stack([router.embed_texts(queries[t][PER_TASK:]).mean(0) for t in TASKS])
    with torch.no_grad():
        router.llm_embeddings.weight.copy_(torch.as_tensor(centroids - centroids.mean(0)))
    return router


@pytest.fixture(scope="module")
def int8_task_router(task_router):
    return quantize_int8(task_router)


@pytest.fixture(scope="module")
def embeddings(task_router, int8_task_router, queries) -> tuple[np.ndarray, np.ndarray]:
    """fp32 and int8 embeddings of the queries to route (computed once: the encoder is the slow part)."""
    texts = _texts(queries)
    return task_router.embed_texts(texts), int8_task_router.embed_texts(texts)


def _texts(queries: dict[str, list[str]]) -> list[str]:
    return [q for t in TASKS for q in queries[t][:PER_TASK]]


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_returns_an_int8_copy_and_leaves_the_original(task_router, int8_task_router):
    q = int8_task_router
    assert not is_quantized(task_router) and is_quantized(q)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.encoder.modules())
    assert any(isinstance(m, torch.nn.Linear) for m in task_router.encoder.modules())
    assert q.config == task_router.config and not q.training
    torch.testing.assert_close(q.llm_embeddings.weight, task_router.llm_embeddings.weight)
    assert q.llm_embeddings.weight.data_ptr() != task_router.llm_embeddings.weight.data_ptr()


def test_refuses_to_requantize_or_save(int8_task_router, tmp_path):
    with pytest.raises(ValueError, match="already"):
        quantize_int8(int8_task_router)
    with pytest.raises(RuntimeError, match="cannot be saved"):
        int8_task_router.save_pretrained(tmp_path / "router")
    assert not (tmp_path / "router").exists()


def test_embeddings_stay_close(int8_task_router, embeddings, queries):
    e32, e8 = embeddings
    assert e8.shape == e32.shape and e8.dtype == np.float32 and np.isfinite(e8).all()
    assert _cos(e32, e8).min() >= COS_MIN, _cos(e32, e8)
    # Alone, a query is quantized with its own activation scales (one per batch tensor, so int8
    # results depend a little on the batch); it is still close to fp32.
    texts = _texts(queries)
    one = np.stack([int8_task_router.embed_texts([t])[0] for t in texts[:PER_TASK * len(TASKS):PER_TASK + 1]])
    assert _cos(one, e32[:PER_TASK * len(TASKS):PER_TASK + 1]).min() >= COS_MIN


def _check_routing(ref, got, tau: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The softmax bound on the probabilities; returns (fp32 top-1 margin, range of ds) per query."""
    ds = got.similarities - ref.similarities
    assert np.abs(ds).max() <= SIM_TOL
    spread = ds.max(1) - ds.min(1)
    assert (np.abs(got.probs - ref.probs).max(1) <= spread / (2 * tau) + 1e-5).all()
    top2 = np.sort(ref.similarities, 1)[:, -2:]
    return top2[:, 1] - top2[:, 0], spread


def test_routes_like_fp32_on_real_queries(task_router, int8_task_router, embeddings, queries):
    texts = _texts(queries)
    ref = task_router.route_embeddings(embeddings[0])  # = task_router.route(texts)
    got = int8_task_router.route(texts)
    assert got.llm_names == ref.llm_names and got.probs.shape == (len(texts), len(TASKS))
    margin, spread = _check_routing(ref, got, task_router.config.temperature)
    safe = margin > spread
    assert safe.mean() >= 0.5  # the argmax check below is not vacuous (measured: 0.9)
    assert (got.choice[safe] == ref.choice[safe]).all()
    assert (got.choice == ref.choice).mean() >= 0.9  # measured: 1.0


def test_random_keys_probabilities_close(minilm_router, embeddings):
    # The fixture's own random LLM embeddings, applied to fp32 and int8 query embeddings.
    ref, got = (minilm_router.route_embeddings(e) for e in embeddings)
    _check_routing(ref, got, minilm_router.config.temperature)
    assert np.abs(got.probs - ref.probs).max() <= 0.02  # measured: 0.003


def test_edge_inputs(int8_task_router):
    assert int8_task_router.embed_texts([]).shape == (0, int8_task_router.dim)
    routing = int8_task_router.route(["", "x" * 5000])  # empty text and one truncated to max_length
    assert routing.probs.shape == (2, len(TASKS)) and np.allclose(routing.probs.sum(1), 1.0, atol=1e-5)
