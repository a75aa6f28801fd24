"""The paper's results table and its writers: :func:`results_table` (one row per single LLM, the
best single LLM, the exact expectation of a uniformly random router, the per-query oracle, and
one row per router under test; one column per task, in-distribution (ID) tasks first, each group
followed by its plain average), seeds collapsed into mean ± std (:func:`aggregate_seeds`), and the
one markdown and JSON writer (:func:`to_markdown`, :func:`to_json`, :func:`save_results`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import numpy as np
import pandas as pd

from routerdc.data.scoreset import DataError, ScoreSet
from routerdc.evaluate.metrics import BEST_SINGLE, ID_AVG, OOD_AVG, ORACLE, RANDOM, accuracy, llm_accuracies, oracle_accuracy

__all__ = ["PAPER_ROW", "PAPER_ROW_LABEL", "add_paper_row", "aggregate_seeds", "results_table", "save_results",
           "to_json", "to_markdown"]


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


def to_markdown(df: pd.DataFrame, digits: int = 2, spread: pd.DataFrame | None = None) -> str:
    """A GitHub pipe table of ``df`` (index as the first column), numbers to ``digits`` places, blank
    where a value is NaN; with ``spread`` (same labels), ``mean ± std`` where a spread is known.
    The one markdown writer of results: the CLI, the trainer's reports and the cost sweep use it."""
    head = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join(h.replace("|", "\\|") for h in head) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * len(df.columns)) + "|",
    ]
    for name, values in zip(df.index, df.itertuples(index=False, name=None)):
        cells = [str(name).replace("|", "\\|")]
        for col, v in zip(df.columns, values):
            s = spread.at[name, col] if spread is not None and name in spread.index and col in spread.columns else None
            cell = _fmt(v, digits)
            if cell and isinstance(s, (int, float, np.floating)) and not math.isnan(float(s)):
                cell = f"{cell} ± {_fmt(s, digits)}"
            cells.append(cell)
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


# The paper's reported RouterDC row (Table 1 of the paper; cells it does not report are NaN).
PAPER_ROW_LABEL = "RouterDC as reported (paper, mDeBERTa)"
PAPER_ROW = {"MMLU": 61.07, "GSM8K": 70.32, "CMMLU": 51.77, "ARC-C": 58.52, "HumanEval": 51.02,
             "ID avg": 58.54, "OOD avg": 45.85}


def aggregate_seeds(df: pd.DataFrame, groups: Mapping[str, Sequence[str]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collapse the rows of each group (one per seed) into their mean and sample std.

    Returns ``(values, spread)``: ``values`` has one row per group (the mean) in place of its
    members, other rows unchanged; ``spread`` holds the std (ddof=1; 0 for a single member) of
    the aggregated rows and NaN elsewhere.
    """
    rows, spreads, done = [], [], set()
    for label in df.index:
        group = next((g for g, members in groups.items() if label in members), None)
        if group is None:
            rows.append(df.loc[label].rename(label))
            spreads.append(pd.Series(np.nan, index=df.columns, name=label))
        elif group not in done:
            members = df.loc[list(groups[group])]
            rows.append(members.mean().rename(group))
            spreads.append((members.std(ddof=1) if len(members) > 1 else members.iloc[0] * 0).rename(group))
            done.add(group)
    values, spread = pd.DataFrame(rows), pd.DataFrame(spreads)
    values.index.name = spread.index.name = df.index.name
    return values, spread


def add_paper_row(df: pd.DataFrame) -> pd.DataFrame:
    """Append the paper's reported RouterDC row (NaN where the paper gives no number)."""
    row = pd.Series({c: PAPER_ROW.get(str(c), np.nan) for c in df.columns}, name=PAPER_ROW_LABEL)
    return pd.concat([df, row.to_frame().T.astype(float)])
