"""CLI: --help for every command, route output format and order, train/evaluate/cluster end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from routerdc.cli.main import build_parser, main
from routerdc.data import load_score_set, paper_files, write_jsonl
from routerdc.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def frozen_checkpoint(data_dir, tmp_path_factory):
    """A small router trained in frozen-encoder mode on 3 tasks of the shared data."""
    train_files, _ = paper_files(data_dir)
    sets = [load_score_set(f).subset(np.arange(30)) for f in train_files[:3]]
    out = tmp_path_factory.mktemp("ckpt") / "router"
    cfg = TrainConfig(output_dir=str(out), steps=20, batch_size=16, freeze_encoder=True, samples_per_task=30,
                      eval_every=0)
    train(cfg, train_sets=sets)
    return out


def test_help_explains_every_command(capsys):
    for cmd in ("cluster", "train", "evaluate", "route"):
        with pytest.raises(SystemExit) as info:
            build_parser().parse_args([cmd, "--help"])
        assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--k-pos", "--lam", "--n-neg", "--freeze-encoder", "--length-window", "--checkpoint", "--n-clusters"):
        assert option in text
    assert "(default: 0.78)" not in text  # every option documented with its own help, not just a default


def test_route_text_file_keeps_order(frozen_checkpoint, tmp_path):
    queries = ["Solve 12 * 7.", "def add(a, b):", "中国的首都是哪里？", "Which planet is largest?", "Solve 12 * 7."]
    src = tmp_path / "q.txt"
    src.write_text("\n".join(queries) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["route", "--checkpoint", str(frozen_checkpoint), "--input", str(src), "--output", str(out),
                 "--batch-size", "2"]) == 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["query"] for x in lines] == queries
    meta = json.loads((frozen_checkpoint / "config.json").read_text())
    llms = meta["router"]["llm_names"]
    for rec in lines:
        assert set(rec) == {"query", "llm", "probs"}
        assert list(rec["probs"]) == llms and rec["llm"] == max(rec["probs"], key=rec["probs"].get)
        assert sum(rec["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert lines[0]["probs"] == pytest.approx(lines[4]["probs"], abs=1e-6)


def test_route_score_file_in_file_order(frozen_checkpoint, data_dir, tmp_path):
    s = load_score_set(data_dir / "routerdc/split2_model7/humaneval_test.json").subset(np.arange(7))
    src = write_jsonl([s], tmp_path / "h.jsonl")
    out = tmp_path / "out.jsonl"
    assert main(["route", "--checkpoint", str(frozen_checkpoint), "--input", str(src), "--output", str(out)]) == 0
    assert [json.loads(x)["query"] for x in out.read_text(encoding="utf-8").splitlines()] == list(s.queries)


def test_cli_errors_are_clear(frozen_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("", encoding="utf-8")
    assert main(["route", "--checkpoint", str(frozen_checkpoint), "--input", str(bad), "--output",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "bad.json: the file is empty" in capsys.readouterr().err
    assert main(["route", "--checkpoint", str(tmp_path), "--input", str(bad), "--output", "x"]) == 2
    assert not (tmp_path / "o.jsonl").exists()


def test_train_evaluate_cluster_commands(data_dir, tmp_path, capsys):
    train_files, test_files = paper_files(data_dir)
    small = [load_score_set(f).subset(np.arange(20)) for f in train_files[:2]]
    tr = write_jsonl(small, tmp_path / "train.jsonl")
    te = write_jsonl([load_score_set(test_files[5]).subset(np.arange(15))], tmp_path / "test.jsonl")
    clustered = tmp_path / "clustered.jsonl"
    assert main(["cluster", "--input", str(tr), "--output", str(clustered), "--n-clusters", "3"]) == 0
    rows = [json.loads(x) for x in clustered.read_text().splitlines()]
    assert len(rows) == 40 and {r["cluster"] for r in rows} <= {0, 1, 2}
    out = tmp_path / "router"
    assert main(["train", "--train-files", str(clustered), "--test-files", str(te), "--output-dir", str(out),
                 "--steps", "3", "--batch-size", "8", "--freeze-encoder", "--eval-every", "0",
                 "--samples-per-task", "0"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{\n  \"status\""):])
    assert summary["status"] == "done" and summary["best_step"] == 3 and (out / "config.json").exists()
    res = tmp_path / "results.json"
    assert main(["evaluate", "--checkpoint", str(out), "--test-files", str(te), "--baselines",
                 "--train-files", str(tr), "--output", str(res), "--markdown", str(tmp_path / "r.md")]) == 0
    table = json.loads(res.read_text())["values"]
    methods = list(table["rows"])
    assert {"oracle", "random", "RouterDC"} <= set(methods) and any(m.startswith("k-NN") for m in methods)
    assert "PreAlgebra" in table["columns"]


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "routerdc", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "cluster" in proc.stdout and "route" in proc.stdout


def test_evaluate_seeds_mean_and_spread(frozen_checkpoint, data_dir, tmp_path, capsys):
    te = write_jsonl([load_score_set(paper_files(data_dir)[1][1]).subset(np.arange(12))], tmp_path / "g.jsonl")
    out = tmp_path / "table.json"
    ck = str(frozen_checkpoint)
    assert main(["evaluate", "--router", f"ours={ck},{ck}", "--router", f"single={ck}", "--test-files", str(te),
                 "--paper-row", "--output", str(out), "--markdown", str(tmp_path / "t.md")]) == 0
    record = json.loads(out.read_text())
    rows = record["values"]["rows"]
    assert rows["ours"] == rows["single"]  # the mean of two identical seeds is the seed
    assert record["spread"]["rows"]["ours"]["GSM8K"] == 0.0
    assert rows["RouterDC as reported (paper, mDeBERTa)"]["ID avg"] == 58.54
    md = (tmp_path / "t.md").read_text()
    assert "± 0.00" in md and record["command"].startswith("python -m routerdc evaluate --router")
    assert main(["evaluate", "--router", "no-equals-sign", "--test-files", str(te)]) == 2


def test_aggregate_seeds_hand_values():
    import pandas as pd

    from routerdc.evaluate.table import aggregate_seeds

    df = pd.DataFrame({"A": [10.0, 20.0, 30.0, 1.0]}, index=["s0", "s1", "s2", "other"])
    values, spread = aggregate_seeds(df, {"ours": ["s0", "s1", "s2"]})
    assert list(values.index) == ["ours", "other"]
    assert values.at["ours", "A"] == 20.0 and spread.at["ours", "A"] == 10.0
    assert np.isnan(spread.at["other", "A"])


def test_route_int8_matches_fp32_format(frozen_checkpoint, tmp_path):
    src = tmp_path / "q.txt"
    src.write_text("Solve 12 * 7.\nWrite a Python function that sorts a list.\n", encoding="utf-8")
    out = tmp_path / "int8.jsonl"
    assert main(["route", "--checkpoint", str(frozen_checkpoint), "--input", str(src), "--output", str(out),
                 "--int8"]) == 0
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["query"] for x in lines] == ["Solve 12 * 7.", "Write a Python function that sorts a list."]
    assert all(sum(x["probs"].values()) == pytest.approx(1.0, abs=1e-5) for x in lines)


def test_export_fp16_sharded(minilm_router, tmp_path):
    from routerdc.model.router import RouterDC

    src = minilm_router.save_pretrained(tmp_path / "fp32", recipe={"steps": 5, "train_tasks": ["mmlu"]},
                                        metrics={"train/avg": 50.0})
    out = tmp_path / "fp16"
    assert main(["export", "--checkpoint", str(src), "--output", str(out), "--max-shard-size", "15MB"]) == 0
    shards = sorted(out.glob("model-*.safetensors"))
    # Tensors are never split: only the shard holding the 30522 x 384 word embeddings (23 MB) is larger.
    assert len(shards) >= 3 and sum(f.stat().st_size > 16 * 2**20 for f in shards) <= 1
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 50 * 2**20
    assert not (out / "train.json").exists()
    assert {k: v for k, v in RouterDC.from_pretrained(out).meta.recipe.items()
            if k not in ("save_dtype", "max_shard_size", "output_dir", "train_tasks")} == {"steps": 5}
    half = RouterDC.from_pretrained(out)
    assert half.meta.dtype == "float16" and half.meta.metrics == {"train/avg": 50.0}
    queries = ["Solve 3 * 9.", "中国的首都是哪里？"]
    np.testing.assert_allclose(half.route(queries).probs, minilm_router.route(queries).probs, atol=2e-3)


def test_train_resume_flags(data_dir, tmp_path, capsys):
    train_files, _ = paper_files(data_dir)
    tr = write_jsonl([load_score_set(f).subset(np.arange(16)) for f in train_files[:2]], tmp_path / "train.jsonl")
    out = tmp_path / "router"
    args = ["train", "--train-files", str(tr), "--test-files", str(tr), "--output-dir", str(out), "--batch-size", "8",
            "--freeze-encoder", "--eval-every", "2", "--samples-per-task", "0"]

    def summary():
        printed = capsys.readouterr().out
        return json.loads(printed[printed.index("{\n  \"status\""):])

    assert main([*args, "--resume", "--steps", "3"]) == 2
    assert "nothing to resume: " in capsys.readouterr().err
    assert main([*args, "--steps", "3", "--keep-resume"]) == 0
    assert summary()["resume_state"] == str(tmp_path / "router.resume")
    assert main([*args, "--steps", "5"]) == 2  # a fresh run does not discard the kept state
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert main([*args, "--resume", "--steps", "5", "--lam", "0.5"]) == 2
    assert "lam: 1.0 in the state, 0.5 now" in capsys.readouterr().err
    assert main([*args, "--resume", "--steps", "5"]) == 0
    got = summary()
    assert got["status"] == "done" and got["resumed_from"] == 3 and got["resume_state"] is None
    assert not (tmp_path / "router.resume").exists()
