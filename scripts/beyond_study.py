"""Beyond the paper (issue 16): post-hoc methods on trained routers, each fitted on training rows only.

    python scripts/beyond_study.py --routers checkpoints/routerdc-minilm runs/cpu-s1 runs/cpu-s2 \
        [--output results/beyond]

For every router (one per seed) the training rows (the recipe's 5 files, all rows) and the paper's 8
test sets are embedded once (through the embedding cache), and then, in numpy:

* ``calibrated``: the router as saved (offsets b_t; the paper's argmax rule plus offsets);
* ``uncalibrated``: without the offsets (the paper's rule);
* ``(b) fallback``: route to the LLM best on the training data when the top-two margin is below m,
  m fitted on the training rows (:mod:`routerdc.evaluate.combine`);
* ``(f) k-NN mix``: ``(1 - a) p + a * kNN value``, a fitted on the training rows (leave-one-out);
* ``(g) novelty fallback``: the LLM best on the training data for a query whose nearest training
  query is less similar than the q-quantile (q = 0.05, fixed a priori) of the training queries' own
  nearest-neighbour similarities;
* ``(c) ensemble``: the mean of the seeds' calibrated probabilities (one row, not per seed);
* ``(d) temperature``: tau fitted on the training rows so that the chosen LLM's probability is the
  probability that it answers correctly; the expected calibration error (ECE) on the test sets at
  the training tau and at the fitted one, against that event and against "it is the best LLM" (no
  choice changes).

Writes ``OUTPUT.json`` and ``OUTPUT.md``: the paper's table with each method as mean ± std over the
seeds, the fitted m / a / tau, and the calibration errors.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def router_scores(folder: str, sets: Sequence[Any], engine: str) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """(router, per set embeddings, per set raw similarities), embeddings cached on disk."""
    from routerdc.inference import load_router
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.routing import similarities

    router = load_router(folder, engine)
    key = embedding_key(router)
    embs = [router_embeddings(router, s.queries, key=key) for s in sets]
    return router, embs, [similarities(e, router.keys, router.config.similarity) for e in embs]


def study(folders: Sequence[str], train_sets: list[Any], test_sets: list[Any], engine: str = "torch",
          k: int = 10, novelty_q: float = 0.05, novelty_bank: int = 0) -> dict[str, Any]:
    from routerdc.evaluate import combine
    from routerdc.evaluate.metrics import best_llm_targets, expected_calibration_error, query_values
    from routerdc.train.temperature import softmax, temperature_fit

    llms = test_sets[0].llms
    train_sets = [s.align(llms) for s in train_sets]
    tr_vals = [query_values(s.scores, s.metric) for s in train_sets]
    te_vals = [query_values(s.scores, s.metric) for s in test_sets]
    choices: dict[str, list[np.ndarray]] = {}
    fitted: dict[str, dict[str, Any]] = {}
    seed_probs: list[list[np.ndarray]] = []
    fb = combine.best_llm(tr_vals)
    for folder in folders:
        t0 = time.perf_counter()
        router, tr_emb, tr_sims = router_scores(folder, train_sets, engine)
        _, te_emb, te_sims = router_scores(folder, test_sets, engine)
        if tuple(router.config.llm_names) != tuple(llms):
            raise SystemExit(f"{folder}: its LLMs {router.config.llm_names} are not the test sets' {llms}")
        name = Path(folder).name
        bias = np.zeros(len(llms)) if router.config.llm_bias is None else np.asarray(router.config.llm_bias)
        tr_s, te_s = [x + bias for x in tr_sims], [x + bias for x in te_sims]
        choices[f"uncalibrated [{name}]"] = [x.argmax(axis=1) for x in te_sims]
        choices[f"calibrated [{name}]"] = [x.argmax(axis=1) for x in te_s]
        # (d) temperature scaling on the training rows ("the routed LLM answers correctly")
        tau0 = router.config.temperature
        tau = temperature_fit(tr_s, train_sets, before=tau0).temperature
        flat_s, flat_v = np.concatenate(te_s), np.concatenate(te_vals)
        flat_b = best_llm_targets(flat_v)
        p0, p1 = softmax(flat_s, tau0), softmax(flat_s, tau)
        cal = {"tau": tau, "test_ece_before": expected_calibration_error(p0, flat_v),
               "test_ece_after": expected_calibration_error(p1, flat_v),
               "test_ece_best_before": expected_calibration_error(p0, flat_b),
               "test_ece_best_after": expected_calibration_error(p1, flat_b),
               "test_mean_top_p_before": float(p0.max(axis=1).mean()),
               "test_mean_top_p_after": float(p1.max(axis=1).mean()),
               "test_routed_right": float(flat_v[np.arange(len(flat_v)), p1.argmax(axis=1)].mean())}
        # (b) confidence fallback
        m = combine.fit_fallback_margin(tr_s, tr_vals, fb)
        choices[f"(b) fallback [{name}]"] = [combine.fallback_choices(x, m, fb) for x in te_s]
        # (f) k-NN mix over this router's own embeddings, leave-one-out on the training rows
        all_tr_emb, all_tr_val = np.concatenate(tr_emb), np.concatenate(tr_vals)
        offsets = np.cumsum([0] + [len(x) for x in tr_emb])
        loo = combine.knn_values(all_tr_emb, all_tr_val, all_tr_emb, k=k, exclude_self=True)
        tr_knn = [loo[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
        tr_p = [softmax(x, tau) for x in tr_s]
        te_p = [softmax(x, tau) for x in te_s]
        a = combine.fit_knn_weight(tr_p, tr_knn, tr_vals)
        te_knn = [combine.knn_values(all_tr_emb, all_tr_val, e, k=k) for e in te_emb]
        choices[f"(f) k-NN mix [{name}]"] = [combine.knn_mix_choices(p, q, a) for p, q in zip(te_p, te_knn)]
        # (g) novelty fallback: far from every training query -> the LLM best on the training data
        # (novelty_bank > 0: only that many training queries, a seeded sample, are kept as the bank)
        bank = all_tr_emb
        if 0 < novelty_bank < len(bank):
            bank = bank[np.sort(np.random.default_rng(0).choice(len(bank), novelty_bank, replace=False))]
        train_nn = combine.nearest_similarity(bank, bank, exclude_self=True)
        r_q = float(np.quantile(train_nn, novelty_q))
        label = f"(g) novelty fallback, q={novelty_q:g}" + (f", bank {len(bank)}" if len(bank) < len(all_tr_emb) else "")
        choices[f"{label} [{name}]"] = [
            combine.novelty_choices(x.argmax(axis=1), combine.nearest_similarity(bank, e), r_q, fb)
            for x, e in zip(te_s, te_emb)]
        seed_probs.append(te_p)
        fitted[name] = {"fallback_llm": llms[fb], "fallback_margin": m, "knn_weight": a, "k": k,
                        "novelty_q": novelty_q, "novelty_threshold": r_q, **cal}
        print(f"{name}: m={m:.4f} a={a:.2f} tau={tau:.4f} ECE {cal['test_ece_before']:.1f}% -> "
              f"{cal['test_ece_after']:.1f}% ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    if len(folders) > 1:
        choices["(c) ensemble of the seeds"] = [combine.ensemble_probs([p[i] for p in seed_probs]).argmax(axis=1)
                                                for i in range(len(test_sets))]
    return {"choices": choices, "fitted": fitted}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.data import load_many, paper_files, resolve_file
    from routerdc.data.registry import PAPER_ID_TASKS
    from routerdc.checkpoint import read_config
    from routerdc.evaluate.evaluator import comparison_table
    from routerdc.evaluate.table import aggregate_seeds, to_json, to_markdown

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--routers", nargs="+", default=[str(ROOT / "checkpoints" / "routerdc-minilm")],
                   help="router folders, one per seed, over the paper's 7 LLMs")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--engine", default="torch", help="inference engine for the embeddings (default: torch fp32)")
    p.add_argument("--k", type=int, default=10, help="neighbours of the k-NN mix")
    p.add_argument("--novelty-bank", type=int, default=0,
                   help="keep only this many training queries (a seeded sample) as the novelty fallback's bank "
                        "(0: all)")
    p.add_argument("--output", default=str(ROOT / "results" / "beyond"))
    a = p.parse_args(argv)

    train_files = read_config(a.routers[0]).get("recipe", {}).get("train_files") or paper_files(a.data_dir)[0]
    train_sets = load_many([resolve_file(f, a.data_dir) for f in train_files])
    test_sets = load_many(paper_files(a.data_dir)[1])
    test_sets = [s.align(test_sets[0].llms) for s in test_sets]
    res = study(a.routers, train_sets, test_sets, a.engine, a.k, novelty_bank=a.novelty_bank)
    df = comparison_table(test_sets, res["choices"], id_tasks=PAPER_ID_TASKS)
    groups: dict[str, list[str]] = {}
    for label in res["choices"]:
        if label.endswith("]"):
            groups.setdefault(label.rsplit(" [", 1)[0] + f" (seeds: {len(a.routers)})", []).append(label)
    values, spread = aggregate_seeds(df, groups)
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = "python scripts/beyond_study.py --routers " + " ".join(a.routers) + (
        f" --novelty-bank {a.novelty_bank}" if a.novelty_bank else "")
    md = [f"Post-hoc methods on the paper's 8 test sets (`{cmd}`), each fitted on the training rows only; "
          "mean ± std over the routers (seeds).", "", to_markdown(values, spread=spread), "",
          "| router | fallback LLM | margin m | k-NN weight a | tau (1 → fitted) | test ECE %, routed LLM right | "
          "test ECE %, best LLM | mean top p | routed LLM right |", "|---|---|---|---|---|---|---|---|---|"]
    for name, f in res["fitted"].items():
        md.append(f"| {name} | {f['fallback_llm'].split('/')[-1]} | {f['fallback_margin']:.4f} | {f['knn_weight']:.2f} | "
                  f"{f['tau']:.4f} | {f['test_ece_before']:.1f} → {f['test_ece_after']:.1f} | "
                  f"{f['test_ece_best_before']:.1f} → {f['test_ece_best_after']:.1f} | "
                  f"{f['test_mean_top_p_before']:.3f} → {f['test_mean_top_p_after']:.3f} | "
                  f"{f['test_routed_right']:.3f} |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "table": to_json(values),
                                                    "std": to_json(spread), "per_seed": to_json(df),
                                                    "fitted": res["fitted"]}, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
