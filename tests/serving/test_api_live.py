"""Serving end to end on CPU: tiny random-weight Llamas through the transformers backend, our own
OpenAI-compatible server in a subprocess, the openai backend and the routed API against it."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from routerdc.serving.backends import BackendError, BackendUnavailable, PromptTooLong, SamplingParams
from routerdc.serving.config import parse_models_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import TINY_NAMES, ServerProcess, build_router, free_port, tiny_llms, write_config  # noqa: E402

USER = [{"role": "user", "content": "what is the sum of two and three?"}]


@pytest.fixture(scope="session")
def tiny():
    return tiny_llms()


@pytest.fixture(scope="session")
def tiny_router(tiny, tmp_path_factory):
    return build_router(tmp_path_factory.mktemp("tiny-router") / "router", TINY_NAMES)


def _transformers_models(tiny, max_context=4096):
    return [{"name": "tiny-a", "backend": "transformers", "model": str(tiny["tiny-a"]), "prompt_format": "chat",
             "max_context": max_context, "sampling": {"temperature": 0.8, "max_tokens": 16}},
            {"name": "tiny-b", "backend": "transformers", "model": str(tiny["tiny-b"]),
             "prompt_format": "completion", "max_context": max_context, "sampling": {"max_tokens": 16}}]


@pytest.fixture(scope="session")
def server(tiny, tiny_router, tmp_path_factory):
    d = tmp_path_factory.mktemp("server")
    cfg = write_config(d / "models.json", _transformers_models(tiny, max_context=4096), limits={"max_tokens": 4000})
    srv = ServerProcess(tiny_router, cfg, d / "server.log")
    yield srv
    srv.stop()


def _openai_spec(name, base_url, **kw):
    cfg = parse_models_config({"models": [{"name": name, "backend": "openai", "base_url": base_url, "model": name,
                                           **kw}], "limits": {"max_tokens": 4000, "max_retries": 1,
                                                              "request_timeout_s": 30}})
    return cfg


def _params(backend, **kw):
    return SamplingParams.clamp(backend.spec, parse_models_config({"models": [backend.spec.model_dump()],
                                                                   "limits": {"max_tokens": 4000}}).limits, **kw)


# ------------------------------------------------------------------ transformers backend, in process
def test_transformers_backend_streams_cancels_and_guards(tiny):
    from routerdc.serving.backends.transformers_backend import TransformersBackend

    cfg = parse_models_config({"models": _transformers_models(tiny, max_context=64)})
    b = TransformersBackend(cfg.get("tiny-a"))
    assert b.health()
    chunks = list(b.stream(USER, _params(b, max_tokens=40, temperature=1.0, seed=0)))
    assert len(chunks) >= 2 and b.count_tokens("".join(chunks)) >= 20  # streamed word by word
    greedy = "".join(b.stream(USER, _params(b, max_tokens=12, temperature=0.0)))
    assert greedy and greedy == "".join(b.stream(USER, _params(b, max_tokens=12, temperature=0.0)))
    # cancel: a 4000-token answer (~7 s here) stops promptly
    cancel = threading.Event()
    b2 = TransformersBackend(parse_models_config({"models": _transformers_models(tiny)}).get("tiny-b"))
    it = b2.stream(USER, _params(b2, max_tokens=4000), cancel)
    first = next(it)
    t0 = time.monotonic()
    cancel.set()
    rest = list(it)
    assert first and time.monotonic() - t0 < 2.0 and len(rest) < 100 and b2.active == 0
    # a prompt that does not fit names the model and both numbers, before generating
    long = [{"role": "user", "content": "hello world " * 100}]
    n = b.count_tokens(long)
    with pytest.raises(PromptTooLong) as info:
        list(b.stream(long, _params(b)))
    assert f"{n} tokens" in str(info.value) and "'tiny-a'" in str(info.value) and "at most 64" in str(info.value)


# ------------------------------------------------------------------ openai backend against our server
def test_openai_backend_streams_from_our_server(server, tiny):
    from routerdc.serving.backends import make_backend

    cfg = _openai_spec("tiny-a", server.url + "/v1", tokenizer=str(tiny["tiny-a"]), max_context=4096)
    b = make_backend(cfg.get("tiny-a"), cfg)
    assert b.health()
    assert len(list(b.stream(USER, _params(b, max_tokens=40, temperature=1.0)))) >= 2
    chunks = list(b.stream(USER, _params(b, max_tokens=10, temperature=0.0)))
    # the same greedy answer as the transformers backend in process
    from routerdc.serving.backends.transformers_backend import TransformersBackend

    local = TransformersBackend(parse_models_config({"models": _transformers_models(tiny)}).get("tiny-a"))
    assert "".join(chunks) == "".join(local.stream(USER, _params(local, max_tokens=10, temperature=0.0)))


def test_openai_backend_cancel_aborts_the_server_generation(server, tiny):
    from routerdc.serving.backends import make_backend

    cfg = _openai_spec("tiny-b", server.url + "/v1", tokenizer=str(tiny["tiny-b"]))
    b = make_backend(cfg.get("tiny-b"), cfg)
    cancel = threading.Event()
    it = b.stream(USER, _params(b, max_tokens=4000), cancel)
    assert next(it) and next(it)
    assert server.active() == 1
    cancel.set()
    list(it)
    deadline = time.monotonic() + 2.0
    while server.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active() == 0  # aborted within 2 s (the full answer takes ~7 s)


def test_openai_backend_too_long_prompt(server, tiny):
    from routerdc.serving.backends import make_backend

    # counted locally with the candidate's tokenizer: refused before sending
    cfg = _openai_spec("tiny-a", server.url + "/v1", tokenizer=str(tiny["tiny-a"]), max_context=32)
    b = make_backend(cfg.get("tiny-a"), cfg)
    with pytest.raises(PromptTooLong, match=r"tokens but model 'tiny-a' accepts at most 32"):
        list(b.stream([{"role": "user", "content": "two three " * 40}], _params(b)))
    # no local tokenizer and a larger declared context: the server refuses with HTTP 400, passed on clearly
    cfg = _openai_spec("tiny-a", server.url + "/v1", max_context=100_000)
    b = make_backend(cfg.get("tiny-a"), cfg)
    with pytest.raises(BackendError) as info:
        list(b.stream([{"role": "user", "content": "two three " * 2500}], _params(b)))
    msg = str(info.value)
    assert info.value.status == 400 and "HTTP 400" in msg and "at most 4096" in msg and "tiny-a" in msg


def test_openai_backend_down_is_fast_and_clear():
    from routerdc.serving.backends import make_backend

    cfg = _openai_spec("tiny-a", f"http://127.0.0.1:{free_port()}/v1")
    b = make_backend(cfg.get("tiny-a"), cfg)
    t0 = time.monotonic()
    assert not b.health()
    with pytest.raises(BackendUnavailable, match="tiny-a: cannot connect to http://127.0.0.1"):
        list(b.stream(USER, _params(b)))
    assert time.monotonic() - t0 < 5.0


def test_server_killed_mid_stream_gives_a_clear_error(tiny, tiny_router, tmp_path):
    from routerdc.serving.backends import make_backend

    cfg_file = write_config(tmp_path / "models.json", _transformers_models(tiny), limits={"max_tokens": 4000})
    srv = ServerProcess(tiny_router, cfg_file, tmp_path / "server.log")
    try:
        cfg = _openai_spec("tiny-b", srv.url + "/v1")
        b = make_backend(cfg.get("tiny-b"), cfg)
        it = b.stream(USER, _params(b, max_tokens=4000))
        assert next(it)
        srv.kill()
        with pytest.raises(BackendError) as info:
            for _ in it:
                pass
        assert "tiny-b" in str(info.value) and srv.url in str(info.value)
    finally:
        srv.stop()


# ------------------------------------------------------------------ the routed API
@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)


def _routing_ok(routing, model="routerdc"):
    assert set(routing["probs"]) == set(TINY_NAMES)
    assert sum(routing["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert routing["router_choice"] == max(routing["probs"], key=routing["probs"].get)
    if model == "routerdc":
        assert routing["routed"] is True and routing["llm"] == routing["router_choice"]
    else:
        assert routing["routed"] is False and routing["llm"] == model


def test_routed_api_non_streaming(client):
    raw = client.chat.completions.with_raw_response.create(model="routerdc", messages=USER, max_tokens=8)
    resp = raw.parse()
    routing = resp.model_extra["routerdc"]
    _routing_ok(routing)
    assert raw.headers["X-RouterDC-LLM"] == routing["llm"] == resp.model
    assert json.loads(raw.headers["X-RouterDC-Probs"]) == pytest.approx(routing["probs"], abs=1e-5)
    assert resp.choices[0].message.content and resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens >= 4 and resp.usage.prompt_tokens > 5


@pytest.mark.parametrize("model", ["routerdc", "tiny-b"])
def test_routed_api_streaming(client, model):
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=USER, max_tokens=8, stream=True, stream_options={"include_usage": True}) as raw:
        header_llm = raw.headers["X-RouterDC-LLM"]
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    final = chunks[-1]
    assert text and final.choices[0].finish_reason == "length"
    routing = final.model_extra["routerdc"]
    _routing_ok(routing, model)
    assert header_llm == routing["llm"] and final.usage.completion_tokens >= 4
    assert all("routerdc" not in (c.model_extra or {}) for c in chunks[:-1])


def test_models_endpoint(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["routerdc", *TINY_NAMES]


def test_api_rejects_unknown_fields_and_models(server):
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "routerdc", "messages": USER, "frobnicate": 1, "logit_bias": {"1": 5}})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "frobnicate: unknown field" in msg and "logit_bias: unknown field" in msg
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "gpt-9", "messages": USER})
    assert r.status_code == 404 and "tiny-a" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "routerdc", "messages": USER, "n": 5, "max_tokens": 4, "temperature": 1e9})
    assert r.status_code == 200 and len(r.json()["choices"]) == 1  # n clamped to 1, temperature to 2


def test_api_too_long_prompt_is_clear_and_keeps_routing(server, tiny):
    from routerdc.serving.backends.tokens import PromptCounter

    long = [{"role": "user", "content": "two three " * 2500}]
    r = httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny-a", "messages": long}, timeout=30)
    assert r.status_code == 400
    spec = parse_models_config({"models": _transformers_models(tiny)}).get("tiny-a")
    n = PromptCounter(spec).count(long)
    assert f"the prompt has {n} tokens but model 'tiny-a' accepts at most 4096" in r.json()["error"]["message"]
    assert r.json()["routerdc"]["llm"] == "tiny-a" and r.headers["X-RouterDC-LLM"] == "tiny-a"


def test_api_client_disconnect_aborts_generation(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      json={"model": "routerdc", "messages": USER, "max_tokens": 4000, "stream": True}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(x.startswith("data: ") for x in got)
        assert server.active() == 1
    deadline = time.monotonic() + 2.0
    while server.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active() == 0


def test_api_non_streaming_disconnect_aborts_generation(server):
    with pytest.raises(httpx.ReadTimeout):  # the client gives up (and closes) after 1 s of a ~7 s answer
        httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "tiny-a", "messages": USER, "max_tokens": 4000}, timeout=1.0)
    deadline = time.monotonic() + 2.0
    while server.active() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.active() == 0


def test_api_backend_down_gives_fast_error_with_routing(tiny_router):
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.registry import Registry

    dead = f"http://127.0.0.1:{free_port()}/v1"
    cfg = parse_models_config({"models": [{"name": n, "backend": "openai", "base_url": dead, "model": n}
                                          for n in TINY_NAMES], "limits": {"max_retries": 1}})
    app = create_api(RouterDC.from_pretrained(tiny_router), Registry(cfg))
    with TestClient(app) as c:
        for stream in (False, True):
            t0 = time.monotonic()
            r = c.post("/v1/chat/completions", json={"model": "routerdc", "messages": USER, "stream": stream})
            assert time.monotonic() - t0 < 5.0
            assert r.status_code == 503 and "cannot connect to" in r.json()["error"]["message"]
            _routing_ok(r.json()["routerdc"])
            assert r.headers["X-RouterDC-LLM"] == r.json()["routerdc"]["llm"]
        assert c.get("/health").json()["status"] == "ok"  # the service stays up


def test_cli_serve_refuses_a_mismatched_config(tiny, tiny_router, tmp_path, capsys):
    from routerdc.cli.main import main

    models = _transformers_models(tiny)[:1] + [{"name": "tiny-z", "backend": "transformers", "model": "x"}]
    cfg = write_config(tmp_path / "bad.json", models)
    assert main(["serve", "--checkpoint", str(tiny_router), "--models-config", str(cfg), "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not know: ['tiny-z']" in err and "misses LLMs the router can choose: ['tiny-b']" in err
