"""The routed API's cost weight (field and model-name forms) and session affinity, end to end: the
real FastAPI app over a router of the 11 RouterBench LLMs with the costs ``python -m routerdc costs``
sets, answering with the RouterBench recorded answers."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import ROOT, build_router, free_port  # noqa: E402

MBPP = "routerbench/routerbench_zs/mbpp_test.csv"
LAMBDAS = (0.0, 0.1, 0.3, 1.0, 3.0, 1000.0)  # 1000: every query to the cheapest LLM


@pytest.fixture(scope="module")
def rb(data_dir, tmp_path_factory):
    """Queries with every recorded answer, the router folders (with and without costs), the config."""
    from routerdc.cli.main import main
    from routerdc.data import load_scores
    from routerdc.serving.config import load_models_config

    s = load_scores(data_dir / MBPP, missing="drop")[0]
    rows = [i for i in range(len(s)) if all(isinstance(a, str) and a for a in s.responses[i])]
    d = tmp_path_factory.mktemp("rb-api")
    plain = build_router(d / "router", s.llms)
    assert main(["costs", "--checkpoint", str(plain), "--scores", MBPP, "--data-dir", str(data_dir),
                 "--output", str(d / "costed")]) == 0
    return {"queries": [s.queries[i] for i in rows[:24]], "llms": tuple(s.llms), "plain": plain,
            "costed": d / "costed", "config": load_models_config(ROOT / "configs" / "routerbench_recorded.yaml")}


@pytest.fixture(scope="module")
def router(rb):
    from routerdc.inference import load_router

    return load_router(rb["costed"], "torch", "cpu")


def _client(router, config, **kw):
    from fastapi.testclient import TestClient

    from routerdc.serving.api import create_api
    from routerdc.serving.registry import Registry

    return TestClient(create_api(router, Registry(config), **kw))


@pytest.fixture(scope="module")
def client(router, rb):
    with _client(router, rb["config"]) as c:
        yield c


def _ask(client, query, model="routerdc", status=200, history=(), **fields):
    body = {"model": model, "messages": [*history, {"role": "user", "content": query}], **fields}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == status, r.text
    return r


def _probs(router, query, lam=0.0):
    r = router.route([query], cost_weight=lam)
    return {n: float(p) for n, p in zip(r.llm_names, r.probs[0])}


# ------------------------------------------------------------------------------------ cost weight
def test_cost_weight_field_and_model_name_forms(client, router, rb):
    q = rb["queries"][0]
    for lam in (0.5, 2.0):
        by_field = _ask(client, q, routerdc={"cost_weight": lam})
        by_name = _ask(client, q, model=f"routerdc:{lam:g}")
        for r in (by_field, by_name):
            routing = r.json()["routerdc"]
            assert routing["cost_weight"] == lam and r.headers["X-RouterDC-Cost-Weight"] == repr(lam)
            assert routing["routed"] is True and routing["probs"] == _probs(router, q, lam)
            assert routing["llm"] == max(routing["probs"], key=routing["probs"].get) == r.headers["X-RouterDC-LLM"]
            assert r.json()["model"] == routing["llm"] and r.json()["choices"][0]["message"]["content"]
        assert by_field.json()["routerdc"] == by_name.json()["routerdc"]
    both = _ask(client, q, model="routerdc:2", routerdc={"cost_weight": 2})  # the same λ twice is fine
    assert both.json()["routerdc"]["cost_weight"] == 2.0
    named = _ask(client, q, model=rb["llms"][0], routerdc={"cost_weight": 3})  # the router's opinion under λ
    assert named.json()["routerdc"]["llm"] == rb["llms"][0] and named.json()["routerdc"]["routed"] is False
    assert named.json()["routerdc"]["router_choice"] == max(_probs(router, q, 3.0), key=_probs(router, q, 3.0).get)
    entry = client.get("/v1/models").json()["data"][0]
    assert entry["id"] == "routerdc" and entry["routerdc"]["cost_weight"] is True
    assert list(entry["routerdc"]["llm_cost"]) == list(rb["llms"])


def test_cost_weight_zero_is_todays_routing(client, router, rb):
    for q in rb["queries"][:3]:
        want = _probs(router, q)
        forms = [_ask(client, q), _ask(client, q, routerdc={"cost_weight": 0}), _ask(client, q, model="routerdc:0"),
                 _ask(client, q, model="routerdc:0.0", routerdc={"session": None})]
        for r in forms:
            assert r.json()["routerdc"]["probs"] == want and r.json()["routerdc"]["cost_weight"] == 0.0
        assert len({json.dumps(r.json()["routerdc"], sort_keys=True) for r in forms}) == 1


def test_total_cost_is_non_increasing_in_the_cost_weight(client, router, rb):
    cost = dict(zip(router.config.llm_names, router.config.llm_cost))
    totals = []
    for lam in LAMBDAS:
        llms = [_ask(client, q, model=f"routerdc:{lam:g}").json()["routerdc"]["llm"] for q in rb["queries"]]
        totals.append(sum(cost[n] for n in llms))
    assert all(b <= a + 1e-12 for a, b in zip(totals, totals[1:])), totals
    assert totals[-1] < totals[0] and totals[-1] == pytest.approx(len(rb["queries"]) * min(cost.values()))


@pytest.mark.parametrize("model, fields, needle", [
    ("routerdc", {"routerdc": {"cost_weight": -1}}, "routerdc.cost_weight: Input should be greater than or equal"),
    ("routerdc", {"routerdc": {"cost_weight": "0.5"}}, "routerdc.cost_weight: Input should be a valid number"),
    ("routerdc", {"routerdc": {"budget": 1}}, "routerdc.budget: unknown field"),
    ("routerdc:-1", {}, "after 'routerdc:' comes the cost weight, a finite number >= 0"),
    ("routerdc:abc", {}, "not 'abc'"),
    ("routerdc:inf", {}, "not 'inf'"),
    ("routerdc:1e999", {}, "not '1e999'"),
    ("routerdc:0.5", {"routerdc": {"cost_weight": 1}}, "asks for cost weight 0.5 but routerdc.cost_weight is 1"),
])
def test_invalid_cost_weights_are_clear_400s(client, rb, model, fields, needle):
    r = _ask(client, rb["queries"][0], model=model, status=400, **fields)
    assert needle in r.json()["error"]["message"] and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "1e400"])
def test_non_finite_cost_weights_are_400s(client, number):
    body = ('{"model": "routerdc", "messages": [{"role": "user", "content": "hi"}], "routerdc": {"cost_weight": '
            + number + '}}')
    r = client.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "routerdc.cost_weight: Input should be a finite number" in r.json()["error"]["message"]


def test_unknown_models_name_the_forms(client):
    r = _ask(client, "hi", model="routerdcx", status=404)
    assert "'routerdc:<cost weight>'" in r.json()["error"]["message"]


def test_a_router_without_costs_refuses_a_cost_weight(rb):
    from routerdc.inference import load_router

    with _client(load_router(rb["plain"], "torch", "cpu"), rb["config"]) as c:
        q = rb["queries"][0]
        r = _ask(c, q, model="routerdc:0.5", status=400)
        assert "cost weight 0.5: this router has no LLM costs (llm_cost)" in r.json()["error"]["message"]
        assert "python -m routerdc costs" in r.json()["error"]["message"]
        assert _ask(c, q, routerdc={"cost_weight": 0}).json()["routerdc"]["cost_weight"] == 0.0
        assert c.get("/v1/models").json()["data"][0]["routerdc"]["cost_weight"] is False


def test_mixed_cost_weights_share_a_micro_batch(router, rb):
    from routerdc.model.router import RouterDC
    from routerdc.serving.batcher import BatchConfig, MicroBatcher

    jobs = [(q, lam) for q in rb["queries"][:4] for lam in (0.0, 0.5, 3.0)]
    for r in (router, RouterDC.from_pretrained(rb["costed"])):  # Router.embed and RouterDC.embed_texts
        batcher = MicroBatcher(r, BatchConfig(window_ms=300))
        got = [None] * len(jobs)
        start = threading.Barrier(len(jobs))

        def client(i, q, lam):
            start.wait()
            got[i] = batcher.route(q, cost_weight=lam)

        threads = [threading.Thread(target=client, args=(i, *job)) for i, job in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        batcher.close()
        assert batcher.batches < len(jobs) and batcher.routed == len(jobs)
        for (q, lam), row in zip(jobs, got):
            alone = r.route([q], cost_weight=lam)
            assert row.cost_weight == lam and row.llms == alone.llms
            np.testing.assert_allclose(row.probs, alone.probs, atol=1e-5)


# ------------------------------------------------------------------------------------- sessions
def _two_queries(router, rb):
    """Two queries the router sends to different LLMs."""
    choice = {q: router.route([q]).llms[0] for q in rb["queries"][:12]}
    q1 = rb["queries"][0]
    q2 = next(q for q, c in choice.items() if c != choice[q1])
    return q1, q2, choice[q1], choice[q2]


def test_a_session_stays_on_its_first_llm(client, router, rb):
    q1, q2, c1, c2 = _two_queries(router, rb)
    first = _ask(client, q1, routerdc={"session": "conv-1"})
    assert first.json()["routerdc"]["llm"] == c1 and first.headers["X-RouterDC-Session"] == "routed"
    assert first.json()["routerdc"]["session"] == {"id": "conv-1", "from": "session", "decision": "routed",
                                                   "reason": "new"}
    history = [{"role": "user", "content": q1}, {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]}]
    later = _ask(client, q2, history=history, routerdc={"session": "conv-1"})
    routing = later.json()["routerdc"]
    assert routing["llm"] == c1 and routing["router_choice"] == c2 and later.headers["X-RouterDC-Session"] == "kept"
    assert routing["session"] == {"id": "conv-1", "from": "session", "decision": "kept"}
    assert later.json()["model"] == c1 and later.headers["X-RouterDC-LLM"] == c1
    assert _ask(client, q2).json()["routerdc"]["llm"] == c2 and "session" not in _ask(client, q2).json()["routerdc"]
    again = _ask(client, q2, history=history, routerdc={"session": "conv-1", "reroute": True}).json()["routerdc"]
    assert again["llm"] == c2 and again["session"] == {"id": "conv-1", "from": "session", "decision": "routed",
                                                       "reason": "reroute", "previous": c1}
    assert _ask(client, q1, routerdc={"session": "conv-1"}).json()["routerdc"]["llm"] == c2  # kept after reroute
    # the OpenAI user field names a session too (its own namespace); routerdc.session wins over it
    assert _ask(client, q1, user="conv-1").json()["routerdc"]["session"]["reason"] == "new"
    by_user = _ask(client, q2, user="conv-1").json()["routerdc"]
    assert by_user["llm"] == c1 and by_user["session"] == {"id": "conv-1", "from": "user", "decision": "kept"}
    assert _ask(client, q2, user="conv-1", routerdc={"session": "conv-2"}).json()["routerdc"]["session"]["from"] == "session"
    named = _ask(client, q2, model=c1, routerdc={"session": "conv-1"}).json()["routerdc"]  # a named LLM: no session
    assert "session" not in named and named["llm"] == c1
    assert client.get("/v1/routerdc/status").json()["sessions"]["live"] >= 3


def test_sessions_expire_and_are_bounded(router, rb):
    from routerdc.serving.sessions import SessionConfig, SessionStore

    q1, q2, c1, c2 = _two_queries(router, rb)
    now = [0.0]
    store = SessionStore(SessionConfig(ttl_s=60, max_sessions=2), clock=lambda: now[0])
    with _client(router, rb["config"], sessions=store) as c:
        _ask(c, q1, routerdc={"session": "a"})
        now[0] += 59
        assert _ask(c, q2, routerdc={"session": "a"}).json()["routerdc"]["llm"] == c1  # kept, TTL restarts
        now[0] += 60
        expired = _ask(c, q2, routerdc={"session": "a"}).json()["routerdc"]
        assert expired["llm"] == c2 and expired["session"]["reason"] == "new"
        _ask(c, q1, routerdc={"session": "b"})
        _ask(c, q1, routerdc={"session": "c"})  # the third session evicts the least recently used, a
        assert store.evicted == 1 and len(store) == 2
        assert _ask(c, q1, routerdc={"session": "a"}).json()["routerdc"]["session"]["reason"] == "new"
        assert _ask(c, q2, routerdc={"session": "c"}).json()["routerdc"]["session"]["decision"] == "kept"
        assert c.get("/v1/routerdc/status").json()["sessions"] == {"live": 2, "ttl_s": 60, "max_sessions": 2,
                                                                   "evicted": 2}


def test_a_kept_llm_that_is_gone_or_down_is_rerouted(router, rb):
    from routerdc.inference import load_router
    from routerdc.serving.config import parse_models_config
    from routerdc.serving.sessions import SessionStore

    q1, q2, c1, c2 = _two_queries(router, rb)
    store = SessionStore()
    with _client(router, rb["config"], sessions=store) as c:
        assert _ask(c, q1, routerdc={"session": "s"}).json()["routerdc"]["llm"] == c1
        assert _ask(c, q1, routerdc={"session": "t"}).json()["routerdc"]["llm"] == c1
    # the fleet changed (c1 removed) but the sessions are shared: re-routed, and said so
    fewer = build_router(rb["costed"].parent / "fewer", [n for n in rb["llms"] if n != c1])
    raw = rb["config"].model_dump()
    raw["models"] = [m for m in raw["models"] if m["name"] != c1]
    with _client(load_router(fewer, "torch", "cpu"), parse_models_config(raw), sessions=store) as c:
        gone = _ask(c, q1, routerdc={"session": "s"}).json()["routerdc"]
        assert gone["llm"] != c1 and gone["session"]["decision"] == "routed"
        assert gone["session"]["reason"] == "unavailable" and gone["session"]["previous"] == c1
    # c1's server is down: the kept turn goes to the router's next choice
    raw = rb["config"].model_dump()
    raw["models"] = [m if m["name"] != c1 else {"name": c1, "backend": "openai", "model": c1,
                                               "base_url": f"http://127.0.0.1:{free_port()}/v1"}
                     for m in raw["models"]]
    raw["limits"] = {**raw["limits"], "max_retries": 1}
    with _client(router, parse_models_config(raw), sessions=store) as c:
        down = _ask(c, q2, routerdc={"session": "t"})
        routing = down.json()["routerdc"]
        assert routing["llm"] == c2 and routing["session"] == {"id": "t", "from": "session", "decision": "routed",
                                                               "reason": "unavailable", "previous": c1}
        assert down.headers["X-RouterDC-LLM"] == c2 and store.get("session:t") == c2
        first = _ask(c, q1, routerdc={"session": "u"}, status=503)  # a first turn that fails binds nothing
        assert first.json()["routerdc"]["llm"] == c1 and store.get("session:u") is None


def test_concurrent_sessions_through_the_api(client, router, rb):
    qs = rb["queries"][:6]
    firsts: dict[int, str] = {}
    kept: dict[int, set[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def conversation(i: int) -> None:
        try:
            start.wait()
            turns = [_ask(client, qs[(i + t) % len(qs)], routerdc={"session": f"thread-{i}"}).json()["routerdc"]
                     for t in range(3)]
            firsts[i] = turns[0]["llm"]
            kept[i] = {r["llm"] for r in turns}
            assert [r["session"]["decision"] for r in turns] == ["routed", "kept", "kept"]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=conversation, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(kept[i] == {firsts[i]} for i in range(8))
    assert all(firsts[i] == router.route([qs[i % len(qs)]]).llms[0] for i in range(8))


def test_a_streamed_turn_reports_the_session_and_cost_weight(client, router, rb):
    q1, q2, c1, c2 = _two_queries(router, rb)
    _ask(client, q1, routerdc={"session": "stream-1"})
    r = _ask(client, q2, model="routerdc:0.25", stream=True, routerdc={"session": "stream-1"})
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and r.headers["X-RouterDC-Session"] == "kept"
    last = json.loads(events[-2])["routerdc"]
    assert last["llm"] == c1 and last["cost_weight"] == 0.25 and last["session"]["decision"] == "kept"


def test_serve_passes_its_session_bounds_to_the_api(rb, monkeypatch):
    import uvicorn

    from routerdc.cli.main import main

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert main(["serve", "--checkpoint", str(rb["costed"]), "--models-config",
                 str(ROOT / "configs" / "routerbench_recorded.yaml"), "--session-ttl", "90",
                 "--max-sessions", "5", "--port", "1"]) == 0
    store = served["app"].state.sessions
    assert (store.config.ttl_s, store.config.max_sessions) == (90.0, 5) and served["port"] == 1
