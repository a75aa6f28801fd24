"""How far the task alone, and the task plus the router, go on the paper's test sets (a feasibility
check for issue 16's goals, not a method to ship).

For each router folder, on the 8 paper test sets (the paper's metric):

* ``router``: the router's own rule without its novelty fallback (argmax sim + b);
* ``task``: each query's task given, the LLM best on that task's training rows; an unseen (OOD) task
  gets the training-set average (:class:`routerdc.evaluate.baselines.TaskRouter`);
* ``task + a * router``: argmax of the task's training means + a * (sim + b), for each ``--weights`` a.

The a here is **not** chosen on training data: every a is shown on the test sets, so the best row is
a ceiling of this family for this router (what hindsight could pick), used only to judge whether a
goal is within its reach.

    python scripts/paper_task_study.py [--router DIR ...] [--weights 0.05 0.1 ...]
        [--output results/paper_task_study.json] [--markdown results/paper_task_study.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def study(router: Any, train_sets: Sequence[Any], test_sets: Sequence[Any], id_tasks: Sequence[str],
          weights: Sequence[float]) -> dict[str, dict[str, float]]:
    """``method -> {task: accuracy, "ID avg", "OOD avg"}``."""
    from routerdc.evaluate.evaluator import task_scores
    from routerdc.evaluate.metrics import accuracy
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.routing import similarities

    bias = np.asarray(router.config.llm_bias or 0.0, dtype=np.float32)
    sims = [similarities(router_embeddings(router, s.queries, key=embedding_key(router)), router.keys,
                         router.config.similarity) + bias for s in test_sets]
    means = task_scores(train_sets, test_sets)
    methods = {"router": [None, 1.0], "task": [1.0, 0.0], **{f"task + {a:g} * router": [1.0, a] for a in weights}}
    out = {}
    for label, (w_task, w_router) in methods.items():
        row = {}
        for s, sim, mean in zip(test_sets, sims, means):
            score = sim if w_task is None else w_task * mean + w_router * sim
            row[s.task] = accuracy(s.scores, np.argmax(score, axis=1), s.metric)
        row["ID avg"] = float(np.mean([v for t, v in row.items() if t in id_tasks]))
        row["OOD avg"] = float(np.mean([v for t, v in row.items() if t not in id_tasks and t != "ID avg"]))
        out[label] = row
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.io import write_results
    from routerdc.data import load_score_set, paper_files, task_label
    from routerdc.evaluate.evaluator import default_id_tasks
    from routerdc.inference import load_router

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--router", nargs="+", default=["checkpoints/routerdc-minilm"])
    p.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS), help="the a of task + a * router")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", default=str(ROOT / "results" / "paper_task_study.json"))
    p.add_argument("--markdown", default=str(ROOT / "results" / "paper_task_study.md"))
    a = p.parse_args(argv)
    train_files, test_files = paper_files(a.data_dir)
    command = "python scripts/paper_task_study.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    lines, record = [f"Command: `{command}`", ""], {"command": command, "routers": {}}
    for folder in a.router:
        router = load_router(folder, "torch", data_dir=a.data_dir)
        llms = router.config.llm_names
        id_tasks = default_id_tasks(router.meta.recipe if router.meta else None)
        res = study(router, [load_score_set(f).align(llms) for f in train_files],
                    [load_score_set(f).align(llms) for f in test_files], id_tasks, a.weights)
        record["routers"][folder] = res
        tasks = [t for t in next(iter(res.values())) if t not in ("ID avg", "OOD avg")]
        ids, oods = [t for t in tasks if t in id_tasks], [t for t in tasks if t not in id_tasks]
        cols = [*ids, "ID avg", *oods, "OOD avg"]
        lines += [f"Router `{folder}` (its rule without the novelty fallback; every a shown on the test sets):", "",
                  "| method | " + " | ".join(task_label(c) if c in tasks else c for c in cols) + " |",
                  "|---|" + "---:|" * len(cols),
                  *[f"| {m} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + " |" for m, r in res.items()], ""]
    md = "\n".join(lines)
    write_results(record, a.output, md, a.markdown)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
