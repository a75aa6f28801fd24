"""The evaluator against a table computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from routerdc.data.scoreset import DataError, ScoreSet
from routerdc.evaluate.metrics import accuracy, oracle_accuracy, query_correct, random_accuracy
from routerdc.evaluate.table import results_table, save_results, to_json, to_markdown

LLMS = ("a", "b", "c")


def _set(task: str, metric: str, scores: list[list[float]], llms=LLMS) -> ScoreSet:
    return ScoreSet(
        task=task,
        metric=metric,  # type: ignore[arg-type]
        llms=tuple(llms),
        queries=tuple(f"{task} q{i}" for i in range(len(scores))),
        scores=np.array(scores, dtype=np.float32),
    )


# ID, probability: correct (> 0) -> a: q0,q3 = 50; b: q1,q3 = 50; c: q0 = 25; oracle 75.
MMLU = _set("mmlu", "probability", [[0.6, 0, 0.3], [0, 0.5, 0], [0, 0, 0], [0.2, 0.7, 0]])
# ID, multi_attempt: a 1.8/4 = 45; b 1.4/4 = 35; c 1.9/4 = 47.5; oracle (1+.4+1+.6)/4 = 75.
GSM = _set(
    "gsm8k",
    "multi_attempt",
    [[0.1, 0.5, 1.0], [0.2, 0.0, 0.4], [1.0, 0.3, 0.2], [0.5, 0.6, 0.3]],
)
# OOD, probability, columns stored in the order (c, a, b). In (a, b, c) terms:
# q0 = (1, 0, 0), q1 = (0, 1, 1), q2 = (0, 0, 1) -> a 33.33, b 33.33, c 66.67, oracle 100.
OOD = _set("ood", "probability", [[0, 0.9, 0], [0.4, 0, 0.8], [1.0, 0, 0]], llms=("c", "a", "b"))

ROUTER = [
    np.array([0, 1, 2, 1]),  # mmlu: 1 + 1 + 0 + 1 -> 75
    np.array([2, 2, 0, 1]),  # gsm8k: 1.0 + 0.4 + 1.0 + 0.6 -> 75
    np.array([0, 2, 1]),  # ood: a=1, c=1, b=0 -> 66.67
]

THIRD, TWO_THIRDS = 100 / 3, 200 / 3
# method -> (mmlu, gsm8k, ID avg, ood, OOD avg)
EXPECTED = {
    "a": (50.0, 45.0, 47.5, THIRD, THIRD),
    "b": (50.0, 35.0, 42.5, THIRD, THIRD),
    "c": (25.0, 47.5, 36.25, TWO_THIRDS, TWO_THIRDS),
    "best single LLM (a)": (50.0, 45.0, 47.5, THIRD, THIRD),
    "random": (125 / 3, 42.5, (125 / 3 + 42.5) / 2, 400 / 9, 400 / 9),
    "oracle": (75.0, 75.0, 75.0, 100.0, 100.0),
    "RouterDC": (75.0, 75.0, 75.0, TWO_THIRDS, TWO_THIRDS),
}


def _table(**kw):
    return results_table([MMLU, GSM, OOD], {"RouterDC": ROUTER}, id_tasks={"mmlu", "gsm8k"}, **kw)


def test_hand_computed_table() -> None:
    df = _table()
    assert df.index.name == "method"
    assert list(df.columns) == ["mmlu", "gsm8k", "ID avg", "ood", "OOD avg"]
    assert list(df.index) == list(EXPECTED)
    for method, row in EXPECTED.items():
        assert df.loc[method].tolist() == pytest.approx(row, abs=1e-4), method


def test_column_order_id_first_and_labels() -> None:
    df = results_table(
        [OOD, MMLU, GSM],
        id_tasks=["gsm8k", "mmlu"],
        task_labels={"mmlu": "MMLU", "ood": "PreAlgebra"},
    )
    assert list(df.columns) == ["MMLU", "gsm8k", "ID avg", "PreAlgebra", "OOD avg"]
    # LLM rows follow the first set's column order.
    assert list(df.index[:3]) == ["c", "a", "b"]
    assert df.loc["a", "MMLU"] == pytest.approx(50.0)


def test_no_id_tasks_means_all_id_and_no_ood_column() -> None:
    df = results_table([MMLU, GSM], include_llms=False)
    assert list(df.columns) == ["mmlu", "gsm8k", "ID avg"]
    assert list(df.index) == ["best single LLM (a)", "random", "oracle"]
    # only OOD tasks: no ID avg column, best single ranked on the OOD average.
    df = results_table([MMLU, OOD], id_tasks=[], include_llms=False)
    assert list(df.columns) == ["mmlu", "ood", "OOD avg"]
    # a: (50 + 33.3)/2, b: same, c: (25 + 66.7)/2 = 45.8 -> c
    assert df.index[0] == "best single LLM (c)"


def test_alignment_by_name_gives_same_numbers() -> None:
    perm = (2, 0, 1)
    gsm_permuted = _set(
        "gsm8k", "multi_attempt", GSM.scores[:, perm].tolist(), llms=[LLMS[j] for j in perm]
    )
    a = results_table([MMLU, GSM], id_tasks={"mmlu", "gsm8k"})
    b = results_table([MMLU, gsm_permuted], id_tasks={"mmlu", "gsm8k"})
    assert np.allclose(a.to_numpy(), b.to_numpy())
    assert list(a.index) == list(b.index)


def test_mismatched_llms_raise() -> None:
    other = _set("gsm8k", "multi_attempt", GSM.scores.tolist(), llms=("a", "b", "d"))
    with pytest.raises(DataError):
        results_table([MMLU, other])
    with pytest.raises(DataError):
        results_table([])


def test_router_validation() -> None:
    with pytest.raises(ValueError, match="choice arrays"):
        results_table([MMLU, GSM], {"r": [ROUTER[0]]})
    with pytest.raises(ValueError, match="not an LLM index"):
        results_table([MMLU], {"r": [np.array([0, 1, 3, 0])]})
    with pytest.raises(ValueError, match="shape"):
        results_table([MMLU], {"r": [np.array([0, 1])]})
    with pytest.raises(ValueError, match="clashes"):
        results_table([MMLU], {"oracle": [ROUTER[0]]})


def test_metric_functions() -> None:
    s = np.array([[0.6, 0.0], [0.0, 0.25]])
    assert query_correct(s, np.array([0, 0]), "probability").tolist() == [1.0, 0.0]
    assert query_correct(s, np.array([0, 1]), "multi_attempt").tolist() == [0.6, 0.25]
    assert accuracy(s, np.array([1, 1]), "multi_attempt") == pytest.approx(12.5)
    assert random_accuracy(s, "probability") == pytest.approx(50.0)
    assert oracle_accuracy(s, "multi_attempt") == pytest.approx(42.5)
    with pytest.raises(ValueError, match="metric"):
        query_correct(s, np.array([0, 0]), "exact")
    with pytest.raises(ValueError, match="integer"):
        query_correct(s, np.array([0.0, 1.0]), "probability")
    with pytest.raises(ValueError):
        query_correct(s[0], np.array([0]), "probability")
    with pytest.raises(ValueError, match="no queries"):
        accuracy(np.zeros((0, 2)), np.zeros(0, dtype=int), "probability")


def test_markdown_and_json(tmp_path) -> None:
    df = _table()
    md = to_markdown(df, digits=2)
    lines = md.strip().split("\n")
    assert lines[0] == "| method | mmlu | gsm8k | ID avg | ood | OOD avg |"
    assert lines[1].count("|") == 7 and "---:" in lines[1]
    assert len(lines) == 2 + len(EXPECTED)
    assert lines[2] == "| a | 50.00 | 45.00 | 47.50 | 33.33 | 33.33 |"
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)

    js = to_json(df)
    assert js["columns"] == list(df.columns)
    assert list(js["rows"]) == list(EXPECTED)
    assert js["rows"]["oracle"]["OOD avg"] == pytest.approx(100.0)
    json.dumps(js)  # serialisable

    pj, pm = tmp_path / "out" / "r.json", tmp_path / "out" / "r.md"
    save_results(df, pj, pm)
    assert json.loads(pj.read_text()) == json.loads(json.dumps(js))
    assert pm.read_text() == md
