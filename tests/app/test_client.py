"""The launched app, driven through its API with gradio_client: routing, temperature, the map,
evaluation, training with cancel and hot-swap, bad inputs, app_server settings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402





def plot_json(out) -> dict:
    assert isinstance(out, dict) and out.get("type") == "plotly", out
    return json.loads(out["plot"])


def route(app_client, query, tau=1.0):
    return app_client.predict(query, tau, api_name="/route")


def test_api_names(app_client):
    names = set(app_client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/route", "/retemper", "/explore", "/evaluate", "/train", "/status"} <= names


def test_route_returns_chart_choice_margin_and_map_point(app_client, app_server):
    md, bar, answer, verdict, scores, why, neigh, result = route(
        app_client, "Write a Python function that returns the n-th Fibonacci number.")
    mapfig, _ = app_client.predict("task", api_name="/explore")  # the map has one update path: Explore's
    llms = app_server.ctx.routers.get(app_server.ctx.default_key).llms
    assert result["llm"] in llms and md.startswith("**Chosen LLM")
    assert "margin" in md and abs(sum(result["probs"].values()) - 1) < 1e-5
    fig = plot_json(bar)
    assert fig["data"][0]["type"] == "bar" and len(fig["data"][0]["x"]) == len(llms)
    colours = fig["data"][0]["marker"]["color"]
    assert sorted(set(colours)) == sorted({"#d62728", "#9bb7d4"}) and colours.count("#d62728") == 1
    assert "cosine" in fig["data"][0]["hovertemplate"]
    assert "No generation backend is configured" in answer
    assert "not in the loaded score sets" in verdict
    names = [t.get("name") for t in plot_json(mapfig)["data"]]
    assert "your queries" in names and "LLM embeddings" in names
    assert neigh["data"] and "cosine" in neigh["headers"]  # why this route: nearest training queries
    assert result["seconds"] < 5


def test_temperature_rerenders_without_reencoding(app_client, app_server):
    _, _, _, _, _, _, _, r1 = route(app_client, "Solve 12 * 7 + 3 and explain.")
    view = app_server.ctx.routers.get(app_server.ctx.default_key)
    calls = []
    orig = view.embed
    view.embed = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        md, bar = app_client.predict(0.05, api_name="/retemper")
    finally:
        del view.embed  # the method again
    assert calls == []
    assert "tau = 0.05" in md
    assert max(json_probs(bar)) >= max(r1["probs"].values()) - 1e-6


def test_cost_slider_rerenders_without_reencoding(app_client, app_server):
    """The cost slider re-renders the last query from its stored embedding; this router has no LLM
    costs, so the weight is ignored (said in a warning) and the probabilities stay those of lambda 0."""
    _, _, _, _, _, _, _, r1 = route(app_client, "Write a haiku about the sea.")
    assert r1["cost_weight"] == 0.0
    view = app_server.ctx.routers.get(app_server.ctx.default_key)
    calls = []
    orig = view.embed
    view.embed = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        md, bar = app_client.predict(1.0, 0.8, api_name="/recost")
    finally:
        del view.embed
    assert calls == [] and "Chosen LLM" in md
    np.testing.assert_allclose(json_probs(bar), [r1["probs"][n] for n in view.llms], atol=1e-6)


def json_probs(bar) -> list[float]:
    y = plot_json(bar)["data"][0]["y"]
    if isinstance(y, dict):  # plotly's typed-array encoding
        import base64

        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
    return list(y)


def test_query_from_score_set_shows_recorded_scores(app_client, app_server):
    e = next(e for e in app_server.ctx.data.entries if e.key == "routerdc/test/mmlu")
    q = e.set.queries[3]
    _, _, answer, verdict, scores, _, _, result = route(app_client, q)
    assert "recorded score" in verdict and "row 4" in verdict
    scores = scores.get("value", scores) if isinstance(scores, dict) else scores
    assert len(scores["data"]) == len(e.set.llms), scores
    assert result["in_score_set"] is True


def test_routerbench_query_with_other_llms_says_so(app_client, app_server):
    e = next(e for e in app_server.ctx.data.entries if e.family == "routerbench")
    _, _, answer, verdict, *_ = route(app_client, e.set.queries[0])
    assert "other LLMs" in verdict
    assert "not one of them" in answer


@pytest.mark.parametrize("query, message", [
    ("", "empty"),
    ("   \n\t  ", "only whitespace"),
    ("\x00\x01\x02", "control characters"),
    ("x" * 100_001, "limit is 100,000"),
])
def test_bad_queries_are_rejected_with_a_message(app_client, query, message):
    with pytest.raises(AppError, match=message):
        route(app_client, query)


def test_awkward_queries_route_with_notices(app_client):
    *_, result = route(app_client, "y" * 100_000)
    assert result["query_chars"] == 100_000 and any("Long query" in n for n in result["notices"])
    *_, result = route(app_client, "😀🎉🚀 ✨")
    assert any("unknown to the encoder" in n for n in result["notices"])
    *_, result = route(app_client, "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳")
    assert result["llm"]
    *_, result = route(app_client, "What is 2+2?\x07\x1b[31m")
    assert any("control character" in n for n in result["notices"])


def test_explore_colourings(app_client):
    route(app_client, "A question about world history.")
    for colour in ("task", "cluster", "routed LLM", "best LLM"):
        fig, info = app_client.predict(colour, api_name="/explore")
        names = [t.get("name") for t in plot_json(fig)["data"]]
        assert "LLM embeddings" in names and "your queries" in names, colour
        assert "ready" in info
    fig, _ = app_client.predict("best LLM", api_name="/explore")
    assert any(n.startswith("no LLM") or "Mistral" in n or "dolphin" in n or "Llama" in n or "zephyr" in n
               for n in [t.get("name") for t in plot_json(fig)["data"]])


def test_status_reports_router_device_backend(app_client):
    md = app_client.predict(api_name="/status")
    for word in ("Router", "Device", "no GPU", "Generation backend", "Data", "Map"):
        assert word in md
    assert "routing on ONNX Runtime" in md  # exported after the map was ready


def test_onnx_engine_routes_as_torch_does(app_server):
    view = app_server.ctx.routers.get(app_server.ctx.default_key)
    assert view.engine is not None, view.describe()
    queries = ["Solve 12 * 7 + 3 and explain.", "以下哪个城市是中国的首都？", "def f(x): return x * 2"]
    fast = view.route_embeddings(view.embed(queries))
    slow = view.route_embeddings(view.router.embed_texts(queries, project=True))
    assert fast.llms == slow.llms
    np.testing.assert_allclose(fast.probs, slow.probs, atol=1e-4)


def test_evaluate_shipped_sets(app_client, app_server):
    keys = ["routerdc/test/mmlu", "routerdc/test/ceval"]
    summary, table, chart = app_client.predict(keys, None, 0, api_name="/evaluate")
    rows = [r[0] for r in table["data"]]
    assert "oracle" in rows and any(r.startswith("best single") for r in rows)
    assert any(r.startswith("RouterDC") for r in rows)
    assert "ID avg" in table["headers"] and "OOD avg" in table["headers"]
    assert plot_json(chart)["layout"]["barmode"] == "group"


def test_evaluate_uploads(app_client, tmp_path, app_server):
    e = next(e for e in app_server.ctx.data.entries if e.key == "routerdc/test/mmlu")
    good = tmp_path / "mine.jsonl"
    good.write_text("\n".join(json.dumps({"query": q, "scores": dict(zip(e.set.llms, map(float, s))), "task": "mine"})
                              for q, s in zip(e.set.queries[:10], e.set.scores[:10])), encoding="utf-8")
    summary, table, _ = app_client.predict([], handle_file(str(good)), 0, api_name="/evaluate")
    assert "mine" in table["headers"] and "10 queries" in summary

    wrong = tmp_path / "notes.txt"
    wrong.write_text("hello", encoding="utf-8")
    with pytest.raises(AppError, match="unsupported file type|Invalid file type|not allowed"):
        app_client.predict([], handle_file(str(wrong)), 0, api_name="/evaluate")

    bad = tmp_path / "broken.json"
    bad.write_text("[{\"question\": \"q\", \"scores\": {\"a\": ", encoding="utf-8")
    with pytest.raises(AppError, match="broken.json"):
        app_client.predict([], handle_file(str(bad)), 0, api_name="/evaluate")

    empty = tmp_path / "empty.json"
    empty.write_text("[]", encoding="utf-8")
    with pytest.raises(AppError, match="empty.json"):
        app_client.predict([], handle_file(str(empty)), 0, api_name="/evaluate")

    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"query": "q", "scores": {"gpt-x": 1.0, "gpt-y": 0.0}}), encoding="utf-8")
    with pytest.raises(AppError, match="do not match the router"):
        app_client.predict([], handle_file(str(other)), 0, api_name="/evaluate")
    # the app is still up for the next user
    assert route(app_client, "still alive?")[7]["llm"]


def test_no_files_served_from_outside_the_app(app_server):
    from app.settings import ROOT

    for target in (ROOT / "README.md", app_server.router_dir / "config.json", "/etc/passwd"):
        url = f"{app_server.url}gradio_api/file={target}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        assert status in (403, 404), (target, status)


def _train_args(steps, eval_every=5, name="api-run"):
    # shipped, uploads, name, frozen, projection, steps, batch, rows, eval_every, lr, head_lr, tau, lam,
    # K+, K-, H, n clusters, re-cluster, calibrate
    return (["routerdc/train/mmlu", "routerdc/train/gsm8k", "routerdc/train/cmmlu"], None, name, True, True,
            steps, 16, 40, eval_every, 5e-5, 1e-2, 1.0, 1.0, 3, 3, 3, 5, False, True)


def test_train_rejects_bad_choices(app_client, tmp_path):
    args = list(_train_args(5))
    args[0] = []
    with pytest.raises(AppError, match="at least one"):
        app_client.predict(*args, api_name="/train")
    args = list(_train_args(5))
    args[13], args[14] = 5, 5
    with pytest.raises(AppError, match="exceeds"):
        app_client.predict(*args, api_name="/train")
    other = tmp_path / "rb.jsonl"
    other.write_text(json.dumps({"query": "q", "scores": {"gpt-x": 1.0, "gpt-y": 0.0}}), encoding="utf-8")
    args = list(_train_args(5))
    args[1] = [handle_file(str(other))]
    with pytest.raises(AppError, match="same LLMs"):
        app_client.predict(*args, api_name="/train")


@pytest.mark.slow
def test_train_cancel_halfway_then_one_run_at_a_time_then_hot_swap(app_server):
    a, b = Client(app_server.url, verbose=False), Client(app_server.url, verbose=False)
    job = a.submit(*_train_args(5000, eval_every=10, name="cancel-me"), api_name="/train")
    deadline = time.time() + 180
    while time.time() < deadline and app_server.ctx.training.status.step < 15 and not job.done():
        time.sleep(0.2)
    assert app_server.ctx.training.status.running and app_server.ctx.training.status.step >= 15
    with pytest.raises(AppError, match="Another training run is in progress"):
        b.predict(*_train_args(5), api_name="/train")
    assert route(b, "routing stays responsive while training")[7]["llm"]
    msg = a.predict(api_name="/cancel_training")
    assert "Cancelling" in msg
    outputs = job.result(timeout=120)
    final = outputs[0]
    assert final.startswith("Cancelled at step") and "Saved the best router" in final
    assert "Calibrated" not in final  # a cancelled run keeps its last checkpoint as it was
    assert not app_server.ctx.training.status.running

    # a short complete run on RouterBench (11 LLMs), then switch this session to it: RouterBench
    # queries now show the chosen LLM's recorded answer
    args = list(_train_args(20, eval_every=10, name="swap-me"))
    args[0] = ["routerbench/train/arc_challenge", "routerbench/train/mbpp"]
    outputs = b.predict(*args, api_name="/train")
    assert outputs[0].startswith("Finished") and "swap-me" in outputs[0]
    assert "Calibrated its routing offsets" in outputs[0]  # the box is ticked by default
    b.predict(api_name="/use_trained")
    *_, result = route(b, "Which planet is the largest?")
    assert result["router"].startswith("swap-me") and len(result["probs"]) == 11 and len(result["offsets"]) == 11
    e = next(e for e in app_server.ctx.data.entries if e.key == "routerbench/test/arc_challenge")
    _, _, answer, verdict, *_ = route(b, e.set.queries[0])
    assert "Recorded answer" in answer and "recorded" in answer and "router's choice scored" in verdict
    assert "recorded price **$" in answer
    # the other session keeps the default router
    *_, result = route(a, "Which planet is the largest?")
    assert result["router"] == app_server.router_dir.name


def test_train_cancel_then_continue_from_the_last_step(app_server):
    from routerdc.train.resume import has_state

    a = Client(app_server.url, verbose=False)
    with pytest.raises(AppError, match="No cancelled run of yours to continue"):
        a.predict(api_name="/continue_training")

    def run_until(job, step):
        deadline = time.time() + 180
        while time.time() < deadline and app_server.ctx.training.status.step < step and not job.done():
            time.sleep(0.1)
        assert a.predict(api_name="/cancel_training").startswith("Cancelling")
        final = job.result(timeout=120)[0]
        assert final.startswith("Cancelled at step") and "Press **Continue** to resume it" in final, final
        return int(final.split("Cancelled at step ")[1].split("/")[0])

    stopped = run_until(a.submit(*_train_args(5000, eval_every=5, name="continue-me"), api_name="/train"), 6)
    out_dir = app_server.ctx.training.status.output_dir
    assert "continue-me" in out_dir and has_state(out_dir)
    job = a.submit(api_name="/continue_training")
    again = run_until(job, stopped + 3)
    assert again > stopped
    first = job.outputs()[0][0]
    assert first == f"Continuing the cancelled run from step {stopped}/5000…"
    steps = plot_json(job.outputs()[-1][1])["data"][0]["x"]  # the curves go on from the first run's
    assert steps[0] == 1 and steps[-1] == again and len(steps) == again
    assert app_server.ctx.training.status.output_dir == out_dir and has_state(out_dir)
    assert not app_server.ctx.training.status.running
