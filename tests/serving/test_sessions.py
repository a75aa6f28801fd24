"""The session store of the routed API: TTL (on an injected clock), the LRU bound, reroute, an LLM
that is gone, thread safety; and the bounds on ``serve``."""

from __future__ import annotations

import random
import threading

import pytest

from routerdc.serving.sessions import SessionConfig, SessionStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_turn_routes_later_turns_keep():
    s = SessionStore(SessionConfig(ttl_s=60, max_sessions=10), clock=Clock())
    assert s.decide("k", "a") == ("a", {"decision": "routed", "reason": "new"})
    assert s.decide("k", "b") == ("a", {"decision": "kept"})  # the router now says b: the session stays on a
    assert s.decide("k", "b", reroute=True) == ("b", {"decision": "routed", "reason": "reroute", "previous": "a"})
    assert s.decide("k", "a") == ("b", {"decision": "kept"})
    gone = s.decide("k", "a", available=lambda llm: llm != "b")
    assert gone == ("a", {"decision": "routed", "reason": "unavailable", "previous": "b"})
    assert s.get("k") == "a" and s.get("other") is None and len(s) == 1


def test_sessions_expire_after_the_ttl_since_their_last_turn():
    clock = Clock()
    s = SessionStore(SessionConfig(ttl_s=60, max_sessions=10), clock=clock)
    s.decide("k", "a")
    clock.now += 59
    assert s.decide("k", "b")[0] == "a"  # a turn starts the TTL again
    clock.now += 59
    assert s.get("k") == "a"  # get does not refresh
    clock.now += 1
    assert s.get("k") is None and len(s) == 0
    assert s.decide("k", "b") == ("b", {"decision": "routed", "reason": "new"})


def test_the_least_recently_used_session_goes_first():
    s = SessionStore(SessionConfig(ttl_s=60, max_sessions=3), clock=Clock())
    for k in "abc":
        s.decide(k, k)
    s.decide("a", "x")  # a is used again: b is now the oldest
    s.decide("d", "d")
    assert [s.get(k) for k in "abcd"] == ["a", None, "c", "d"] and len(s) == 3 and s.evicted == 1
    assert s.decide("b", "z") == ("z", {"decision": "routed", "reason": "new"})
    assert s.get("c") is None and s.evicted == 2


def test_move_and_forget_only_touch_the_named_binding():
    s = SessionStore(SessionConfig(ttl_s=60), clock=Clock())
    s.decide("k", "a")
    assert not s.move("k", "b", "c") and s.get("k") == "a"
    assert s.move("k", "a", "c") and s.get("k") == "c"
    s.forget("k", "a")
    assert s.get("k") == "c"
    s.forget("k", "c")
    assert s.get("k") is None
    assert s.status() == {"live": 0, "ttl_s": 60, "max_sessions": 10_000, "evicted": 0}


def test_concurrent_sessions_from_threads():
    s = SessionStore(SessionConfig(ttl_s=60, max_sessions=64))
    llms = [f"llm-{i}" for i in range(5)]
    start = threading.Barrier(16)
    kept: dict[int, set[str]] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        rng = random.Random(i)
        try:
            start.wait()
            kept[i] = {s.decide(f"s{i}", rng.choice(llms))[0] for _ in range(300)}
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and all(len(v) == 1 for v in kept.values()) and len(kept) == 16 and len(s) == 16
    # more sessions than the bound, from many threads at once: the bound holds
    small = SessionStore(SessionConfig(ttl_s=60, max_sessions=8))
    start = threading.Barrier(16)

    def churn(i: int) -> None:
        start.wait()
        for j in range(200):
            small.decide(f"t{i}-{j % 20}", llms[j % 5])

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(small) == 8 and small.evicted >= 16 * 20 - 8  # every other key was evicted at least once


@pytest.mark.parametrize("kw, needle", [({"ttl_s": 0}, "TTL"), ({"ttl_s": float("inf")}, "TTL"),
                                        ({"max_sessions": 0}, "max_sessions"), ({"max_sessions": 2.5}, "max_sessions")])
def test_session_bounds_are_checked(kw, needle):
    with pytest.raises(ValueError, match=needle):
        SessionConfig(**kw)


@pytest.mark.parametrize("flags, needle", [(["--session-ttl", "0"], "session TTL"),
                                           (["--max-sessions", "0"], "max_sessions")])
def test_serve_refuses_bad_session_bounds(flags, needle, capsys):
    from routerdc.cli.main import main

    assert main(["serve", "--checkpoint", "unused", "--models-config", "unused", *flags]) == 2
    assert needle in capsys.readouterr().err
