"""The app with a models config: answers streamed from real backends (tiny random-weight Llamas
through the transformers backend), Stop, the status area, and the routed OpenAI-compatible API
mounted beside the UI on the same port."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

from tests.serving_support import TINY_NAMES, free_port, tiny_llms, write_config  # noqa: E402
from tests.app_support.server import MAX_ROWS, TEST_FILES, train_tiny_router  # noqa: E402

QUERY = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many clips?"


@pytest.fixture(scope="module")
def gen_app(data_dir, tmp_path_factory):
    from app.main import launch
    from app.settings import Settings

    d = tmp_path_factory.mktemp("app-gen")
    router = train_tiny_router(data_dir, d / "router")
    llms = json.loads((router / "config.json").read_text())["router"]["llm_names"]
    tiny = tiny_llms()
    models = [{"name": n, "backend": "transformers", "model": str(tiny[TINY_NAMES[i % 2]]), "prompt_format": "chat",
               "max_context": 4096, "sampling": {"max_tokens": 1500, "temperature": 0.0}} for i, n in enumerate(llms)]
    cfg = write_config(d / "models.json", models, limits={"max_tokens": 1500})
    port = free_port()
    settings = Settings.from_env(checkpoint=str(router), data_dir=str(data_dir), data_files=TEST_FILES[:3],
                                 max_rows=MAX_ROWS, map_method="pca", map_per_set=MAX_ROWS, discover=False,
                                 runs_dir=str(d / "runs"), host="127.0.0.1", port=port, models_config=str(cfg),
                                 eval_max_per_task=0)
    demo = launch(settings, prevent_thread_lock=True, quiet=True)
    ctx = demo.ctx
    assert ctx.maps.wait(ctx.routers.get(ctx.default_key), 300)
    yield f"http://127.0.0.1:{port}/", demo, llms
    demo.close()


def _wait(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_answer_streams_from_the_chosen_llm(gen_app):
    url, demo, llms = gen_app
    client = Client(url, verbose=False)
    out = client.predict(QUERY, 1.0, api_name="/route")
    chosen = out[7]["llm"]
    assert chosen in llms and "waiting for the generation backend" in out[2]
    job = client.submit(api_name="/answer")
    job.result(timeout=300)
    updates = [o for o in job.outputs() if isinstance(o, str)]
    assert len(updates) >= 3, updates  # streamed: several renders as tokens arrive
    final = updates[-1]
    assert f"Answer of `{chosen}`" in final and "transformers backend" in final and "done in" in final
    assert len(final.split("~~~text\n", 1)[1].split("\n~~~")[0]) > 20  # real generated text


def test_stop_aborts_the_generation(gen_app):
    url, demo, _ = gen_app
    registry = demo.ctx.generation.registry
    client = Client(url, verbose=False)
    client.predict(QUERY, 1.0, api_name="/route")
    job = client.submit(api_name="/answer")
    assert _wait(lambda: registry.active() == 1, 60), "the generation did not start"
    t0 = time.monotonic()
    job.cancel()
    assert _wait(lambda: registry.active() == 0, 2.5), "the generation kept running after Stop"
    assert time.monotonic() - t0 < 3  # the issue: aborted within 2 s (plus polling)


def test_status_names_the_backends(gen_app):
    url, _, llms = gen_app
    md = Client(url, verbose=False).predict(api_name="/status")
    assert f"{len(llms)} candidates (transformers)" in md and "/v1/chat/completions" in md


def test_routed_api_is_mounted_beside_the_ui(gen_app):
    url, _, llms = gen_app
    ids = [m["id"] for m in httpx.get(url + "v1/models", timeout=10).json()["data"]]
    assert ids[0] == "routerdc" and set(llms) <= set(ids)
    r = httpx.post(url + "v1/chat/completions", timeout=120, json={
        "model": "routerdc", "messages": [{"role": "user", "content": QUERY}], "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["routerdc"]["llm"] in llms and body["routerdc"]["routed"] is True
    assert abs(sum(body["routerdc"]["probs"].values()) - 1) < 1e-4
    assert r.headers["x-routerdc-llm"] == body["routerdc"]["llm"]
    assert httpx.get(url, timeout=10).status_code == 200  # the UI is still at /


# ------------------------------------------------------------------ units: no server needed
def test_backend_down_gives_a_fast_clear_answer(tmp_path):
    import threading

    from app.generation import Generation, stream_answer

    cfg = write_config(tmp_path / "m.json", [{"name": "down", "backend": "openai", "model": "x",
                                              "base_url": f"http://127.0.0.1:{free_port()}/v1"}],
                       limits={"max_retries": 0, "request_timeout_s": 5})
    gen = Generation.load(str(cfg), check_health=False)
    t0 = time.monotonic()
    final = list(stream_answer(gen, "down", "hello", threading.Event()))[-1]
    assert time.monotonic() - t0 < 5
    assert "The answer failed" in final and "routing decision above still stands" in final
    assert gen.check_health()["down"].startswith("unavailable")
    assert any("`down`: unavailable" in line for line in gen.status_lines(["down"]))


def test_models_config_problems_are_reported_not_raised(tmp_path):
    from app.generation import Generation

    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, backend: nonsense}]\n", encoding="utf-8")
    gen = Generation.load(str(bad), check_health=False)
    assert gen.registry is None and "cannot be used" in gen.status_lines(["a"])[0]
    cfg = write_config(tmp_path / "m.json", [{"name": "a", "backend": "transformers",
                                              "model": str(tmp_path / "no-such-model")}])
    gen = Generation.load(str(cfg), check_health=False)
    assert gen.mismatch(["a", "b"]) and gen.check_health()["a"].startswith("unavailable: no weights reachable")
    assert any("no candidate for 1" in line for line in gen.status_lines(["a", "b"]))


def test_launch_llms_failure_is_shown_not_raised(tmp_path, monkeypatch):
    from app.generation import Generation

    monkeypatch.setenv("ROUTERDC_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    cfg = write_config(tmp_path / "m.json", [{"name": "v", "backend": "vllm", "model": "some/model",
                                              "tokenizer": str(tiny_llms()["tiny-a"]), "port": free_port()}])
    gen = Generation.load(str(cfg), launch=True)
    assert _wait(lambda: (gen.launch_state or "").startswith("failed"), 30), gen.launch_state
    assert "cannot start" in gen.launch_state and "no-such-python" in gen.launch_state
    assert any("vLLM servers launched by the app: failed" in line for line in gen.status_lines(["v"]))
    gen.close()
