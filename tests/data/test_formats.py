"""Score data: the three formats, validation that names file and row, alignment, balancing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from routerdc.data import (
    DataError, ScoreSet, balance, canonical_task, load_many, load_score_set, load_scores,
    paper_files, read_queries, write_jsonl,
)

A, B, C = "org/model-a", "org/model-b", "org/model-c"


def _json(tmp_path: Path, rows, name: str = "mmlu_train.json") -> Path:
    p = tmp_path / name
    p.write_text(rows if isinstance(rows, str) else json.dumps(rows), encoding="utf-8")
    return p


def _row(q="What is 2+2?", **scores):
    return {"question": q, "scores": scores or {A: 1.0, B: 0.0, C: 0.5}}


# ----------------------------------------------------------------------------- good files
def test_routerdc_json_task_metric_llms(tmp_path):
    p = _json(tmp_path, [{**_row(), "cluster_id": 2}, {**_row("Q2"), "cluster_id": 0}], "gsm8k-train.json")
    s = load_score_set(p)
    assert (s.task, s.metric, s.llms, len(s)) == ("gsm8k", "multi_attempt", (A, B, C), 2)
    assert s.clusters.tolist() == [2, 0]
    assert s.rows == (1, 2)


def test_scores_aligned_by_name_not_position(tmp_path):
    p1 = _json(tmp_path, [_row(**{A: 1.0, B: 0.0, C: 0.5})], "a_train.json")
    p2 = _json(tmp_path, [{"question": "x", "scores": {C: 0.25, A: 0.75, B: 0.0}}], "b_train.json")
    s1, s2 = load_many([p1, p2])
    assert s2.llms == (A, B, C)
    assert s2.scores.tolist() == [[0.75, 0.0, 0.25]]


def test_rows_in_other_key_order_are_aligned(tmp_path):
    p = _json(tmp_path, [_row(**{A: 1.0, B: 0.0, C: 0.5}), {"question": "x", "scores": {C: 0.1, B: 0.2, A: 0.3}}])
    assert load_score_set(p).scores[1].tolist() == pytest.approx([0.3, 0.2, 0.1])


def test_jsonl_with_tasks_metric_clusters_costs(tmp_path):
    lines = [
        {"query": "q1", "scores": {A: 1, B: 0}, "task": "mbpp", "cluster": 1, "costs": {A: 0.1, B: 0.2}},
        {"query": "q2", "scores": {A: 0, B: 1}, "task": "mmlu", "cluster": 0, "costs": {A: 0.1, B: 0.2}},
        {"query": "q3", "scores": {B: 0.5, A: 0.5}, "task": "mbpp", "cluster": 2, "costs": {B: 0.3, A: 0.4}},
    ]
    p = tmp_path / "mine.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    mbpp, mmlu = load_scores(p)
    assert (mbpp.task, mbpp.metric, mbpp.queries, mbpp.rows) == ("mbpp", "multi_attempt", ("q1", "q3"), (1, 3))
    assert mmlu.metric == "probability"
    assert mbpp.costs.tolist() == [[0.1, 0.2], [0.4, 0.3]]
    assert read_queries(p) == ["q1", "q2", "q3"]  # file order across tasks


def test_jsonl_round_trip(tmp_path, tiny_set):
    p = write_jsonl([tiny_set], tmp_path / "out.jsonl")
    back = load_score_set(p)
    assert back.queries == tiny_set.queries and back.metric == tiny_set.metric
    np.testing.assert_allclose(back.scores, tiny_set.scores)
    assert back.clusters.tolist() == tiny_set.clusters.tolist()


def _csv(tmp_path: Path, body: str, name: str = "arc_challenge_test.csv") -> Path:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return p


CSV_HEAD = (",sample_id,prompt,eval_name,m1,m2,m1|model_response,m2|model_response,m1|total_cost,m2|total_cost,"
            "oracle_model_to_route_to\n")


def test_routerbench_csv(tmp_path):
    body = CSV_HEAD + (
        "0,s0,\"['Write a python function', 'to add']\",mbpp,1.0,0.0,\"['def f(): pass']\",\"['no']\",0.001,0.002,m1\n"
        "1,s1,\"['Which is right?\\nA. x']\",mbpp,0.0,1.0,\"['A']\",\"['B']\",0.003,0.004,m2\n"
    )
    s = load_score_set(_csv(tmp_path, body))
    assert s.task == "mbpp" and s.metric == "multi_attempt" and s.llms == ("m1", "m2")
    assert s.queries[0] == "Write a python function\nto add"
    assert s.responses[0] == ("def f(): pass", "no")
    assert s.costs.tolist() == [[0.001, 0.002], [0.003, 0.004]]


def test_routerbench_missing_scores_policy(tmp_path):
    body = CSV_HEAD + "0,s0,\"['q0']\",mbpp,1.0,,\"['a']\",\"['b']\",0.1,0.1,m1\n1,s1,\"['q1']\",mbpp,0.0,1.0,\"['a']\",\"['b']\",0.1,0.1,m2\n"
    p = _csv(tmp_path, body)
    with pytest.raises(DataError, match=r"row 2: no score for \['m2'\].*missing='drop'"):
        load_scores(p)
    with pytest.warns(UserWarning, match=r"skipped 1 rows .*\[2\]"):
        assert load_score_set(p, missing="drop").queries == ("q1",)
    assert load_score_set(p, missing="zero").scores[0].tolist() == [1.0, 0.0]


def test_shared_data_loads(data_dir):
    train, test = paper_files(data_dir)
    sets = load_many(train + test)
    assert [s.task for s in sets][:5] == ["mmlu", "gsm8k", "cmmlu", "arc_challenge", "humaneval"]
    assert all(s.clusters is not None for s in sets[:5])
    assert {s.metric for s in sets} == {"probability", "multi_attempt"}
    with pytest.warns(UserWarning):
        rb = load_scores(data_dir / "routerbench/routerbench_cluster/arc_challenge_train.csv", missing="drop")
    assert len(rb[0].llms) == 11 and "Unnamed: 0" not in rb[0].llms and rb[0].clusters is not None


# ----------------------------------------------------------------------------- bad files
BAD_JSON = {
    "empty file": ("", r"the file is empty"),
    "whitespace only": ("  \n ", r"the file is empty"),
    "not json": ("[{", r"not valid JSON"),
    "not a list": ('{"question": "x"}', r"expected a JSON list"),
    "empty list": ("[]", r"holds no rows"),
    "row not an object": ("[1]", r"row 1: expected an object"),
    "missing question": (json.dumps([{"scores": {A: 1}}]), r"row 1: missing field 'query'"),
    "missing scores": (json.dumps([_row(), {"question": "q"}]), r"row 2: missing field 'scores'"),
    "empty question": (json.dumps([_row("  ")]), r"row 1: 'question' is empty"),
    "question not string": (json.dumps([{"question": 3, "scores": {A: 1}}]), r"row 1: 'question' must be a string"),
    "empty scores": (json.dumps([{"question": "q", "scores": {}}]), r"row 1: 'scores' must be a non-empty"),
    "non-numeric": (json.dumps([_row(**{A: "high", B: 0.0})]), r"row 1: scores\['org/model-a'\] is not a number"),
    "bool score": (json.dumps([_row(**{A: True, B: 0.0})]), r"is not a number"),
    "NaN": ('[{"question": "q", "scores": {"a": NaN}}]', r"row 1: scores\['a'\] is not finite"),
    "inf": ('[{"question": "q", "scores": {"a": Infinity}}]', r"row 1: scores\['a'\] is not finite"),
    "null score": ('[{"question": "q", "scores": {"a": null}}]', r"row 1: no scores for \['a'\]"),
    "LLM set differs between rows": (json.dumps([_row(), _row(**{A: 1.0, B: 0.0})]),
                                     r"row 2: the LLM set differs .*missing \['org/model-c'\]"),
    "duplicate LLM names": ('[{"question": "q", "scores": {"a": 1, "a": 0}}]', r"row 1: duplicate LLM names .*\['a'\]"),
    "bad cluster id": (json.dumps([{**_row(), "cluster_id": 1.5}]), r"row 1: cluster_id must be an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON))
def test_bad_json_names_file_and_row(tmp_path, case):
    text, pattern = BAD_JSON[case]
    p = _json(tmp_path, text)
    with pytest.raises(DataError, match=pattern) as info:
        load_scores(p)
    assert str(p) in str(info.value)


def test_bad_jsonl_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"query": "q", "scores": {A: 1}}) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"x.jsonl, line 2: not valid JSON"):
        load_scores(p)


def test_jsonl_bad_metric(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"query": "q", "scores": {A: 1}, "metric": "bleu"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"row 1: metric must be one of"):
        load_scores(p)


def test_unreadable_file(tmp_path):
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"bin.json: cannot read the file"):
        load_scores(p)
    with pytest.raises(DataError, match=r"no such file"):
        load_scores(tmp_path / "absent.json")


def test_unsupported_type(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"unsupported file type '.parquet'"):
        load_scores(p)


def test_llm_set_differs_between_files(tmp_path):
    p1 = _json(tmp_path, [_row()], "a.json")
    p2 = _json(tmp_path, [_row(**{A: 1.0, B: 0.0})], "b.json")
    with pytest.raises(DataError, match=r"b.json: LLM names differ .*missing \['org/model-c'\]"):
        load_many([p1, p2])


CSV_BAD = {
    "duplicate columns": (",prompt,m1,m1\n0,\"['q']\",1,0\n", r"duplicate columns \['m1'\]"),
    "no prompt column": (",question,m1\n0,q,1\n", r"missing column 'prompt'"),
    "no llm columns": (",prompt,eval_name\n0,\"['q']\",mbpp\n", r"no LLM score columns"),
    "ragged row": (",prompt,m1,m2\n0,\"['q']\",1\n", r"row 2: 3 cells, expected 4"),
    "non-numeric": (",prompt,m1,m2\n0,\"['q']\",1,yes\n", r"row 2: score of 'm2' is not a number"),
    "nan": (",prompt,m1,m2\n0,\"['q']\",1,nan\n", r"row 2: score of 'm2' is not finite"),
    "broken list literal": (",prompt,m1\n0,\"['q', oops]\",1\n", r"row 2: 'prompt' is not a valid list literal"),
    "header only": (",prompt,m1\n", r"holds no rows"),
}


@pytest.mark.parametrize("case", sorted(CSV_BAD))
def test_bad_csv(tmp_path, case):
    body, pattern = CSV_BAD[case]
    with pytest.raises(DataError, match=pattern):
        load_scores(_csv(tmp_path, body, "t.csv"))


def test_scoreset_rejects_inconsistent_arrays():
    with pytest.raises(DataError, match=r"duplicate LLM names \['a'\]"):
        ScoreSet("t", "probability", ("a", "a"), ("q",), np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"scores have shape"):
        ScoreSet("t", "probability", ("a", "b"), ("q",), np.zeros((1, 3)))
    with pytest.raises(DataError, match=r"row 1: non-finite score"):
        ScoreSet("t", "probability", ("a",), ("q",), np.array([[np.nan]]))
    with pytest.raises(DataError, match=r"metric must be one of"):
        ScoreSet("t", "accuracy", ("a",), ("q",), np.zeros((1, 1)))  # type: ignore[arg-type]


def test_metric_scores_binarise_multiple_choice_only():
    mc = ScoreSet("mmlu", "probability", ("a", "b", "c"), ("q1", "q2"), np.array([[0.0, 0.31, 0.9], [0.26, 0.0, 0.0]]))
    assert mc.metric_scores().scores.tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]
    assert mc.scores[0, 1] == np.float32(0.31)  # the original is untouched
    gen = ScoreSet("gsm8k", "multi_attempt", ("a", "b"), ("q",), np.array([[0.3, 0.0]]))
    assert gen.metric_scores() is gen


# ----------------------------------------------------------------------------- balancing
def test_balance_truncates_and_repeats(tiny_set):
    small, big = balance([tiny_set.subset([0, 1, 2]), tiny_set], n=5)
    assert small.queries == tuple(tiny_set.queries[i] for i in (0, 1, 2, 0, 1))
    assert big.queries == tiny_set.queries[:5]
    assert small.clusters.tolist() == tiny_set.clusters[[0, 1, 2, 0, 1]].tolist()
    assert balance([tiny_set], n=0)[0] is tiny_set
    shuffled = balance([tiny_set], n=12, seed=1)[0]
    assert sorted(shuffled.queries) == sorted(tiny_set.queries) and shuffled.queries != tiny_set.queries


def test_canonical_task_names():
    assert canonical_task("gsm8k-train") == "gsm8k"
    assert canonical_task("arc-challenge") == "arc_challenge"
    assert canonical_task("MATH_prealgebra") == "prealgebra"
    assert canonical_task("winograde_train") == "winogrande"


def test_read_queries_text_file(tmp_path):
    p = tmp_path / "q.txt"
    p.write_text("first\n\nsecond  \nthird\n", encoding="utf-8")
    assert read_queries(p) == ["first", "second  ", "third"]
    (tmp_path / "e.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_queries(tmp_path / "e.txt")


def test_the_data_dir_comes_from_the_argument_then_the_environment_then_beside_the_checkout(monkeypatch, tmp_path):
    from pathlib import Path

    from routerdc.data.registry import DATA_ENV, data_dir_path

    beside = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert data_dir_path("elsewhere") == Path("elsewhere") and data_dir_path() == tmp_path
    monkeypatch.setenv(DATA_ENV, "")  # empty: unset, not the current folder
    assert data_dir_path() == beside
    monkeypatch.delenv(DATA_ENV)
    assert data_dir_path() == beside
