"""The cost curve of RouterBench routers on RouterBench's three test sets (945 rows with every
score): AIQ, the cost at which each first matches the best single LLM, GPT-4's quality against its
cost, and each curve's points, against the zero router, the oracle and k-NN.

    python scripts/routerbench_cost_curve.py [--router LABEL=DIR ...] [--n 41]
        [--output results/routerbench_cost_curve.json] [--markdown results/routerbench_cost_curve.md]

Every router is swept over ``--n`` cost weights lambda (``argmax_t sim + b_t - lambda * c_t``,
:mod:`routerdc.cost_sweep`); k-NN (k=10, the untrained encoder's neighbours among the training
queries) over the same number, and the per-task baseline (each test query's task given, its
training rows' mean value per LLM minus lambda * c_t) likewise. Nothing here is fitted on the test rows.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEST_FILES = tuple(f"routerbench/routerbench_zs/{t}_test.csv" for t in ("arc_challenge", "mbpp", "winograde"))
# The router's training files (the same queries as routerbench_zs/*_train.csv, with cluster ids); k-NN is fitted on them.
TRAIN_FILES = tuple(f"routerbench/routerbench_cluster/{t}_train.csv" for t in ("arc_challenge", "mbpp", "winograde"))
DEFAULT_ROUTER = "RouterDC (routerdc-routerbench)=checkpoints/routerdc-routerbench"
GPT4 = "gpt-4-1106-preview"


def _load(files: Sequence[str], data_dir: str | None) -> list[Any]:
    from routerdc.data import load_many, resolve_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without every score are dropped, as everywhere
        return load_many([resolve_file(f, data_dir) for f in files], missing="drop")


def knn_scores(config: Any, train_sets: Sequence[Any], test_sets: Sequence[Any], k: int = 10) -> list[np.ndarray]:
    """k-NN's predicted scores per test set: the mean scores of the ``k`` nearest training queries
    under the untrained encoder with the router's pooling and max_length, as ``evaluate --baselines`` does."""
    from routerdc.evaluate.baselines import KNNRouter
    from routerdc.inference.embed_cache import cached_embeddings
    from routerdc.model.router import RouterDC

    llms = config.llm_names
    untrained = RouterDC.build(list(llms), encoder=config.encoder, pooling=config.pooling, max_length=config.max_length)
    # The pretrained encoder's cache key (a frozen-encoder router's embeddings are the same vectors).
    key = f"{config.encoder}|pool={config.pooling}|max_length={config.max_length}"
    key = key if config.normalization == "none" else f"{key}|norm={config.normalization}"
    tr = [s.align(llms) for s in train_sets]
    emb = np.concatenate([cached_embeddings(untrained, s.queries, key=key) for s in tr])  # per file: cache hits
    model = KNNRouter(k=k).fit(emb, np.concatenate([s.scores for s in tr]))
    return [model.predict_scores(cached_embeddings(untrained, s.queries, key=key)) for s in test_sets]


def report(result: Any, labels: Sequence[str]) -> dict[str, Any]:
    """The sweep's record plus, per curve, GPT-4's quality: the cost at which the curve reaches it."""
    from routerdc.evaluate.cost_curve import cost_to_match

    out = result.to_dict()
    gpt4_cost, gpt4_quality = result.llm_points[GPT4]
    out["gpt4"] = {"llm": GPT4, "total_cost": gpt4_cost, "quality": gpt4_quality, "curves": {}}
    for c in result.curves:
        match = cost_to_match(c.points, gpt4_quality)
        out["gpt4"]["curves"][c.label] = {"cost_to_match": match,
                                          "share_of_its_cost": None if match is None else match / gpt4_cost}
    out["routers"] = list(labels)
    return out


def to_markdown(rec: dict[str, Any], command: str) -> str:
    n = rec["n_queries"]
    where = (f"RouterBench test sets (ARC-Challenge, MBPP, Winogrande; {n} queries with every score)" if rec["on"] == "test"
             else f"the held-out 20% of RouterBench's training files ({n} queries; k-NN fitted on the other 80%)")
    best = rec["best_single_llm"]
    lo, hi = rec["fleet_cost_range"]
    g = rec["gpt4"]
    lines = [f"Command: `{command}`", "",
             f"{where}. Fleet cost range "
             f"${lo:.3f} to ${hi:.3f} (total over these queries); best single LLM `{best['llm']}`: quality "
             f"{best['quality']:.3f} at ${best['total_cost']:.3f}.", "",
             "| method | AIQ | best quality | cost to match the best LLM | share of its cost | cost to match GPT-4 "
             "| share of GPT-4's cost |", "|---|---|---|---|---|---|---|"]
    for r in rec["summary"]:
        m = g["curves"].get(r["method"])
        if m is None and r["method"].startswith("zero router"):
            m = {"cost_to_match": best["total_cost"] if best["llm"] == g["llm"] else None, "share_of_its_cost": 1.0}
        cells = [r["method"], f"{r['AIQ']:.4f}", f"{r['best quality']:.3f}",
                 "–" if r["cost to match the best LLM"] is None else f"${r['cost to match the best LLM']:.3f}",
                 "–" if r["share of its cost"] is None else f"{100 * r['share of its cost']:.0f}%",
                 "–" if not m or m["cost_to_match"] is None else f"${m['cost_to_match']:.3f}",
                 "–" if not m or m["share_of_its_cost"] is None else f"{100 * m['share_of_its_cost']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Single LLMs:", "", "| LLM | total cost | quality |", "|---|---|---|",
              *[f"| `{n}` | ${v['total_cost']:.3f} | {v['quality']:.3f} |"
                for n, v in sorted(rec["single_llms"].items(), key=lambda kv: kv[1]["total_cost"])]]
    for c in rec["curves"]:
        if c["label"] not in rec["routers"]:
            continue
        from routerdc.evaluate.cost_curve import upper_hull

        hull = upper_hull(np.array([[p["total_cost"], p["quality"]] for p in c["points"]]))
        lines += ["", f"Cost curve of {c['label']} (the upper convex hull of its points over lambda):", "",
                  "| total cost | quality |", "|---|---|", *[f"| ${x:.3f} | {y:.3f} |" for x, y in hull]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.io import write_results
    from routerdc.evaluate.cost_sweep import sweep
    from routerdc.evaluate.evaluator import task_scores
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.inference import load_router

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--router", action="append", metavar="LABEL=DIR", help=f"a router (repeatable; default "
                                                                          f"{DEFAULT_ROUTER!r})")
    p.add_argument("--n", type=int, default=41, help="cost weights per sweep (default: 41)")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--no-knn", action="store_true", help="leave k-NN out")
    p.add_argument("--on", choices=("test", "val"), default="test",
                   help="test: the three test sets; val: the held-out 20%% of the training files that the trainer's "
                        "--select-by val keeps out (seed 0), to choose among variants without the test rows")
    p.add_argument("--output", default=str(ROOT / "results" / "routerbench_cost_curve.json"))
    p.add_argument("--markdown", default=str(ROOT / "results" / "routerbench_cost_curve.md"))
    a = p.parse_args(argv)
    specs = [s.rpartition("=") for s in (a.router or [DEFAULT_ROUTER])]
    if any(not sep or not label or not d for label, sep, d in specs):
        raise SystemExit(f"--router expects LABEL=DIR, got {a.router}")
    train_sets = _load(TRAIN_FILES, a.data_dir)
    if a.on == "val":
        from routerdc.train.trainer import _split_val

        train_sets, test_sets = _split_val(train_sets, 0.2, 0)
    else:
        test_sets = _load(TEST_FILES, a.data_dir)
    given, first = {}, None
    for label, _, d in specs:
        r = load_router(d, "torch")
        first = first or r
        given[label] = (r.config, r.keys, [router_embeddings(r, s.queries, key=embedding_key(r)) for s in test_sets], r.bank)
    llms = first.config.llm_names
    test_sets = [s.align(llms) for s in test_sets]
    knn = None if a.no_knn else knn_scores(first.config, train_sets, test_sets)
    result = sweep(test_sets, given, n=a.n, knn_scores=knn,
                   task_scores=task_scores([s.align(llms) for s in train_sets], test_sets))
    rec = report(result, [label for label, _, _ in specs])
    command = "python scripts/routerbench_cost_curve.py" + "".join(f" {x}" for x in (argv if argv is not None
                                                                                     else sys.argv[1:]))
    rec["command"] = command
    rec["on"], rec["n_queries"] = a.on, sum(len(s) for s in test_sets)
    md = to_markdown(rec, command)
    write_results(rec, a.output, md, a.markdown)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
