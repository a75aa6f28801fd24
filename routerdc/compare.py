"""A router against the references and baselines, on the same test sets: the results table.

Rows: every LLM, the best single LLM, random, the oracle, the k-NN and MLP (ZOOTER-style)
baselines over the *untrained* encoder's embeddings, and the routers given.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .baselines import KNNRouter, MLPRouter
from .data import ScoreSet, task_label
from .evaluate import results_table
from .model import RouterDC


def baseline_choices(
    encoder: RouterDC, train_sets: Sequence[ScoreSet], test_sets: Sequence[ScoreSet], *,
    k: int = 10, seed: int = 0,
) -> dict[str, list[np.ndarray]]:
    """Choices of the k-NN and MLP baselines trained on ``train_sets``.

    ``encoder`` embeds the queries (use an untrained router so that the baselines share the
    encoder but not RouterDC's training).
    """
    llms = test_sets[0].llms
    train_sets = [s.align(llms) for s in train_sets]
    x_train = encoder.embed_texts([q for s in train_sets for q in s.queries], project=False)
    y_train = np.concatenate([s.scores for s in train_sets])
    test_emb = [encoder.embed_texts(s.queries, project=False) for s in test_sets]
    knn = KNNRouter(k=k).fit(x_train, y_train)
    mlp = MLPRouter(seed=seed).fit(x_train, y_train)
    return {
        f"k-NN router (k={k})": [knn.route(e) for e in test_emb],
        "MLP router (ZOOTER-style KL)": [mlp.route(e) for e in test_emb],
    }


def router_choices(router: RouterDC, test_sets: Sequence[ScoreSet]) -> list[np.ndarray]:
    """The router's chosen LLM index per query, aligned to ``test_sets``' column order."""
    out = []
    for s in test_sets:
        routing = router.route(s.queries)
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
