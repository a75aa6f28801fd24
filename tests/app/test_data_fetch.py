"""The app with an empty data directory downloads the score data in the background (from a
local 127.0.0.1 server here): it routes meanwhile, the status follows the download, and the data
(and the map) are there when it finishes; with the server down the app stays up and says why."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from app.common import status_markdown
from app.context import AppContext
from app.state import Session
from app.settings import ROOT, Settings
from tests.fetch_support import FileServer, official_layout

FILES = ("routerdc/split2_model7_cluster/humaneval_train.json", "routerdc/split2_model7/humaneval_test.json",
         "routerbench/routerbench_zs/winograde_test.csv")
QUERY = "Write a python function that returns the n-th Fibonacci number."


def _settings(tmp_path, **kw) -> Settings:
    return Settings(checkpoint=str(ROOT / "checkpoints/routerdc-minilm"), data_dir=str(tmp_path / "data"),
                    data_files=FILES, max_rows=40, map_method="pca", map_per_set=20, discover=False,
                    cache_dir=os.environ.get("ROUTERDC_CACHE"), engine="torch", **kw)


def _route(ctx: AppContext) -> str:
    view = ctx.routers.get(ctx.default_key)
    return view.route_embeddings(view.embed([QUERY])).llms[0]


def test_empty_data_dir_is_filled_in_the_background(data_dir, tmp_path, monkeypatch):
    hold = threading.Event()
    with FileServer(official_layout(data_dir, tmp_path / "mirror", FILES)) as srv:
        srv.behaviour.hold = hold  # the download waits until the app has routed
        monkeypatch.setenv("ROUTERDC_DATA_URL", srv.url)
        ctx = AppContext.create(_settings(tmp_path))
        try:
            assert ctx.fetch is not None and not ctx.data.entries
            assert "downloading the score data" in status_markdown(ctx, ctx.default_key)
            assert _route(ctx).startswith(("meta-llama/", "cognitivecomputations/", "mistralai/", "itpossible/",
                                           "HuggingFaceH4/", "meta-math/"))  # routing works meanwhile
        finally:
            hold.set()
        assert ctx.fetch.wait(120), ctx.fetch.detail
    md = status_markdown(ctx, ctx.default_key)
    assert "Data download**: done" in md and "3 file(s)" in md and "verified by SHA-256" in md
    assert sorted(e.key for e in ctx.data.entries) == ["routerbench/test/winogrande", "routerdc/test/humaneval",
                                                       "routerdc/train/humaneval"]
    assert ctx.data.examples() and ctx.data.lookup(ctx.data.entries[0].set.queries[0])
    view = ctx.routers.get(ctx.default_key)
    assert ctx.maps.wait(view, 120), view.map.state  # the map is computed over the downloaded data
    assert len(view.map.pool.texts) == 40  # 20 per set of the router's 7 LLMs (RouterBench's 11 are not on it)
    # A page opened before the data came gets them from its 2-s poll: Train's and Evaluate's sets,
    # the examples; then the poll stops.
    from app.main import create_app

    demo = create_app(ctx.settings, ctx)
    tick = next(f.fn for f in demo.fns.values() if f.name == "tick")
    status, train_sets, eval_sets, examples, timer = tick(Session(ctx.default_key))  # the page's session state
    assert "Data download**: done" in status and timer.active is False
    assert [k for _, k in train_sets["choices"]] == ["routerdc/train/humaneval"]
    assert sorted(k for _, k in eval_sets["choices"]) == ["routerdc/test/humaneval", "routerdc/train/humaneval"]
    assert examples.visible and len(examples.samples) == len(ctx.data.examples()) > 0
        # A restart finds the data there and downloads nothing.
    assert AppContext.create(_settings(tmp_path), load_default=False).fetch is None


def test_server_down_leaves_the_app_up_with_a_clear_status(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("ROUTERDC_DATA_URL", f"http://127.0.0.1:{port}")
    ctx = AppContext.create(_settings(tmp_path))
    assert not ctx.fetch.wait(60)
    md = status_markdown(ctx, ctx.default_key)
    assert "Data download**: failed" in md and "ConnectError" in md and "python -m routerdc data fetch" in md
    assert _route(ctx)  # still routes
    assert not list((tmp_path / "data").rglob("*.json"))


def test_no_fetch_when_disabled_or_data_present(data_dir, tmp_path):
    assert AppContext.create(_settings(tmp_path, fetch_data=False), load_default=False).fetch is None
    s = Settings(data_dir=str(data_dir), data_files=FILES, discover=False)
    assert AppContext.create(s, load_default=False).fetch is None


@pytest.mark.parametrize("argv, expect", [([], True), (["--no-fetch-data"], False)])
def test_fetch_option(argv, expect):
    from app.settings import parse_args

    assert parse_args(argv)[0].fetch_data is expect
