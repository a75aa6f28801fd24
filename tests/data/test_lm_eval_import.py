"""Score data from lm-evaluation-harness on CPU: the real harness (``python -m routerdc collect``) on
tiny random-weight Llamas with small local tasks, one candidate through ``hf`` and one through
``local-completions`` against our own server's ``/v1/completions``; then the importer's scores
checked against values computed here from the samples files, and one test per bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("lm_eval")

from routerdc.cli.main import main  # noqa: E402
from routerdc.data import DataError  # noqa: E402
from routerdc.data.formats import load_scores  # noqa: E402
from routerdc.data.lm_eval_import import import_runs, read_run  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serving_support import TINY_NAMES, ServerProcess, build_router, tiny_llms, write_config  # noqa: E402

MC = [{"question": f"Which colour is thing {i}?", "choices": ["red", "green", "blue"], "label": i % 3} for i in range(4)]
MC.append(dict(MC[1]))  # the same text twice: two documents, two rows
GEN = [{"question": f"Name a vowel, number {i}.", "answer": "aeiou"[i % 5]} for i in range(3)]

MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list: [{{metric: acc}}]
metadata: {{version: 1.0}}
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
repeats: 3
generation_kwargs: {{until: ["\\n"], max_gen_toks: 6, do_sample: true, temperature: 1.0}}
metric_list: [{{metric: exact_match}}]
filter_list:
  - name: first-vowel
    filter: [{{function: regex, regex_pattern: "([aeiou])"}}, {{function: take_first}}]
  - name: last-vowel
    filter: [{{function: regex, regex_pattern: "([aeiou])", group_select: -1}}, {{function: take_first}}]
metadata: {{version: 1.0}}
"""
# dollars per 1k tokens; tiny-a's output dearer than its input, so a mix-up of the two shows
PRICES = {"tiny-a": {"cost_per_1k_input": 0.5, "cost_per_1k_output": 2.0},
          "tiny-b": {"cost_per_1k_input": 0.03, "cost_per_1k_output": 0.07}}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """One ``collect`` run: tiny-a through hf, tiny-b through local-completions on our server."""
    d = tmp_path_factory.mktemp("collect")
    tiny = tiny_llms()
    tasks = d / "tasks"
    tasks.mkdir()
    for name, rows, yaml in (("mc", MC, MC_YAML), ("gen", GEN, GEN_YAML)):
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (tasks / f"tiny_{name}.yaml").write_text(yaml.format(data=tasks / f"{name}.jsonl"), encoding="utf-8")
    router = build_router(d / "router", TINY_NAMES)
    served = write_config(d / "served.json", [
        {"name": n, "backend": "transformers", "model": str(tiny[n]), "prompt_format": "completion"} for n in TINY_NAMES])
    srv = ServerProcess(router, served, d / "server.log")
    try:
        cfg = write_config(d / "candidates.json", [
            {"name": "tiny-a", "backend": "transformers", "model": str(tiny["tiny-a"]), **PRICES["tiny-a"]},
            {"name": "tiny-b", "backend": "openai", "model": "tiny-b", "base_url": srv.url + "/v1",
             "tokenizer": str(tiny["tiny-b"]), "prompt_format": "completion", **PRICES["tiny-b"]}])
        out = d / "scores.jsonl"
        rc = main(["collect", "--models-config", str(cfg), "--tasks", "tiny_mc,tiny_gen", "--include-path",
                   str(tasks), "--output", str(out), "--batch-size", "4"])
        assert rc == 0
        yield {"dir": d, "out": out, "work": d / "scores.lm_eval", "tiny": tiny, "cfg": cfg, "tasks": tasks,
               "server": srv}
    finally:
        srv.stop()


def _samples(work: Path, llm: str, task: str) -> list[dict]:
    path = read_run(work / llm, [task])[task].path
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _expected_mc(row: dict) -> float:
    lls = [float(x[0]) for x in row["filtered_resps"]]
    z = sum(math.exp(x) for x in lls)
    return math.exp(lls[int(row["target"])]) / z if row["acc"] == 1.0 else 0.0


def _expected_gen(row: dict, last: bool) -> float:
    good = 0
    for a in row["resps"][0]:
        v = re.findall("[aeiou]", a)
        good += (v[-1] if last else v[0]) == row["target"] if v else False
    return good / len(row["resps"][0])


def test_collect_imports_every_score_as_computed_from_the_samples(collected):
    rows = [json.loads(x) for x in collected["out"].read_text(encoding="utf-8").splitlines()]
    assert [r["task"] for r in rows] == ["tiny_gen:first-vowel"] * len(GEN) + ["tiny_mc"] * len(MC)
    by_task = {"tiny_gen:first-vowel": [], "tiny_mc": []}
    for r in rows:
        by_task[r["task"]].append(r)
    assert [r["query"] for r in by_task["tiny_mc"]] == [f"Question: {d['question']}\nAnswer:" for d in MC]
    for llm in TINY_NAMES:
        mc = sorted(_samples(collected["work"], llm, "tiny_mc"), key=lambda r: r["doc_id"])
        assert [r["scores"][llm] for r in by_task["tiny_mc"]] == pytest.approx([_expected_mc(s) for s in mc], abs=1e-6)
        gen = sorted((s for s in _samples(collected["work"], llm, "tiny_gen") if s["filter"] == "first-vowel"),
                     key=lambda r: r["doc_id"])
        assert all(len(s["resps"][0]) == 3 for s in gen)
        assert [r["scores"][llm] for r in by_task["tiny_gen:first-vowel"]] == pytest.approx(
            [_expected_gen(s, last=False) for s in gen], abs=1e-6)
        assert all(r["metric"] == "multi_attempt" for r in by_task["tiny_gen:first-vowel"])
    sets = load_scores(collected["out"])  # what train / cluster / the Train tab read
    assert [len(s.queries) for s in sets] == [len(GEN), len(MC)]


def test_filter_option_picks_the_other_filter(collected, tmp_path):
    work = collected["work"]
    sets = import_runs({n: work / n for n in TINY_NAMES}, tasks=["tiny_gen"], filter="last-vowel")
    assert sets[0].task == "tiny_gen:last-vowel"
    for j, llm in enumerate(TINY_NAMES):
        gen = sorted((s for s in _samples(work, llm, "tiny_gen") if s["filter"] == "last-vowel"),
                     key=lambda r: r["doc_id"])
        assert list(sets[0].scores[:, j]) == pytest.approx([_expected_gen(s, last=True) for s in gen], abs=1e-6)


def _counter(path: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _expected_cost(row: dict, llm: str, count) -> float:
    """Dollars from the samples row: log-likelihood requests bill context + continuation as input;
    a generation bills its prompt as input and (the mean over its repeats of) its answer as output."""
    p, args = PRICES[llm], list(row["arguments"].values())
    if isinstance(args[0]["arg_1"], str):  # log-likelihood requests: (context, continuation)
        return sum(count(a["arg_0"] + a["arg_1"]) for a in args) * p["cost_per_1k_input"] / 1000
    answers = row["resps"][0]
    return (count(args[0]["arg_0"]) * p["cost_per_1k_input"]
            + sum(count(a) for a in answers) / len(answers) * p["cost_per_1k_output"]) / 1000


def test_collect_fills_costs_from_the_prices_and_each_llms_token_counts(collected):
    rows = [json.loads(x) for x in collected["out"].read_text(encoding="utf-8").splitlines()]
    for llm in TINY_NAMES:
        count = _counter(collected["tiny"][llm])
        for task, filt in (("tiny_mc", None), ("tiny_gen", "first-vowel")):
            samples = sorted((s for s in _samples(collected["work"], llm, task) if filt in (None, s["filter"])),
                             key=lambda r: r["doc_id"])
            got = [r["costs"][llm] for r in rows if r["task"].split(":")[0] == task]
            assert got == pytest.approx([_expected_cost(s, llm, count) for s in samples], rel=1e-9)
            assert all(c > 0 for c in got)
    answers = [a for s in _samples(collected["work"], "tiny-a", "tiny_gen") for a in s["resps"][0]]
    assert any(answers)  # so the output price is exercised too


def test_import_fills_costs_only_when_every_llm_is_priced_and_tokenized(collected, tmp_path, capsys):
    work, tiny = collected["work"], collected["tiny"]
    argv = ["import-lm-eval", "--llm", f"tiny-a={work / 'tiny-a'}", "--llm", f"tiny-b={work / 'tiny-b'}"]
    out = tmp_path / "priced.jsonl"
    assert main([*argv, "--output", str(out), "--models-config", str(collected["cfg"])]) == 0
    assert "costs filled" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == collected["out"].read_text(encoding="utf-8")  # as collect wrote it
    for name, models, why in (
            ("unpriced", [{"name": "tiny-a", "backend": "transformers", "model": str(tiny["tiny-a"]), **PRICES["tiny-a"]},
                          {"name": "tiny-b", "backend": "transformers", "model": str(tiny["tiny-b"])}],
             "['tiny-b'] have no prices"),
            ("untokenized", [{"name": "tiny-a", "backend": "transformers", "model": str(tiny["tiny-a"]), **PRICES["tiny-a"]},
                             {"name": "tiny-b", "backend": "openai", "model": "b", "base_url": "http://127.0.0.1:9/v1",
                              **PRICES["tiny-b"]}],
             "['tiny-b'] name no tokenizer"),
            ("absent", [{"name": "tiny-a", "backend": "transformers", "model": str(tiny["tiny-a"]), **PRICES["tiny-a"]}],
             "['tiny-b'] are not in it")):
        cfg = write_config(tmp_path / f"{name}.json", models)
        out = tmp_path / f"{name}.jsonl"
        assert main([*argv, "--output", str(out), "--models-config", str(cfg)]) == 0
        err = capsys.readouterr().err
        assert err.count("costs not filled") == 1 and why in err and "no costs" in err, err
        assert all("costs" not in json.loads(x) for x in out.read_text(encoding="utf-8").splitlines())
    broken = write_config(tmp_path / "broken.json", [
        {"name": n, "backend": "transformers", "model": str(tmp_path / "nowhere"), **PRICES[n]} for n in TINY_NAMES])
    assert main([*argv, "--output", str(tmp_path / "broken.jsonl"), "--models-config", str(broken)]) == 2
    assert "cannot load tokenizer" in capsys.readouterr().err and not (tmp_path / "broken.jsonl").exists()


def test_completions_logprobs_match_the_model(collected):
    """local-completions' log-likelihoods (via our /v1/completions) equal transformers' own, per choice."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = collected["tiny"]["tiny-b"]
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    row = sorted(_samples(collected["work"], "tiny-b", "tiny_mc"), key=lambda r: r["doc_id"])[0]
    for k, arg in enumerate(row["arguments"].values()):
        ctx, cont = tok(arg["arg_0"], add_special_tokens=False)["input_ids"], tok(
            arg["arg_0"] + arg["arg_1"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([cont])).logits[0], -1)
        want = sum(float(lp[i - 1, cont[i]]) for i in range(len(ctx), len(cont)))
        assert float(row["resps"][k][0][0]) == pytest.approx(want, abs=1e-3)
    r = httpx.post(collected["server"].url + "/v1/completions", timeout=60, json={
        "model": "tiny-b", "prompt": "hello world", "max_tokens": 2, "echo": True, "logprobs": 2, "temperature": 0})
    body = r.json()
    lps = body["choices"][0]["logprobs"]
    assert r.status_code == 200 and lps["token_logprobs"][0] is None
    assert len(lps["tokens"]) == body["usage"]["prompt_tokens"] + 2 == len(lps["top_logprobs"])
    assert body["choices"][0]["text"].startswith("hello world")
    for bad, msg in (({"model": "nope"}, "unknown model"), ({"stream": True}, "stream"),
                     ({"prompt": [99999]}, "vocabulary")):
        req = {"model": "tiny-b", "prompt": "hi", **bad}
        r = httpx.post(collected["server"].url + "/v1/completions", json=req, timeout=30)
        assert r.status_code in (400, 404) and msg in r.json()["error"]["message"]


def test_collect_resumes_and_chat_only_candidates_are_refused(collected, capsys):
    out = collected["dir"] / "again.jsonl"
    assert main(["collect", "--models-config", str(collected["cfg"]), "--tasks", "tiny_mc,tiny_gen", "--include-path",
                 str(collected["tasks"]), "--output", str(out), "--work-dir", str(collected["work"])]) == 0
    assert capsys.readouterr().err.count("skipped") == 2
    assert out.read_text(encoding="utf-8") == collected["out"].read_text(encoding="utf-8")
    chat = write_config(collected["dir"] / "chat.json", [{"name": "c", "backend": "openai", "model": "c",
                                                          "base_url": "http://127.0.0.1:9/v1"}])
    assert main(["collect", "--models-config", str(chat), "--tasks", "tiny_mc", "--include-path",
                 str(collected["tasks"]), "--output", str(collected["dir"] / "chat.jsonl")]) == 2
    assert "generative tasks only" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input: one test each, nothing written
@pytest.fixture
def runs(collected, tmp_path):
    """Copies of the two runs that a test may damage."""
    out = {}
    for n in TINY_NAMES:
        shutil.copytree(collected["work"] / n, tmp_path / n)
        out[n] = tmp_path / n
    return out


def _file(run: Path, task: str) -> Path:
    return read_run(run, [task])[task].path


def _fails(runs, tmp_path, capsys, *match, extra=()):
    out = tmp_path / "out.jsonl"
    argv = ["import-lm-eval", "--output", str(out), *extra]
    for n, d in runs.items():
        argv += ["--llm", f"{n}={d}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    for m in match:
        assert m in err, err
    assert not out.exists()


def test_empty_samples_file(runs, tmp_path, capsys):
    f = _file(runs["tiny-b"], "tiny_mc")
    f.write_text("", encoding="utf-8")
    _fails(runs, tmp_path, capsys, str(f), "tiny_mc", "empty samples file")


def test_truncated_samples_file(runs, tmp_path, capsys):
    f = _file(runs["tiny-b"], "tiny_gen")
    text = f.read_text(encoding="utf-8")
    f.write_text(text[: len(text) // 2], encoding="utf-8")
    _fails(runs, tmp_path, capsys, str(f), "tiny_gen", "is not JSON", "truncated")


def test_non_json_samples_file(runs, tmp_path, capsys):
    f = _file(runs["tiny-a"], "tiny_mc")
    f.write_text("doc_id,doc\n0,x\n", encoding="utf-8")
    _fails(runs, tmp_path, capsys, str(f), "line 1 is not JSON")


def test_other_harness_version_missing_fields(runs, tmp_path, capsys):
    f = _file(runs["tiny-a"], "tiny_mc")
    rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
    for r in rows:
        r.pop("doc_hash"), r.pop("filter")
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    _fails(runs, tmp_path, capsys, str(f), "doc_id 0", "'doc_hash'", "not lm-eval 0.4.13")


def _edit_rows(f: Path, fn) -> None:
    rows = [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines()]
    f.write_text("".join(json.dumps(r) + "\n" for r in fn(rows)), encoding="utf-8")


def test_document_missing_for_one_llm(runs, tmp_path, capsys):
    f = _file(runs["tiny-b"], "tiny_mc")
    _edit_rows(f, lambda rows: [r for r in rows if r["doc_id"] != 2])
    _fails(runs, tmp_path, capsys, str(f), "tiny_mc", "doc_id 2", "no such document", "--missing drop")


def test_document_with_a_different_hash(runs, tmp_path, capsys):
    f = _file(runs["tiny-b"], "tiny_mc")
    _edit_rows(f, lambda rows: [{**r, "doc_hash": "0" * 64} if r["doc_id"] == 3 else r for r in rows])
    _fails(runs, tmp_path, capsys, str(f), "doc_id 3", "different doc_hash")


def test_missing_drop_warns_with_the_list(runs, tmp_path):
    _edit_rows(_file(runs["tiny-b"], "tiny_mc"), lambda rows: [r for r in rows if r["doc_id"] not in (1, 3)])
    with pytest.warns(UserWarning, match=r"tiny_mc: dropped 2 document\(s\).*doc_id \[1, 3\]"):
        sets = import_runs(runs, tasks=["tiny_mc"], missing="drop")
    assert len(sets[0].queries) == len(MC) - 2


@pytest.mark.parametrize("key,value", [("num_fewshot", 3), ("repeats", 5)])
def test_task_config_differs_between_llms(runs, tmp_path, capsys, key, value):
    task = "tiny_mc" if key == "num_fewshot" else "tiny_gen"
    res = next(runs["tiny-b"].glob("**/results_*.json"))
    data = json.loads(res.read_text(encoding="utf-8"))
    data["configs"][task][key] = value
    res.write_text(json.dumps(data), encoding="utf-8")
    _fails(runs, tmp_path, capsys, f"task {task}", f"config '{key}' differs", "tiny-a", "tiny-b")


def test_llm_named_twice(runs, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert main(["import-lm-eval", "--output", str(out), "--llm", f"x={runs['tiny-a']}",
                 "--llm", f"x={runs['tiny-b']}"]) == 2
    assert "'x' named twice" in capsys.readouterr().err and not out.exists()


def test_newest_run_is_taken_and_said(runs):
    f = _file(runs["tiny-a"], "tiny_mc")
    date = f.name[len("samples_tiny_mc_"):-len(".jsonl")]
    older = "2000-01-01T00-00-00.000000"
    shutil.copy(f, f.with_name(f"samples_tiny_mc_{older}.jsonl"))
    shutil.copy(f.with_name(f"results_{date}.json"), f.with_name(f"results_{older}.json"))
    with pytest.warns(UserWarning, match=f"run 2 times; taking the newest, {re.escape(f.name)}"):
        assert read_run(runs["tiny-a"], ["tiny_mc"])["tiny_mc"].path == f


def test_workflow_collect_cluster_train_calibrate_serve(collected, tmp_path, capsys):
    """The README's workflow on the collected scores: cluster -> train (frozen) -> calibrate -> serve ->
    an OpenAI client gets an answer carrying the routing decision."""
    from openai import OpenAI

    clustered, router = tmp_path / "clustered.jsonl", tmp_path / "router"
    assert main(["cluster", "--input", str(collected["out"]), "--output", str(clustered), "--n-clusters", "2"]) == 0
    assert main(["train", "--train-files", str(clustered), "--output-dir", str(router), "--steps", "3",
                 "--batch-size", "4", "--freeze-encoder", "--eval-every", "0", "--samples-per-task", "0"]) == 0
    assert main(["calibrate", "--checkpoint", str(router), "--train-files", str(clustered)]) == 0
    capsys.readouterr()
    cfg = json.loads((router / "config.json").read_text(encoding="utf-8"))
    assert cfg["router"]["llm_names"] == list(TINY_NAMES) and "calibration" in cfg
    # the trainer takes the imported costs as the router's expected cost per LLM (mean over the rows) ...
    rows = [json.loads(x) for x in collected["out"].read_text(encoding="utf-8").splitlines()]
    mean = [sum(r["costs"][n] for r in rows) / len(rows) for n in TINY_NAMES]
    assert cfg["router"]["llm_cost"] == pytest.approx(mean, rel=1e-9)
    assert main(["costs", "--checkpoint", str(router), "--scores", str(collected["out"]),
                 "--output", str(tmp_path / "recosted")]) == 0  # ... and so does `costs --scores`
    capsys.readouterr()
    recosted = json.loads((tmp_path / "recosted" / "config.json").read_text(encoding="utf-8"))
    assert recosted["router"]["llm_cost"] == pytest.approx(mean, rel=1e-9)
    queries = tmp_path / "queries.txt"  # and cost-weighted routing uses them: a large weight picks the cheapest
    queries.write_text("Which colour is thing 2?\nName a vowel, number 1.\n", encoding="utf-8")
    assert main(["route", "--checkpoint", str(router), "--input", str(queries), "--output", str(tmp_path / "r.jsonl"),
                 "--cost-weight", "1000"]) == 0
    cheapest = TINY_NAMES[mean.index(min(mean))]
    assert [json.loads(x)["llm"] for x in (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()] == [
        cheapest] * 2
    served = write_config(tmp_path / "served.json", [
        {"name": n, "backend": "transformers", "model": str(collected["tiny"][n]), "prompt_format": "completion",
         "sampling": {"max_tokens": 4}} for n in TINY_NAMES])
    srv = ServerProcess(router, served, tmp_path / "server.log")
    try:
        client = OpenAI(base_url=srv.url + "/v1", api_key="EMPTY")
        raw = client.chat.completions.with_raw_response.create(
            model="routerdc", messages=[{"role": "user", "content": "Which colour is thing 2?"}], max_tokens=4)
        body = raw.parse()
        decision = body.model_extra["routerdc"]
        assert decision["llm"] in TINY_NAMES and decision["routed"] is True
        assert set(decision["probs"]) == set(TINY_NAMES) and raw.headers["X-RouterDC-LLM"] == decision["llm"]
        assert body.choices[0].message.content is not None
    finally:
        srv.stop()


def test_paper_task_files_load_into_the_harness_index():
    """configs/lm_eval/ indexes in lm_eval 0.4.13 (their data sets are on the Hub: not run here)."""
    from lm_eval.tasks import TaskManager

    root = Path(__file__).resolve().parents[2] / "configs" / "lm_eval"
    index = TaskManager(include_path=str(root)).task_index
    for name in ("routerdc_gsm8k_train", "routerdc_mmlu_5shot", "routerdc_cmmlu_5shot", "routerdc_ceval_5shot",
                 "routerdc_arc", "routerdc_code_n10", "tiny_mc", "tiny_gen", "tiny_code"):
        assert name in index, name


@pytest.mark.slow
def test_the_imported_file_trains_in_the_app(collected, data_dir):
    """The Train tab takes the imported JSONL as an upload and trains a router over its LLMs (the app
    starts on the shared score data: skipped, like the other app tests, where they are absent)."""
    from gradio_client import Client, handle_file

    from tests.app_support.server import app_server

    srv = app_server()
    try:
        client = Client(srv.url, verbose=False)
        # shipped, uploads, name, frozen, projection, steps, batch, rows, eval_every, lr, head_lr, tau, lam,
        # K+, K-, H, n clusters, re-cluster, calibrate
        outputs = client.predict([], [handle_file(str(collected["out"]))], "from-lm-eval", True, True, 4, 4, 40, 2,
                                 5e-5, 1e-2, 1.0, 1.0, 1, 1, 1, 2, False, True, api_name="/train")
        assert outputs[0].startswith("Finished") and "from-lm-eval" in outputs[0], outputs[0]
        from routerdc.checkpoint import read_config

        saved = read_config(srv.ctx.training.status.output_dir)
        assert set(saved["router"]["llm_names"]) == set(TINY_NAMES)
    finally:
        srv.demo.close()
