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
from routerdc.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "checkpoints" / "routerdc-minilm"
PER_TASK = 3


@pytest.fixture(scope="module")
def shipped():
    from routerdc.model.router import RouterDC

    return RouterDC.from_pretrained(SHIPPED)


def test_folder_is_complete_small_and_safe():
    files = {p.name for p in SHIPPED.iterdir()}
    assert {"config.json", "README.md"} <= files and "train.json" not in files  # one recipe: config.json's
    weights = [p for p in SHIPPED.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt", ".pth",
                                                                                ".ckpt", ".pkl")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)  # never a pickle
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 50 * 10**6, f"{size / 1e6:.1f} MB"
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "python -m routerdc train --config checkpoints/routerdc-minilm" in card
    config = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
    train = config["recipe"]
    assert train["encoder"] == "all-MiniLM-L6-v2" and len(train["train_files"]) == 5
    # The recipe is the one the shipped router came from: fp16, and retraining from it also calibrates.
    assert train["save_dtype"] == config["dtype"] == "float16"
    assert TrainConfig.from_json(SHIPPED).to_dict() == {k: v for k, v in train.items() if k != "train_tasks"}
    assert train["calibrate"] is True and len(config["router"]["llm_bias"]) == 7
    # Its probabilities are calibrated (tau fitted on the training rows; no choice changed).
    temp = config["calibration"]["temperature"]
    assert config["router"]["calibrated_temperature"] == temp["temperature"] < 1.0
    assert temp["target"] == "correct" and temp["ece_after"] < temp["ece_before"] and temp["n_queries"] == 5935


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


def test_it_ships_its_map_for_the_shipped_data(data_dir):
    """A fresh clone starts with the map: the file in maps/ is the one the app looks for with the
    shipped score data (same router content, same sampled queries), and it names those queries."""
    from app.services.data import DataBank
    from app.services.maps import build_pool, map_file_name, map_fingerprint
    from app.settings import Settings
    from routerdc.inference.embedding_map import load_map

    bank = DataBank.load(str(data_dir))
    llms = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))["router"]["llm_names"]
    pool = build_pool(bank, llms, Settings().map_per_set)
    name = map_file_name(map_fingerprint(SHIPPED), Settings().map_method, pool.texts)
    path = SHIPPED / "maps" / name
    assert path.exists(), f"no shipped map {name}: run python app.py --prepare --ship-map"
    assert path.stat().st_size < 5 * 10**6
    emap, extra = load_map(path)
    assert len(emap) == len(pool.texts) and emap.llm_coords.shape == (7, 2)
    root = Path(bank.data_dir)
    want = [str(Path(bank.entries[i].path).relative_to(root)) for i, _ in pool.entry_rows]
    assert [str(f) for f in extra["files"]] == want
    assert extra["rows"].tolist() == [r for _, r in pool.entry_rows]
