"""How much of RouterBench's cost curve is task identification: the per-task router against RouterDC.

On RouterBench's three tasks (ARC-Challenge, MBPP, Winogrande), for the held-out 20% of the training
rows (``val``: everything fitted on the other 80%) and for the 945 test rows (``test``: fitted on all
training rows), the AIQ and the share of GPT-4's cost at which each method first reaches GPT-4's
quality, every method swept over ``--n`` cost weights (``argmax_t s_t - lambda * c_t``, the router's
normalised costs):

* ``router``: the RouterDC router, s = sim + b;
* ``task``: the per-task router, s = the query's task's mean value per LLM on the training rows
  (:class:`routerdc.evaluate.baselines.TaskRouter`; the task given);
* ``task + a * router``: s = task means + a * (sim + b), for each ``--weights`` a; the a with the best
  ``val`` AIQ is the one a user would pick;
* ``task, hindsight``: each task's means taken from the evaluated rows themselves (what no router can
  know; the ceiling of choosing per task).

    python scripts/routerbench_task_study.py [--router DIR] [--n 201]
        [--output results/routerbench_task_study.json] [--markdown results/routerbench_task_study.md]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from routerbench_cost_curve import GPT4, TEST_FILES, TRAIN_FILES, _load  # noqa: E402

WEIGHTS = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def evaluate(router: Any, train_sets: Sequence[Any], test_sets: Sequence[Any], n: int,
             weights: Sequence[float]) -> dict[str, dict[str, float | None]]:
    """``method -> {"AIQ", "gpt4_share"}`` on ``test_sets``, everything fitted on ``train_sets``."""
    from routerdc.evaluate.cost_curve import cost_to_match, point
    from routerdc.evaluate.cost_sweep import cost_weights, pooled, sweep_scores
    from routerdc.evaluate.evaluator import task_scores
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.routing import similarities

    llms = router.config.llm_names
    values, qcost = pooled(test_sets, llms)
    totals = [point(values, qcost, np.full(len(values), t))[0] for t in range(len(llms))]
    gpt4 = llms.index(GPT4)
    emb = np.concatenate([router_embeddings(router, s.queries, key=embedding_key(router)) for s in test_sets])
    sims = similarities(emb, router.keys, router.config.similarity) + np.asarray(router.config.llm_bias or 0.0,
                                                                                 dtype=np.float32)

    def task_means(sets: Sequence[Any]) -> np.ndarray:
        return np.concatenate(task_scores(sets, test_sets))

    task = task_means(train_sets)
    methods = {"router": sims, "task": task, **{f"task + {a:g} * router": task + a * sims for a in weights},
               "task, hindsight": task_means(test_sets)}
    out = {}
    for label, scores in methods.items():
        curve = sweep_scores(scores, router.config.llm_cost, cost_weights(scores, router.config.llm_cost, n),
                             values, qcost, label)
        match = cost_to_match(curve.points, float(values[:, gpt4].mean()))
        out[label] = {"AIQ": curve.aiq(min(totals), max(totals)),
                      "gpt4_share": None if match is None else match / totals[gpt4]}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.io import write_results
    from routerdc.inference import load_router
    from routerdc.train.trainer import _split_val

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--router", default="checkpoints/routerdc-routerbench")
    p.add_argument("--n", type=int, default=201, help="cost weights per sweep (default: 201)")
    p.add_argument("--weights", type=float, nargs="+", default=list(WEIGHTS), help="the a of task + a * router")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", default=str(ROOT / "results" / "routerbench_task_study.json"))
    p.add_argument("--markdown", default=str(ROOT / "results" / "routerbench_task_study.md"))
    a = p.parse_args(argv)
    router = load_router(a.router, "torch")
    llms = router.config.llm_names
    train = [s.align(llms) for s in _load(TRAIN_FILES, a.data_dir)]
    fit80, val = _split_val(train, 0.2, 0)  # the trainer's --select-by val split (seed 0)
    test = [s.align(llms) for s in _load(TEST_FILES, a.data_dir)]
    res = {"val": evaluate(router, [s.align(llms) for s in fit80], [s.align(llms) for s in val], a.n, a.weights),
           "test": evaluate(router, train, test, a.n, a.weights)}
    mixes = [m for m in res["val"] if m.startswith("task + ")]
    chosen = max(mixes, key=lambda m: res["val"][m]["AIQ"])  # type: ignore[arg-type, return-value]
    command = "python scripts/routerbench_task_study.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))

    def cell(r: dict[str, Any]) -> str:
        share = "–" if r["gpt4_share"] is None else f"{100 * r['gpt4_share']:.0f}%"
        return f"{r['AIQ']:.4f} | {share}"

    lines = [f"Command: `{command}`", "",
             f"Router `{Path(a.router).name}`, {a.n} cost weights per method; val: the held-out 20% of the training "
             f"rows (fitted on the other 80%); test: the 945 test rows (fitted on all training rows). "
             f"The mix chosen on val: **{chosen}**.", "",
             "| method | val AIQ | val: GPT-4's quality at | test AIQ | test: GPT-4's quality at |",
             "|---|---|---|---|---|",
             *[f"| {m} | {cell(res['val'][m])} | {cell(res['test'][m])} |" for m in res["test"]]]
    md = "\n".join(lines) + "\n"
    record = {"command": command, "router": a.router, "n": a.n, "chosen_on_val": chosen, "results": res}
    write_results(record, a.output, md, a.markdown)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
