"""The router shipped in checkpoints/routerdc-minilm: a complete, safe folder that loads, routes a
few queries of every task to one of its LLMs, and works in the `route` and `evaluate` commands.
No accuracy is asserted here (the results table in README carries the figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from routerdc.data import load_score_set, paper_files, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "routerdc-minilm"
PER_TASK = 3


@pytest.fixture(scope="module")
def shipped():
    from routerdc.model import RouterDC

    return RouterDC.from_pretrained(SHIPPED)


def test_folder_is_complete_small_and_safe():
    files = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "train.json", "README.md"} <= files
    weights = [p for p in SHIPPED.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth",
                                                                                ".ckpt", ".pkl")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)  # never a pickle
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 50 * 10**6, f"{size / 1e6:.1f} MB"
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "python -m routerdc train --config checkpoints/routerdc-minilm/train.json" in card
    train = json.loads((SHIPPED / "train.json").read_text(encoding="utf-8"))
    assert train["encoder"] == "all-MiniLM-L6-v2" and len(train["train_files"]) == 5
    # Retraining from train.json also calibrates, as the shipped router was.
    config = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
    assert train["calibrate"] is True and len(config["router"]["llm_bias"]) == 7


def test_routes_queries_of_every_task_to_one_of_its_llms(shipped, data_dir):
    _, test_files = paper_files(data_dir)
    llms = set(shipped.config.llm_names)
    assert len(llms) == 7
    for f in test_files:
        s = load_score_set(f)
        assert set(s.llms) == llms
        routing = shipped.route(list(s.queries[:PER_TASK]))
        assert routing.probs.shape == (PER_TASK, 7)
        np.testing.assert_allclose(routing.probs.sum(axis=1), 1.0, rtol=1e-5)
        assert set(routing.llms) <= llms, (s.task, routing.llms)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "routerdc", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_route_and_evaluate_commands_load_it(data_dir, tmp_path):
    _, test_files = paper_files(data_dir)
    small = [load_score_set(f).subset(np.arange(PER_TASK)) for f in (test_files[0], test_files[-1])]
    write_jsonl(small, tmp_path / "small.jsonl")
    r = _cli("route", "--input", str(tmp_path / "small.jsonl"), "--output", str(tmp_path / "routes.jsonl"))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "routes.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * PER_TASK and all(x["llm"] in x["probs"] for x in lines)
    r = _cli("evaluate", "--test-files", str(tmp_path / "small.jsonl"), "--output", str(tmp_path / "table.json"),
             "--no-cache")
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "table.json").read_text())
    assert "RouterDC" in json.dumps(table)
