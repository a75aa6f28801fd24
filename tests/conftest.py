"""Shared fixtures: the data directory, the real MiniLM router (loaded once), a tiny score set."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from routerdc.data import DataError, ScoreSet, resolve_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Commands, serve and the app route on torch fp32 in tests: engine="auto" measures every engine once per
# router (minutes on 2 cores); tests/inference/test_router.py tests auto itself.
os.environ.setdefault("ROUTERDC_ENGINE", "torch")
os.environ.setdefault("ROUTERDC_PROBE_PER_TASK", "2")  # where auto does measure: 16 probe queries
# No test downloads the score data from the official repository: a fetch that a test did not point
# at its own 127.0.0.1 server goes to the discard port of the loopback and fails at once.
os.environ.setdefault("ROUTERDC_DATA_URL", "http://127.0.0.1:9")


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache(tmp_path_factory):
    """Keep the tests' embedding cache out of the user's home."""
    os.environ["ROUTERDC_CACHE"] = str(tmp_path_factory.mktemp("emb-cache"))

LLMS = ("llm-a", "llm-b", "llm-c", "llm-d")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared score data (``$ROUTERDC_DATA`` or ``../shared/data``)."""
    try:
        return resolve_data_dir()
    except DataError as exc:
        pytest.skip(f"score data not available: {exc}")


@pytest.fixture(scope="session")
def _minilm_base():
    from routerdc.model.router import RouterDC

    return RouterDC.build(LLMS, seed=0)


@pytest.fixture
def minilm_router(_minilm_base):
    """A fresh RouterDC over four LLMs with the real embedded MiniLM encoder: a copy of one built per
    session, so that a test that changes it (weights, meta, monkeypatched methods) changes no other."""
    import copy

    return copy.deepcopy(_minilm_base)


@pytest.fixture
def tiny_set() -> ScoreSet:
    rng = np.random.default_rng(0)
    queries = tuple(f"question number {i} about {'math' if i % 2 else 'history'}" for i in range(12))
    scores = rng.choice([0.0, 0.3, 0.7, 1.0], size=(12, len(LLMS))).astype(np.float32)
    return ScoreSet(task="mmlu", metric="probability", llms=LLMS, queries=queries, scores=scores,
                    clusters=np.arange(12) % 3)


@pytest.fixture(scope="module")
def app_server(data_dir):
    """The app, launched once per test process on a free port (tests/app_support/server.py): small
    score sets, a tiny frozen-encoder router trained here, a PCA map. Shared by the app's tests and
    the reliability suite."""
    pytest.importorskip("gradio")
    from tests.app_support.server import app_server as start

    return start()


@pytest.fixture
def app_client(app_server):
    """A fresh ``gradio_client`` session of :func:`app_server` (its own session state)."""
    from gradio_client import Client

    return Client(app_server.url, verbose=False)
