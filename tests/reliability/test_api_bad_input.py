"""The routed API under bad input, through a real server (httpx): the response, and the next request.

Covers issue 15's items 2 (auth, body size), 3 (stop strings), 6 (usage), 7 (lone surrogates),
8 (seed range) and 12 ([DONE] after an error).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from routerdc.limits import BOUNDS

from .conftest import KEYS, transformers_models

OK = {"model": "routerdc", "messages": [{"role": "user", "content": "what is two and three?"}], "max_tokens": 4}


def _auth(key=KEYS[0]):
    return {"Authorization": f"Bearer {key}"}


def _post(srv, body=None, *, headers=None, content=None, timeout=30.0):
    h = {"Content-Type": "application/json", **(_auth() if headers is None else headers)}
    return httpx.post(srv.url + "/v1/chat/completions", json=body if content is None else None, content=content,
                      headers=h, timeout=timeout)


def _error(r, status):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"]
    return err["message"]


def _still_serves(srv):
    r = _post(srv, OK)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + KEYS[0]},
                                     {"Authorization": "Bearer " + KEYS[0] + "x"}])
def test_requests_without_a_valid_key_get_401_in_the_openai_shape(keyed_server, headers):
    r = _post(keyed_server, OK, headers=headers)
    assert "API key" in _error(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"


def test_every_key_works_and_docs_follow_the_same_rule(keyed_server):
    for key in KEYS:
        assert httpx.get(keyed_server.url + "/v1/models", headers=_auth(key)).status_code == 200
        assert httpx.get(keyed_server.url + "/v1/models", headers={"X-API-Key": key}).status_code == 200
    for path in ("/docs", "/openapi.json", "/redoc", "/v1/models"):
        assert httpx.get(keyed_server.url + path).status_code == 401
        assert httpx.get(keyed_server.url + path, headers=_auth()).status_code == 200
    assert httpx.get(keyed_server.url + "/health").status_code == 200  # liveness stays open
    _still_serves(keyed_server)


def test_a_10_mb_body_is_refused_in_milliseconds(keyed_server):
    big = json.dumps({**OK, "messages": [{"role": "user", "content": "x" * (10 << 20)}]}).encode()
    for headers in (_auth(), {}):  # with or without a key: the size is decided before anything else is read
        t = time.perf_counter()
        r = _post(keyed_server, content=big, headers=headers)
        assert time.perf_counter() - t < 2.0
        assert r.status_code in (401, 413)
    r = _post(keyed_server, content=big)
    assert f"{BOUNDS.max_body_bytes:,} bytes" in _error(r, 413)
    _still_serves(keyed_server)


def test_a_chunked_body_over_the_bound_is_refused_while_streaming_in(keyed_server):
    def chunks():
        yield b'{"model": "routerdc", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    r = httpx.post(keyed_server.url + "/v1/chat/completions", content=chunks(),
                   headers={**_auth(), "Content-Type": "application/json"}, timeout=30)
    _error(r, 413)
    _still_serves(keyed_server)


BAD = [
    ("lone surrogate", b'{"model": "routerdc", "messages": [{"role": "user", "content": "a\\ud800b"}]}', "surrogate"),
    ("surrogate in a key", b'{"model": "routerdc", "messages": [{"role": "user", "content": "hi"}], "\\udc00": 1}',
     "invalid text"),
    ("seed 2^70", {**OK, "seed": 2**70}, "seed"),
    ("negative seed", {**OK, "seed": -1}, "seed"),
    ("four 100k stop strings", {**OK, "stop": ["z" * 100_000] * 4}, "stop"),
    ("five stop strings", {**OK, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("empty stop string", {**OK, "stop": [""]}, "stop"),
    ("too many messages", {**OK, "messages": OK["messages"] * (BOUNDS.max_messages + 1)}, "messages"),
    ("too long a message", {**OK, "messages": [{"role": "user", "content": "w" * (BOUNDS.max_message_chars + 1)}]},
     "messages.0.content"),
    ("not JSON", b"{this is not json", "not valid JSON"),
    ("a JSON list", b"[1, 2]", "invalid request"),
    ("deep JSON", b"[" * 50_000 + b"]" * 50_000, "invalid request"),
]


@pytest.mark.parametrize("name,body,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_fast_clear_400(keyed_server, name, body, expect):
    t = time.perf_counter()
    r = _post(keyed_server, content=body) if isinstance(body, bytes) else _post(keyed_server, body)
    assert time.perf_counter() - t < 2.0
    assert expect in _error(r, 400)
    _still_serves(keyed_server)


def test_usage_and_finish_reason_come_from_the_backend(keyed_server):
    """The tiny Llamas never emit EOS, so an answer runs to max_tokens: exactly 8 generated tokens."""
    r = _post(keyed_server, {**OK, "max_tokens": 8})
    body = r.json()
    assert body["usage"]["completion_tokens"] == 8 and body["choices"][0]["finish_reason"] == "length"
    r = _post(keyed_server, {**OK, "max_tokens": 10_000})  # clamped by limits.max_tokens = 64
    assert r.json()["usage"]["completion_tokens"] == 64
    with httpx.stream("POST", keyed_server.url + "/v1/chat/completions", headers=_auth(), timeout=30,
                      json={**OK, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}) as s:
        lines = [x for x in s.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert last["usage"]["completion_tokens"] == 5 and last["choices"][0]["finish_reason"] == "length"


def test_a_public_bind_without_a_key_is_refused_at_start(tiny_router, tmp_path, monkeypatch, capsys):
    from routerdc.cli.main import main

    monkeypatch.delenv("ROUTERDC_API_KEY", raising=False)
    cfg = tmp_path / "m.json"
    cfg.write_text(json.dumps({"models": [{"name": "x", "backend": "recorded"}]}))
    args = ["serve", "--checkpoint", str(tiny_router), "--models-config", str(cfg), "--host", "0.0.0.0"]
    assert main(args) == 2
    assert "--allow-unauthenticated" in capsys.readouterr().err


def test_check_bind_says_what_it_does():
    from routerdc.serving.auth import BindRefused, check_bind, key_ok, parse_keys

    assert "loopback" in check_bind("127.0.0.1", (), False) and "loopback" in check_bind("::1", (), False)
    assert "NO API key" in check_bind("0.0.0.0", (), True)
    assert "required" in check_bind("0.0.0.0", ("k",), False)
    with pytest.raises(BindRefused):
        check_bind("0.0.0.0", (), False)
    assert parse_keys("a, b,,a", ["c,d"]) == ("a", "b", "c", "d")
    assert key_ok("b", ("a", "b")) and not key_ok("c", ("a", "b")) and not key_ok("", ("a",))


def test_done_follows_the_error_event_when_a_backend_dies_mid_stream(tiny, tiny_router, tmp_path):
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.config import parse_models_config
    from routerdc.serving.registry import Registry
    from tests.serving_support import TINY_NAMES, ServerProcess, write_config

    back = ServerProcess(tiny_router, write_config(tmp_path / "b.json", transformers_models(tiny),
                                                   limits={"max_tokens": 4000}), tmp_path / "b.log")
    try:
        cfg = parse_models_config({"models": [{"name": n, "backend": "openai", "base_url": back.url + "/v1", "model": n,
                                               "tokenizer": str(tiny[n])} for n in TINY_NAMES],
                                   "limits": {"max_tokens": 4000, "max_retries": 0}})
        app = create_api(RouterDC.from_pretrained(tiny_router), Registry(cfg))
        with TestClient(app) as c:
            lines = []
            with c.stream("POST", "/v1/chat/completions",
                          json={**OK, "max_tokens": 4000, "stream": True, "temperature": 1.0}) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if len(lines) == 6:
                        back.kill()
            data = [x for x in lines if x.startswith("data: ")]
            assert data[-1] == "data: [DONE]"
            err = json.loads(data[-2][6:])
            assert err["error"]["type"] == "backend_error" and "routerdc" in err
            t = time.perf_counter()
            r = c.post("/v1/chat/completions", json=OK)
            assert r.status_code == 503 and time.perf_counter() - t < 5.0
    finally:
        back.stop()


def test_a_keyless_loopback_api_refuses_foreign_host_headers(tiny, tiny_router):
    """DNS rebinding: a web page's request to a key-less loopback API carries its own Host name."""
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.config import parse_models_config
    from routerdc.serving.registry import Registry

    cfg = parse_models_config({"models": transformers_models(tiny)})
    app = create_api(RouterDC.from_pretrained(tiny_router), Registry(cfg), loopback_hosts=True)
    for base, status in (("http://127.0.0.1:8000", 200), ("http://localhost", 200), ("http://[::1]:9", 200),
                         ("http://evil.example", 403), ("http://127.0.0.1.evil.example:8000", 403)):
        with TestClient(app, base_url=base) as c:
            r = c.get("/v1/models")
            assert r.status_code == status, (base, r.text)
            if status == 403:
                assert "Host" in r.json()["error"]["message"]
            assert c.get("/health").status_code == 200
