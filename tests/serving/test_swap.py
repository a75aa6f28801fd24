"""Sleep-mode swapping of candidates that do not fit one GPU together.

vLLM on CPU refuses ``--enable-sleep-mode``, so the servers here are the project's own
``routerdc serve --enable-sleep-mode`` processes (real tiny Llamas through the transformers
backend), which speak vLLM's sleep-mode protocol. They are started by the real
:class:`~routerdc.serving.launcher.Launcher` (its command template), and the real
:class:`~routerdc.serving.swap.SleepSwapper` wakes and puts them to sleep over HTTP.
"""

from __future__ import annotations

import sys
import threading
import time

import httpx
import pytest

from routerdc.serving.backends import BackendUnavailable, SamplingParams
from routerdc.serving.config import ConfigError, parse_models_config
from tests.serving_support import TINY_NAMES, build_router, free_port, tiny_llms, write_config

USER = [{"role": "user", "content": "two plus three?"}]


def _vllm(name, port, tokenizer, share=0.6, max_tokens=8):
    return {"name": name, "backend": "vllm", "model": name, "tokenizer": str(tokenizer), "port": port,
            "gpu_memory_utilization": share, "prompt_format": "chat", "max_context": 4096,
            "sampling": {"max_tokens": max_tokens, "temperature": 0.0}}


def test_gpu_plan_decides_when_to_swap():
    two = [_vllm("a", 9001, "t", 0.5), _vllm("b", 9002, "t", 0.5)]
    assert not parse_models_config({"models": two, "gpu": {"memory_budget": 1.0}}).uses_sleep_mode
    assert parse_models_config({"models": two}).uses_sleep_mode  # 1.0 > 0.9
    no_plan = [{k: v for k, v in m.items() if k != "gpu_memory_utilization"} for m in two]
    assert not parse_models_config({"models": no_plan}).uses_sleep_mode  # no shares declared: no GPU plan
    assert not parse_models_config({"models": no_plan, "gpu": {"sleep_mode": "never"}}).uses_sleep_mode
    assert parse_models_config({"models": two, "gpu": {"memory_budget": 1.0, "sleep_mode": "always"}}).uses_sleep_mode
    with pytest.raises(ConfigError, match="add up to 1 > gpu.memory_budget=0.9.*'never'"):
        parse_models_config({"models": two, "gpu": {"sleep_mode": "never"}})
    with pytest.raises(ConfigError, match="ask for more than gpu.memory_budget=0.5 on their own"):
        parse_models_config({"models": [_vllm("a", 9001, "t", 0.6)], "gpu": {"memory_budget": 0.5}})
    with pytest.raises(ConfigError, match="gpu.swap_ttl"):
        parse_models_config({"models": two, "gpu": {"swap_ttl": 3}})  # unknown field


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """Two sleep-mode servers (one per candidate) started by the Launcher, asleep once loaded."""
    from routerdc.serving.launcher import LaunchOptions, Launcher

    d = tmp_path_factory.mktemp("swap")
    tiny = tiny_llms()
    router = build_router(d / "router", TINY_NAMES)
    served = write_config(d / "served.json", [
        {"name": n, "backend": "transformers", "model": str(tiny[n]), "prompt_format": "chat", "max_context": 4096}
        for n in TINY_NAMES], limits={"max_tokens": 1000})
    ports = {n: free_port() for n in TINY_NAMES}
    cfg = parse_models_config({"models": [_vllm(n, ports[n], tiny[n], max_tokens=8) for n in TINY_NAMES],
                               "limits": {"max_tokens": 1000, "max_retries": 0}})
    assert cfg.uses_sleep_mode
    command = (sys.executable, "-m", "routerdc", "serve", "--checkpoint", str(router), "--models-config",
               str(served), "--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning")
    launcher = Launcher(cfg, LaunchOptions(command=command, gpu=False, health_timeout_s=180, log_dir=str(d / "logs")))
    launcher.start()
    yield cfg, launcher, ports
    launcher.stop()


def _sleeping(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/is_sleeping", timeout=10).json()["is_sleeping"]


def test_launcher_starts_each_server_in_sleep_mode_and_puts_it_to_sleep(swapped):
    cfg, launcher, ports = swapped
    assert all("--enable-sleep-mode" in s.command() for s in launcher.servers)
    assert all(s.env()["VLLM_SERVER_DEV_MODE"] == "1" for s in launcher.servers)
    assert [e.split(":")[0] for e in launcher.events[:2]] == list(TINY_NAMES)
    assert all(_sleeping(p) for p in ports.values())


def test_swapper_wakes_the_chosen_candidate_and_never_sleeps_a_busy_one(swapped):
    from routerdc.serving.registry import Registry
    from routerdc.serving.swap import SwappedBackend

    cfg, _, ports = swapped
    a, b = TINY_NAMES
    registry = Registry(cfg)
    try:
        sw = registry.swapper
        ba, bb = registry.get(a), registry.get(b)
        assert isinstance(ba, SwappedBackend)
        params = SamplingParams.clamp(ba.spec, cfg.limits)
        assert "".join(ba.stream(USER, params)) and sw.events == [f"wake {a}"]
        assert not _sleeping(ports[a]) and _sleeping(ports[b])
        assert "".join(bb.stream(USER, params)) and sw.events[1:] == [f"sleep {a}", f"wake {b}"]
        assert _sleeping(ports[a]) and not _sleeping(ports[b])

        # b answers a long request; a request for a must wait for it instead of putting b to sleep
        long = SamplingParams.clamp(bb.spec, cfg.limits, max_tokens=400)
        started, done = threading.Event(), {}

        def run_b():
            for _ in bb.stream(USER, long):
                started.set()
            done["b"] = time.monotonic()

        t = threading.Thread(target=run_b)
        t.start()
        assert started.wait(60)
        text_a = "".join(ba.stream(USER, params))
        done["a"] = time.monotonic()
        t.join(60)
        assert text_a and done["b"] <= done["a"]
        assert sw.events[3:] == [f"sleep {b}", f"wake {a}"]

        # a request that cannot get the GPU in time fails clearly
        sw.timeout_s = 0.5
        sw.acquire(a)
        try:
            t0 = time.monotonic()
            with pytest.raises(BackendUnavailable, match="the GPU is busy"):
                sw.acquire(b)
            assert time.monotonic() - t0 < 5
        finally:
            sw.release(a)
    finally:
        registry.close()


def test_a_sleeping_server_refuses_generation_clearly(swapped):
    from routerdc.serving.backends import make_backend

    cfg, _, ports = swapped
    name = TINY_NAMES[1]
    httpx.post(f"http://127.0.0.1:{ports[name]}/sleep?level=1", timeout=30).raise_for_status()
    raw = make_backend(cfg.get(name), cfg)  # no swapper: straight to the sleeping server
    with pytest.raises(BackendUnavailable, match="asleep"):
        "".join(raw.stream(USER, SamplingParams.clamp(raw.spec, cfg.limits)))
    r = httpx.post(f"http://127.0.0.1:{ports[name]}/sleep?level=2", timeout=30)
    assert r.status_code == 400 and "level 2 is not supported" in r.json()["error"]["message"]
