"""A code task through the real harness, offline: ``configs/lm_eval/tiny/tiny_code.yaml`` (lm-eval's
own cruxeval code execution, no Hub metric) on a tiny Llama trained here for a few seconds to answer
three of its four problems, so that its programs pass, fail, or both; ``collect
--allow-code-execution``; then the importer's ``multi_attempt`` scores checked against the fraction
of logged programs that pass when this test runs them itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from routerdc.cli.main import main  # noqa: E402
from routerdc.data.lm_eval_import import read_run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import build_tiny_llm, write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "lm_eval" / "tiny"


def _coder(folder: Path, docs: list[dict]) -> Path:
    """A tiny random Llama trained to answer ``docs`` in the task's prompt format."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_llm(folder, seed=5)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    texts = [f"[PYTHON]\n{d['code']}\nassert f({d['input']}) == ??\n[/PYTHON]\n {d['output']}\n[/ANSWER]" for d in docs]
    ids = [torch.tensor([tok(t, add_special_tokens=False)["input_ids"]]) for t in texts]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is faster on a shared machine
    try:
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for _ in range(150):
            loss = sum(model(x, labels=x).loss for x in ids) / len(ids)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.2
    model.save_pretrained(folder)
    return folder


def _passes(program: str) -> bool:
    """Whether a logged program runs to the end (its assert holds), in a fresh interpreter."""
    try:
        return subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.slow
def test_code_task_scores_are_the_fraction_of_passing_programs(tmp_path):
    docs = [json.loads(x) for x in (TINY / "code.jsonl").read_text(encoding="utf-8").splitlines()]
    coder = _coder(tmp_path / "coder", docs[:3])  # the 4th problem it never saw
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    yaml = (TINY / "tiny_code.yaml").read_text(encoding="utf-8")
    (tasks / "tiny_code.yaml").write_text(yaml.replace("configs/lm_eval/tiny/code.jsonl", str(TINY / "code.jsonl")),
                                          encoding="utf-8")
    cfg = write_config(tmp_path / "models.json", [{"name": "coder", "backend": "transformers", "model": str(coder),
                                                   "cost_per_1k_input": 1.0, "cost_per_1k_output": 1.0}])
    out = tmp_path / "scores.jsonl"
    assert main(["collect", "--models-config", str(cfg), "--tasks", "tiny_code", "--include-path", str(tasks),
                 "--output", str(out), "--batch-size", "4", "--allow-code-execution"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    samples = sorted((json.loads(x) for x in read_run(tmp_path / "scores.lm_eval" / "coder", ["tiny_code"])
                      ["tiny_code"].path.read_text(encoding="utf-8").splitlines()), key=lambda r: r["doc_id"])
    assert [r["task"] for r in rows] == ["tiny_code"] * len(docs) and {r["metric"] for r in rows} == {"multi_attempt"}
    expected = []
    for s in samples:
        programs = s["filtered_resps"][0]  # the harness' filter: the function + `assert f(input)==answer`
        assert len(programs) == 3 and all(p.startswith(s["doc"]["code"]) for p in programs)
        expected.append(sum(_passes(p) for p in programs) / len(programs))
    got = [r["scores"]["coder"] for r in rows]
    assert got == pytest.approx(expected, abs=1e-6)
    assert 0 < sum(got) < len(got)  # some programs pass and some fail: both paths are exercised
    assert all(r["costs"]["coder"] > 0 for r in rows)
