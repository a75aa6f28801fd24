"""A router against the references and baselines, on the same test sets: the results table.

Rows: every LLM, the best single LLM, random, the oracle, the k-NN and MLP (ZOOTER-style)
baselines over the *untrained* encoder's embeddings, and the routers given.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from routerdc.evaluate.baselines import KNNRouter, MLPRouter
from routerdc.data import ScoreSet, task_label
from routerdc.inference.embed_cache import cached_embeddings
from routerdc.evaluate.metrics import results_table
from routerdc.model.router import RouterDC


def baseline_choices(
    encoder: RouterDC, train_sets: Sequence[ScoreSet], test_sets: Sequence[ScoreSet], *,
    k: int = 10, seed: int = 0, cache_dir: str | None = None,
) -> dict[str, list[np.ndarray]]:
    """Choices of the k-NN and MLP baselines trained on ``train_sets``.

    ``encoder`` embeds the queries (use an untrained router so that the baselines share the
    encoder but not RouterDC's training).
    """
    llms = test_sets[0].llms
    train_sets = [s.align(llms) for s in train_sets]
    x_train = cached_embeddings(encoder, [q for s in train_sets for q in s.queries], cache_dir=cache_dir)
    y_train = np.concatenate([s.scores for s in train_sets])
    test_emb = [cached_embeddings(encoder, s.queries, cache_dir=cache_dir) for s in test_sets]
    knn = KNNRouter(k=k).fit(x_train, y_train)
    mlp = MLPRouter(seed=seed).fit(x_train, y_train)
    return {
        f"k-NN router (k={k})": [knn.route(e) for e in test_emb],
        "MLP router (ZOOTER-style KL)": [mlp.route(e) for e in test_emb],
    }


def router_choices(router: RouterDC, test_sets: Sequence[ScoreSet], *, key: str | None = None,
                   cache_dir: str | None = None) -> list[np.ndarray]:
    """The router's chosen LLM index per query, aligned to ``test_sets``' column order.

    With ``key`` (e.g. :func:`~routerdc.inference.embed_cache.checkpoint_key` of the router's folder) the
    query embeddings are cached on disk, so evaluating the same router again is cheap.
    """
    from routerdc.inference.embed_cache import router_embeddings

    out = []
    for s in test_sets:
        if key is None:
            routing = router.route(s.queries)
        else:
            routing = router.route_embeddings(router_embeddings(router, s.queries, key=key, cache_dir=cache_dir))
        names = [router.config.llm_names[c] for c in routing.choice]
        col = {n: i for i, n in enumerate(test_sets[0].llms)}
        out.append(np.asarray([col[n] for n in names], dtype=np.int64))
    return out


def comparison_table(
    test_sets: Sequence[ScoreSet], routers: Mapping[str, Sequence[np.ndarray]], *,
    id_tasks: Sequence[str] | None = None, include_llms: bool = True,
) -> pd.DataFrame:
    """The results table with task labels (MMLU, GSM8K, ...) as columns."""
    labels = {s.task: task_label(s.task) for s in test_sets}
    return results_table(test_sets, routers, id_tasks=None if id_tasks is None else set(id_tasks),
                         include_llms=include_llms, task_labels=labels)


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


def to_markdown_pm(values: pd.DataFrame, spread: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub table with ``mean ± std`` where a spread is known, blank where a value is NaN."""
    head = ["method", *map(str, values.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in values.index:
        cells = [str(label).replace("|", "\\|")]
        for col in values.columns:
            v = values.at[label, col]
            s = spread.at[label, col] if label in spread.index else np.nan
            if pd.isna(v):
                cells.append("")
            elif pd.isna(s):
                cells.append(f"{v:.{digits}f}")
            else:
                cells.append(f"{v:.{digits}f} ± {s:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
