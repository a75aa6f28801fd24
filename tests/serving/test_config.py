"""Serving: models config, parameter guards, the recorded backend and the API over recorded answers."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from routerdc.serving.backends import PromptTooLong, SamplingParams, check_fits
from routerdc.serving.config import ConfigError, Limits, ModelSpec, load_models_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import ROOT, build_router  # noqa: E402

PAPER_LLMS = ["mistralai/Mistral-7B-v0.1", "meta-math/MetaMath-Mistral-7B", "itpossible/Chinese-Mistral-7B-v0.1",
              "HuggingFaceH4/zephyr-7b-beta", "cognitivecomputations/dolphin-2.6-mistral-7b",
              "meta-llama/Meta-Llama-3-8B", "cognitivecomputations/dolphin-2.9-llama3-8b"]


def test_shipped_configs_match_the_data(data_dir):
    from routerdc.data import load_scores

    paper = load_models_config(ROOT / "configs" / "paper_7llms.yaml")
    paper.check_router(PAPER_LLMS)
    assert {m.backend for m in paper.models} == {"vllm"} and len({m.port for m in paper.models}) == 7
    assert sum(m.gpu_memory_utilization for m in paper.models) <= 0.9
    rb = load_models_config(ROOT / "configs" / "routerbench_recorded.yaml")
    llms = load_scores(data_dir / "routerbench/routerbench_zs/mbpp_test.csv")[0].llms
    rb.check_router(llms)
    assert all(m.backend == "recorded" and m.cost_per_1k_output > 0 for m in rb.models)
    assert rb.get("gpt-4-1106-preview").cost_per_1k_output > rb.get("mistralai/mistral-7b-chat").cost_per_1k_output
    for m in rb.models:
        assert all(rb.resolve_data_file(f).exists() for f in m.data_files)


def test_config_names_must_match_the_router(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models:\n  - {name: a, backend: transformers, model: x}\n"
                   "  - {name: zzz, backend: transformers, model: y}\n")
    c = load_models_config(cfg)
    with pytest.raises(ConfigError) as info:
        c.check_router(["a", "b"])
    msg = str(info.value)
    assert "does not know: ['zzz']" in msg and "misses LLMs the router can choose: ['b']" in msg


def test_prices_are_optional(tmp_path):
    """No price declared is not a price of 0 (collect then fills no costs); one declared alone is."""
    cfg = tmp_path / "m.yaml"
    cfg.write_text("models:\n  - {name: a, backend: transformers, model: x}\n"
                   "  - {name: b, backend: transformers, model: y, cost_per_1k_output: 0.5}\n"
                   "  - {name: c, backend: transformers, model: z, cost_per_1k_input: 0, cost_per_1k_output: 0}\n")
    c = load_models_config(cfg)
    assert [m.priced for m in c.models] == [False, True, True]
    assert c.get("a").cost_per_1k_input is None and c.get("b").cost_per_1k_input is None
    cfg.write_text("models:\n  - {name: a, backend: transformers, model: x, cost_per_1k_input: -1}\n")
    with pytest.raises(ConfigError, match="cost_per_1k_input"):
        load_models_config(cfg)


@pytest.mark.parametrize("text, needle", [
    ("models:\n  - {name: a, backend: transformers, model: x, temprature: 1}\n", "temprature"),
    ("models:\n  - {name: a, backend: openai, model: x}\n", "needs base_url"),
    ("models:\n  - {name: a, backend: gguf, model: x}\n", "backend"),
    ("models:\n  - {name: a, backend: transformers, model: x}\n  - {name: a, backend: transformers, model: y}\n",
     "more than once"),
    ("models: [\n", "not valid yaml"),
])
def test_bad_configs_are_clear(tmp_path, text, needle):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_models_config(cfg)


def test_sampling_is_clamped():
    spec = ModelSpec(name="m", backend="transformers", model="x", max_context=100)
    p = SamplingParams.clamp(spec, Limits(max_tokens=50), max_tokens=10**9, temperature=math.inf, top_p=-3)
    assert p.max_tokens == 50 and p.temperature == spec.sampling.temperature and 0 < p.top_p <= 1
    assert SamplingParams.clamp(spec, Limits(), temperature=99.0).temperature == 2.0
    assert check_fits(spec, 80, p).max_tokens == 20  # shrunk to the context left
    with pytest.raises(PromptTooLong) as info:
        check_fits(spec, 130, p)
    assert "130 tokens" in str(info.value) and "'m'" in str(info.value) and "at most 100" in str(info.value)


def _routerbench_row(data_dir):
    from routerdc.data import load_scores

    s = load_scores(data_dir / "routerbench/routerbench_zs/mbpp_test.csv", missing="drop")[0]
    return s.queries[3], dict(zip(s.llms, s.responses[3])), s.llms


def test_recorded_backend_serves_the_recorded_answer(data_dir):
    from routerdc.serving.backends import make_backend
    from routerdc.serving.backends.recorded import NotRecorded

    cfg = load_models_config(ROOT / "configs" / "routerbench_recorded.yaml")
    query, answers, _ = _routerbench_row(data_dir)
    b = make_backend(cfg.get("gpt-4-1106-preview"), cfg)
    p = SamplingParams.clamp(b.spec, cfg.limits)
    chunks = list(b.stream([{"role": "user", "content": query}], p))
    assert len(chunks) > 1 and "".join(chunks) == answers["gpt-4-1106-preview"]
    assert b.source == "recorded" and b.health()
    with pytest.raises(NotRecorded, match="no recorded answer"):
        list(b.stream([{"role": "user", "content": "not a RouterBench prompt"}], p))


def test_api_over_recorded_answers(data_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.registry import Registry

    query, answers, llms = _routerbench_row(data_dir)
    router = RouterDC.from_pretrained(build_router(tmp_path_factory.mktemp("rb") / "router", llms))
    cfg = load_models_config(ROOT / "configs" / "routerbench_recorded.yaml")
    client = TestClient(create_api(router, Registry(cfg)))
    r = client.post("/v1/chat/completions", json={"model": "routerdc", "messages": [{"role": "user", "content": query}]})
    assert r.status_code == 200, r.text
    body = r.json()
    llm = body["routerdc"]["llm"]
    assert body["choices"][0]["message"]["content"] == answers[llm]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["routerdc"]["source"] == "recorded" and r.headers["X-RouterDC-Source"] == "recorded"
    assert r.headers["X-RouterDC-LLM"] == llm and set(json.loads(r.headers["X-RouterDC-Probs"])) == set(llms)
    assert llm == max(body["routerdc"]["probs"], key=body["routerdc"]["probs"].get)
    r = client.post("/v1/chat/completions", json={"model": "claude-v2", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and "no recorded answer" in r.json()["error"]["message"]
    assert r.json()["routerdc"]["llm"] == "claude-v2" and r.json()["routerdc"]["routed"] is False
    bad = RouterDC.build(["claude-v2", "someone-else"])
    with pytest.raises(ConfigError, match="someone-else"):
        create_api(bad, Registry(cfg))


def test_api_mounts_beside_a_gradio_app(tmp_path_factory):
    """The app can mount the API: gr.mount_gradio_app on the FastAPI app create_api returns."""
    import gradio as gr
    from fastapi.testclient import TestClient

    from routerdc.model.router import RouterDC
    from routerdc.serving.api import create_api
    from routerdc.serving.config import parse_models_config
    from routerdc.serving.registry import Registry

    names = ["m1", "m2"]
    router = RouterDC.from_pretrained(build_router(tmp_path_factory.mktemp("mount") / "router", names))
    cfg = parse_models_config({"models": [{"name": n, "backend": "recorded", "data_files": ["x.csv"]} for n in names]})
    with gr.Blocks() as demo:
        gr.Markdown("RouterDC")
    app = gr.mount_gradio_app(create_api(router, Registry(cfg)), demo, path="/ui")
    with TestClient(app) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["routerdc", *names]
        assert c.get("/ui/").status_code == 200
        r = c.post("/v1/chat/completions", json={"model": "routerdc", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "cannot read recorded answers" in r.json()["error"]["message"]
        assert r.json()["routerdc"]["llm"] in names
