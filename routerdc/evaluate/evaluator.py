"""The one evaluator: what the CLI's ``evaluate``, the trainer's evaluation and the app's Evaluate
tab all use, so that they agree on the rows they sample, the tasks they count as in-distribution
and the table they show.

* Rows: :func:`sample_rows` keeps at most ``cap`` rows of each set, a seeded random sample in the
  original order (seed 0 unless a caller has its own, as the trainer has its recipe's seed).
* ID tasks: :func:`default_id_tasks`: the tasks the router was trained on (its recipe), else the
  paper's split (:data:`routerdc.data.registry.TASKS`).
* Choices: :func:`router_choices` (a router through the inference layer, embeddings cached when a
  key is given) and :func:`baseline_choices` (k-NN and MLP over the untrained encoder, and each task's
  best LLM on the training data).
* The table: :func:`comparison_table` (task labels as columns) and :func:`split_metrics` (the
  trainer's per-split metrics, from the same per-task accuracies).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from routerdc.data import ScoreSet, task_label
from routerdc.evaluate.metrics import accuracy
from routerdc.evaluate.table import results_table

__all__ = ["TASK_ROUTER_LABEL", "baseline_choices", "comparison_table", "default_id_tasks", "router_choices",
           "sample_rows", "split_metrics", "task_router", "task_scores"]


def sample_rows(sets: Sequence[ScoreSet], cap: int, seed: int = 0) -> list[ScoreSet]:
    """At most ``cap`` rows of each set (0: all): a random sample (one generator seeded by ``seed``
    across the sets), kept in the original order."""
    rng = np.random.default_rng(seed)
    return [s.subset(np.sort(rng.choice(len(s), cap, replace=False))) if cap and len(s) > cap else s
            for s in sets]


def default_id_tasks(recipe: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The in-distribution tasks of a router: its recipe's ``id_tasks`` or the tasks it was trained
    on (``train_tasks``), else the paper's ID split."""
    from routerdc.data.registry import PAPER_ID_TASKS

    recipe = recipe or {}
    tasks = recipe.get("id_tasks") or recipe.get("train_tasks")
    return tuple(tasks) if tasks else PAPER_ID_TASKS


def split_metrics(split: str, sets: Sequence[ScoreSet], choices: Sequence[np.ndarray],
                  id_tasks: Sequence[str]) -> dict[str, float]:
    """``{split}/{task}`` accuracies (%), ``{split}/avg``, and for the test split ``test/id_avg`` and
    ``test/ood_avg`` (each only when its group is non-empty)."""
    accs = {s.task: accuracy(s.scores, np.asarray(c), s.metric) for s, c in zip(sets, choices)}
    out = {f"{split}/{t}": a for t, a in accs.items()}
    out[f"{split}/avg"] = float(np.mean(list(accs.values())))
    if split == "test":
        for name, keep in (("id_avg", True), ("ood_avg", False)):
            vals = [a for t, a in accs.items() if (t in set(id_tasks)) == keep]
            if vals:
                out[f"test/{name}"] = float(np.mean(vals))
    return out


def baseline_choices(
    encoder: Any, train_sets: Sequence[ScoreSet], test_sets: Sequence[ScoreSet], *,
    k: int = 10, seed: int = 0, cache_dir: str | None = None,
) -> dict[str, list[np.ndarray]]:
    """Choices of the k-NN, MLP and per-task baselines trained on ``train_sets``.

    ``encoder`` embeds the queries (use an untrained router so that the baselines share the
    encoder but not RouterDC's training). The per-task baseline (:class:`~routerdc.evaluate.baselines.TaskRouter`)
    is told each test query's task (its file's task name) and needs no embedding.
    """
    from routerdc.evaluate.baselines import KNNRouter, MLPRouter
    from routerdc.inference.embed_cache import cached_embeddings

    llms = test_sets[0].llms
    train_sets = [s.align(llms) for s in train_sets]
    x_train = cached_embeddings(encoder, [q for s in train_sets for q in s.queries], cache_dir=cache_dir)
    y_train = np.concatenate([s.scores for s in train_sets])
    test_emb = [cached_embeddings(encoder, s.queries, cache_dir=cache_dir) for s in test_sets]
    knn = KNNRouter(k=k).fit(x_train, y_train)
    mlp = MLPRouter(seed=seed).fit(x_train, y_train)
    task = task_scores(train_sets, test_sets)
    return {
        f"k-NN router (k={k})": [knn.route(e) for e in test_emb],
        "MLP router (ZOOTER-style KL)": [mlp.route(e) for e in test_emb],
        TASK_ROUTER_LABEL: [np.argmax(t, axis=1) for t in task],
    }


TASK_ROUTER_LABEL = "each task's best LLM on the training data (task given)"


def task_router(train_sets: Sequence[ScoreSet]) -> Any:
    """A :class:`~routerdc.evaluate.baselines.TaskRouter` fitted on ``train_sets`` (all aligned to
    one LLM order), each row valued under its task's test metric."""
    from routerdc.evaluate.baselines import TaskRouter
    from routerdc.evaluate.metrics import query_values

    return TaskRouter().fit([s.task for s in train_sets for _ in range(len(s))],
                            np.concatenate([query_values(s.scores, s.metric) for s in train_sets]))


def task_scores(train_sets: Sequence[ScoreSet], test_sets: Sequence[ScoreSet]) -> list[np.ndarray]:
    """Per test set, ``(n, T)``: every query's task mean per LLM on ``train_sets`` (the per-task
    baseline's scores, :func:`task_router`; the task is the set's)."""
    fitted = task_router(train_sets)
    return [fitted.predict_scores([s.task] * len(s)) for s in test_sets]


def router_choices(router: Any, test_sets: Sequence[ScoreSet], *, key: str | None = None,
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
