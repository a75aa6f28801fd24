"""The launched app under bad input, through gradio_client: a clear message without app_server paths,
the next normal request still answered, bounded memory (issue 15, items 1, 4, 5, 7, 10, 11)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from routerdc.limits import BOUNDS  # noqa: E402

PATHY = re.compile(r"/(tmp|work|home|root|var)/|gradio/[0-9a-f]{8}")




def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _routes(app_client):
    assert app_client.predict("What is 2 + 2?", 1.0, api_name="/route")[7]["llm"]


def _message(excinfo) -> str:
    msg = str(excinfo.value)
    assert "Unexpected error" not in msg and not PATHY.search(msg), msg
    return msg


def test_a_lone_surrogate_gets_a_clear_message(app_client, app_server):
    """gradio_client cannot even encode one, so the raw HTTP API sends it (JSON escapes it)."""
    import httpx

    body = json.dumps({"data": ["a\ud800b", 1.0, 0.0, None]})  # query, tau, cost weight, session; a \ud800 escape
    r = httpx.post(app_server.url + "gradio_api/call/route", content=body, timeout=30,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    events = httpx.get(app_server.url + f"gradio_api/call/route/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "lone surrogate" in events, events
    assert "Unexpected error" not in events
    _routes(app_client)


@pytest.mark.parametrize("content,expect", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"question": "q", "scores": {"a": 1}}', "an object (keys"),
    ('[{"question": "q"}]', "missing field 'scores'"),
])
def test_bad_json_uploads_get_specific_messages(app_client, tmp_path, content, expect):
    p = tmp_path / "upload.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(AppError) as e:
        app_client.predict([], handle_file(str(p)), 0, api_name="/evaluate")
    msg = _message(e)
    assert expect in msg and "upload.json" in msg
    _routes(app_client)


def test_a_huge_list_literal_cell_is_refused_without_memory_growth(app_client, tmp_path, app_server):
    cell = "[" + ",".join(["'ab'"] * 70_000) + "]"  # 350 k characters: under the app's 1 MB upload limit
    p = tmp_path / "huge.csv"
    p.write_text("prompt,eval_name," + ",".join(app_server.ctx.routers.get(app_server.ctx.default_key).llms) + "\n"
                 + f'"{cell}",mmlu,' + ",".join(["1"] * len(app_server.ctx.routers.get(app_server.ctx.default_key).llms))
                 + "\n", encoding="utf-8")
    before = _rss_mib()
    for _ in range(3):
        with pytest.raises(AppError) as e:
            app_client.predict([], handle_file(str(p)), 0, api_name="/evaluate")
        assert f"at most {BOUNDS.max_cell_chars:,}" in _message(e)
    assert _rss_mib() - before < 100
    _routes(app_client)


def test_train_tab_errors_show_no_server_paths(app_client, tmp_path):
    bad = tmp_path / "mine.csv"
    bad.write_text("prompt,a\n\"['q']\",notanumber\n", encoding="utf-8")
    args = [[], [handle_file(str(bad))], "x", True, True, 5, 16, 40, 5, 5e-5, 1e-2, 1.0, 1.0, 3, 3, 3, 5, False, True]
    with pytest.raises(AppError) as e:
        app_client.predict(*args, api_name="/train")
    assert "mine.csv" in _message(e)
    _routes(app_client)


def test_status_and_messages_strip_paths(app_server):
    from app.common import clean_message, status_markdown

    status = status_markdown(app_server.ctx, app_server.ctx.default_key)
    assert not PATHY.search(status), status
    assert clean_message("cannot read /tmp/gradio/abc/x.csv: [Errno 13] Permission denied: '/work/data/y'") == \
        "cannot read x.csv: [Errno 13] Permission denied: 'y'"


def test_sessions_and_uploads_are_bounded(app_server, app_client):
    demo = app_server.demo
    assert demo.state_session_capacity == BOUNDS.state_session_capacity
    assert demo.delete_cache == (BOUNDS.delete_cache_every_s, BOUNDS.delete_cache_age_s)
    _routes(app_client)
    state = demo.state_holder.session_data[app_client.session_hash]
    import gradio as gr

    plots = [k for k, b in state.blocks_config.blocks.items() if isinstance(b, gr.Plot)]
    kept = [state.config_values.get(k, {}).get("props", {}).get("value") for k in plots]
    assert plots and not any(kept)  # a routed query's map and chart are not copied into the session
    size = len(json.dumps(state.config_values, default=str))
    assert size < 512 * 1024, size
