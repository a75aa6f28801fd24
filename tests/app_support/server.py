"""One app server per test process (shared by test_app_client and test_app_e2e), on a free port,
with small score sets, a tiny frozen-encoder router trained here and a PCA map (no numba)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from routerdc.data.registry import shipped_files
from tests.serving_support import free_port

# A small part of the shipped catalogue (routerdc.data.registry.shipped_files): three paper training
# sets, two test sets and three RouterBench sets.
_WANTED = {"mmlu_train.json", "gsm8k-train.json", "cmmlu_train.json", "mmlu_test.json", "ceval.json",
           "arc_challenge_train.csv", "mbpp_train.csv", "arc_challenge_test.csv"}
TEST_FILES = tuple(f.path for f in shipped_files() if f.path.rsplit("/", 1)[-1] in _WANTED)
MAX_ROWS = 40
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class AppServer:
    url: str
    demo: object
    ctx: object
    router_dir: Path
    tmp: Path


def train_tiny_router(data_dir: Path, out: Path) -> Path:
    """A frozen-encoder router over the paper's 7 LLMs, trained for a few steps on 40 rows per task."""
    from routerdc.data import load_score_set
    from routerdc.train.trainer import TrainConfig, Trainer

    root = data_dir / "routerdc" / "split2_model7_cluster"
    sets = [load_score_set(root / f).subset(np.arange(MAX_ROWS))
            for f in ("mmlu_train.json", "gsm8k-train.json", "cmmlu_train.json")]
    cfg = TrainConfig(output_dir=str(out), freeze_encoder=True, projection=True, steps=10, batch_size=16,
                      eval_every=0, samples_per_task=MAX_ROWS, device="cpu")
    res = Trainer(cfg, train_sets=sets, test_sets=[]).run()
    assert res.output_dir is not None
    return Path(res.output_dir)


_SERVER: AppServer | None = None


def _alive(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=10).status_code < 500
    except httpx.HTTPError:
        return False


def app_server() -> AppServer:
    """The test process's app server, launched on first use and again when an earlier test's
    ``demo.close()`` took it down (Gradio closes its servers together)."""
    global _SERVER
    if _SERVER is None or not _alive(_SERVER.url):
        _SERVER = _launch()
    return _SERVER


def _launch() -> AppServer:
    import torch

    from app.main import launch
    from app.settings import Settings
    from routerdc.data import resolve_data_dir

    torch.set_num_threads(1)
    data_dir = resolve_data_dir()
    tmp = Path(tempfile.mkdtemp(prefix="routerdc-app-test-"))
    atexit.register(shutil.rmtree, tmp, True)
    router_dir = train_tiny_router(data_dir, tmp / "tiny-router")
    port = free_port()
    settings = Settings.from_env(
        checkpoint=str(router_dir), data_dir=str(data_dir), data_files=TEST_FILES, max_rows=MAX_ROWS,
        map_method="pca", map_per_set=MAX_ROWS, runs_dir=str(tmp / "runs"), discover=False, host="127.0.0.1",
        port=port, eval_max_per_task=0, cache_dir=os.environ.get("ROUTERDC_CACHE"), max_file_size="1mb",
        engine="onnx",  # the ONNX engine, whatever auto would pick on this machine (tests/inference/test_router.py tests auto)
    )
    demo = launch(settings, prevent_thread_lock=True, quiet=True)
    atexit.register(demo.close)
    ctx = demo.ctx
    view = ctx.routers.get(ctx.default_key)
    assert ctx.maps.wait(view, 300), view.map.state
    return AppServer(f"http://127.0.0.1:{port}/", demo, ctx, router_dir, tmp)
