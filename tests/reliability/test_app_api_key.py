"""The routed API mounted in the app takes the app's API keys; the UI beside it stays open."""

from __future__ import annotations

import json

import httpx
import pytest

pytest.importorskip("gradio")

from tests.app_support.server import MAX_ROWS, TEST_FILES, train_tiny_router  # noqa: E402
from tests.serving_support import TINY_NAMES, free_port, tiny_llms, write_config  # noqa: E402


@pytest.mark.slow
def test_app_mounts_v1_behind_its_keys(data_dir, tmp_path):
    from app.main import launch
    from app.settings import Settings

    router = train_tiny_router(data_dir, tmp_path / "router")
    llms = json.loads((router / "config.json").read_text())["router"]["llm_names"]
    tiny = tiny_llms()
    models = [{"name": n, "backend": "transformers", "model": str(tiny[TINY_NAMES[i % 2]]),
               "sampling": {"max_tokens": 4, "temperature": 0.0}} for i, n in enumerate(llms)]
    cfg = write_config(tmp_path / "models.json", models)
    port = free_port()
    settings = Settings.from_env(checkpoint=str(router), data_dir=str(data_dir), data_files=TEST_FILES[:1],
                                 max_rows=MAX_ROWS, map_method="pca", map_per_set=MAX_ROWS, discover=False,
                                 runs_dir=str(tmp_path / "runs"), host="127.0.0.1", port=port,
                                 models_config=str(cfg), eval_max_per_task=0, api_keys=("app-key-1",))
    demo = launch(settings, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        body = {"model": "routerdc", "messages": [{"role": "user", "content": "2 + 2?"}], "max_tokens": 2}
        r = httpx.post(url + "v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(url + "openapi.json", timeout=10).status_code == 401
        r = httpx.post(url + "v1/chat/completions", json=body, timeout=120,
                       headers={"Authorization": "Bearer app-key-1"})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        assert httpx.get(url, timeout=10).status_code == 200  # the UI stays open
        assert any("API key required" in n for n in demo.ctx.notes)
    finally:
        demo.close()
