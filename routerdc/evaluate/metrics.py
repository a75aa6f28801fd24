"""The RouterDC test metric and the paper's results table.

RouterDC (Chen et al., NeurIPS 2024) scores a router by the quality of the LLM it picks for
each test query:

* ``"probability"`` tasks (multiple choice, scored by the normalised probability the LLM puts
  on the correct answer): a query counts 1 when the chosen LLM's score is ``> 0`` (the LLM
  answered correctly), else 0;
* ``"multi_attempt"`` tasks (generation, scored by the fraction of sampled attempts that pass):
  the chosen LLM's score counts as is.

The accuracy of a router on a task is the mean of that per-query value, in percent. The table
(:func:`results_table`) has one row per single LLM, the best single LLM, the exact expectation of
a uniformly random router, the per-query oracle, and one row per router under test; one column
per task, in-distribution (ID) tasks first, each group followed by its plain average.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from routerdc.data.scoreset import METRICS, DataError, ScoreSet

ID_AVG = "ID avg"
OOD_AVG = "OOD avg"
RANDOM = "random"
ORACLE = "oracle"
BEST_SINGLE = "best single LLM"

__all__ = [
    "ID_AVG",
    "OOD_AVG",
    "RANDOM",
    "ORACLE",
    "BEST_SINGLE",
    "query_correct",
    "query_values",
    "accuracy",
    "llm_accuracies",
    "random_accuracy",
    "oracle_accuracy",
    "results_table",
    "to_markdown",
    "to_json",
    "save_results",
]


def _check_scores(scores: np.ndarray, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"scores must be an (n, T) array with T >= 1, got shape {s.shape}")
    return s


def _per_query(s: np.ndarray, metric: str) -> np.ndarray:
    """The per-query value of every LLM: ``(n, T)`` float64 (0/1 for probability tasks)."""
    return (s > 0).astype(np.float64) if metric == "probability" else s


def query_values(scores: np.ndarray, metric: str) -> np.ndarray:
    """The value every LLM would earn on every query, ``(n, T)`` float64: 0/1 for
    ``"probability"`` tasks (score > 0), the score itself for ``"multi_attempt"`` tasks."""
    return _per_query(_check_scores(scores, metric), metric)


def query_correct(scores: np.ndarray, choice: np.ndarray, metric: str) -> np.ndarray:
    """The value of the chosen LLM for each query.

    Args:
        scores: ``(n, T)`` scores, one column per LLM.
        choice: ``(n,)`` integer indices in ``[0, T)``, the LLM chosen for each query.
        metric: ``"probability"`` (1.0 if ``scores[i, choice[i]] > 0`` else 0.0) or
            ``"multi_attempt"`` (``scores[i, choice[i]]`` as is).

    Returns:
        ``(n,)`` float64 array.
    """
    s = _check_scores(scores, metric)
    c = np.asarray(choice)
    if c.ndim != 1 or c.shape[0] != s.shape[0]:
        raise ValueError(f"choice must have shape ({s.shape[0]},), got {c.shape}")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"choice must hold integer LLM indices, got dtype {c.dtype}")
    c = c.astype(np.int64, copy=False)
    if c.size and (c.min() < 0 or c.max() >= s.shape[1]):
        bad = int(np.flatnonzero((c < 0) | (c >= s.shape[1]))[0])
        raise ValueError(
            f"choice[{bad}] = {int(c[bad])} is not an LLM index in [0, {s.shape[1]})"
        )
    picked = s[np.arange(s.shape[0]), c]
    return (picked > 0).astype(np.float64) if metric == "probability" else picked


def accuracy(scores: np.ndarray, choice: np.ndarray, metric: str) -> float:
    """Mean of :func:`query_correct`, in percent (0-100). Raises ValueError on no queries."""
    values = query_correct(scores, choice, metric)
    if values.size == 0:
        raise ValueError("no queries to compute an accuracy over")
    return float(values.mean() * 100.0)


def llm_accuracies(scores: np.ndarray, metric: str) -> np.ndarray:
    """``(T,)`` accuracy in percent of each single LLM (it is chosen for every query)."""
    s = _check_scores(scores, metric)
    if s.shape[0] == 0:
        raise ValueError("no queries to compute an accuracy over")
    return _per_query(s, metric).mean(axis=0) * 100.0


def random_accuracy(scores: np.ndarray, metric: str) -> float:
    """Exact expected accuracy of choosing an LLM uniformly at random per query (percent)."""
    return float(llm_accuracies(scores, metric).mean())


def oracle_accuracy(scores: np.ndarray, metric: str) -> float:
    """Accuracy of the per-query best LLM (percent): any score > 0, or the row maximum."""
    s = _check_scores(scores, metric)
    if s.shape[0] == 0:
        raise ValueError("no queries to compute an accuracy over")
    return float(_per_query(s, metric).max(axis=1).mean() * 100.0)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def results_table(
    sets: Sequence[ScoreSet],
    routers: Mapping[str, Sequence[np.ndarray]] | None = None,
    *,
    id_tasks: Collection[str] | None = None,
    include_llms: bool = True,
    task_labels: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The paper's results table, values in percent.

    Args:
        sets: the test sets, one per task (task names must be distinct). All must hold the same
            LLMs; they are aligned by name to the first set's column order.
        routers: row label -> one choice array per set (in the order of ``sets``); the indices
            refer to the LLMs in the order of ``sets[0].llms``.
        id_tasks: names of the in-distribution tasks; the others are out-of-distribution (OOD).
            ``None``: every task is ID. Names that match no set are ignored.
        include_llms: whether to add one row per single LLM.
        task_labels: task name -> column label (default: the task name).

    Returns:
        DataFrame indexed by ``"method"``: rows = each LLM (optional), ``"best single LLM
        (<name>)"`` (highest ID average, or OOD average when there is no ID task), ``"random"``
        (the exact expectation of a uniform choice), ``"oracle"``, then the routers. Columns =
        the ID tasks, ``"ID avg"``, the OOD tasks, ``"OOD avg"`` (each average column only when
        its group is non-empty; the task columns keep the order of ``sets``).
    """
    if not sets:
        raise DataError("no score sets given")
    routers = dict(routers or {})
    labels = dict(task_labels or {})
    names = [s.task for s in sets]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate task names {dup}")
    llms = sets[0].llms
    aligned = [s.align(llms) for s in sets]  # DataError when the LLM sets differ
    is_id = [id_tasks is None or s.task in id_tasks for s in sets]
    id_idx = [j for j, f in enumerate(is_id) if f]
    ood_idx = [j for j, f in enumerate(is_id) if not f]

    columns: list[str] = []
    order: list[int | str] = []  # set index, or an average column key
    for group, avg in ((id_idx, ID_AVG), (ood_idx, OOD_AVG)):
        if group:
            columns += [labels.get(sets[j].task, sets[j].task) for j in group]
            columns.append(avg)
            order += group
            order.append(avg)
    if len(set(columns)) != len(columns):
        raise ValueError(f"column labels are not distinct: {columns}")

    def row(per_task: list[float]) -> list[float]:
        out: list[float] = []
        for key in order:
            if key == ID_AVG:
                out.append(_mean([per_task[j] for j in id_idx]))
            elif key == OOD_AVG:
                out.append(_mean([per_task[j] for j in ood_idx]))
            else:
                out.append(per_task[int(key)])
        return out

    # (T, n_sets) accuracy of every single LLM on every task.
    single = np.stack([llm_accuracies(s.scores, s.metric) for s in aligned], axis=1)
    rows: dict[str, list[float]] = {}
    if include_llms:
        for t, name in enumerate(llms):
            rows[name] = row(single[t].tolist())
    ranking_group = id_idx if id_idx else ood_idx
    best = int(np.argmax(single[:, ranking_group].mean(axis=1)))  # ties -> first LLM
    reference = {
        f"{BEST_SINGLE} ({llms[best]})": row(single[best].tolist()),
        RANDOM: row(single.mean(axis=0).tolist()),
        ORACLE: row([oracle_accuracy(s.scores, s.metric) for s in aligned]),
    }
    for label, values in reference.items():
        if label in rows:
            raise ValueError(f"an LLM is named {label!r}, like a reference row")
        rows[label] = values

    for label, choices in routers.items():
        if label in rows:
            raise ValueError(f"router label {label!r} clashes with a reference row")
        if len(choices) != len(sets):
            raise ValueError(
                f"router {label!r}: {len(choices)} choice arrays for {len(sets)} score sets"
            )
        per_task = []
        for s, c in zip(aligned, choices):
            try:
                per_task.append(accuracy(s.scores, np.asarray(c), s.metric))
            except ValueError as err:
                raise ValueError(f"router {label!r}, task {s.task!r}: {err}") from None
        rows[label] = row(per_task)

    df = pd.DataFrame.from_dict(rows, orient="index", columns=columns, dtype=np.float64)
    df.index.name = "method"
    return df


def _fmt(value: Any, digits: int) -> str:
    if isinstance(value, (int, float, np.floating, np.integer)):
        v = float(value)
        return "" if math.isnan(v) else f"{v:.{digits}f}"
    return str(value).replace("|", "\\|")


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub pipe table of ``df`` (index as the first column), numbers to ``digits`` places."""
    head = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in head) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(df.columns)) + "|",
    ]
    for name, values in zip(df.index, df.itertuples(index=False, name=None)):
        cells = [str(name).replace("|", "\\|")] + [_fmt(v, digits) for v in values]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_json(df: pd.DataFrame) -> dict[str, Any]:
    """``{"index": name, "columns": [...], "rows": {method: {column: value}}}``; NaN -> None."""

    def clean(v: Any) -> float | None:
        f = float(v)
        return None if math.isnan(f) else f

    return {
        "index": df.index.name or "method",
        "columns": [str(c) for c in df.columns],
        "rows": {
            str(name): {str(c): clean(v) for c, v in zip(df.columns, values)}
            for name, values in zip(df.index, df.itertuples(index=False, name=None))
        },
    }


def save_results(
    df: pd.DataFrame, path_json: str | Path, path_md: str | Path | None = None, digits: int = 2
) -> None:
    """Write :func:`to_json` to ``path_json`` and, if given, :func:`to_markdown` to ``path_md``."""
    pj = Path(path_json)
    pj.parent.mkdir(parents=True, exist_ok=True)
    pj.write_text(json.dumps(to_json(df), indent=2) + "\n", encoding="utf-8")
    if path_md is not None:
        pm = Path(path_md)
        pm.parent.mkdir(parents=True, exist_ok=True)
        pm.write_text(to_markdown(df, digits), encoding="utf-8")
