"""Shared fixtures of the reliability suite: tiny local Llamas, a router over them, servers on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.serving_support import TINY_NAMES, ServerProcess, build_router, tiny_llms, write_config

KEYS = ("key-one-3f9a", "key-two-77c1")


def transformers_models(tiny, max_tokens=8):
    return [{"name": n, "backend": "transformers", "model": str(tiny[n]), "max_context": 4096,
             "sampling": {"temperature": 0.0, "max_tokens": max_tokens}} for n in TINY_NAMES]


@pytest.fixture(scope="session")
def tiny():
    return tiny_llms()


@pytest.fixture(scope="session")
def tiny_router(tiny, tmp_path_factory):
    return build_router(tmp_path_factory.mktemp("rel-router") / "router", TINY_NAMES)


@pytest.fixture(scope="session")
def keyed_server(tiny, tiny_router, tmp_path_factory):
    """``python -m routerdc serve`` with two API keys (``ROUTERDC_API_KEY``)."""
    d = tmp_path_factory.mktemp("keyed")
    cfg = write_config(d / "models.json", transformers_models(tiny), limits={"max_tokens": 64})
    srv = ServerProcess(tiny_router, cfg, d / "server.log", env={"ROUTERDC_API_KEY": ",".join(KEYS)})
    yield srv
    srv.stop()
