"""Cost curves from per-LLM calibrated correctness estimates P_t(x) ~ P(LLM t answers x correctly),
routed by ``argmax_t P_t(x) - lambda * c_t``, against the shipped rule ``argmax_t sim_t + b_t - lambda * c_t``.

    python scripts/routerbench_calibrated_cost.py [--router DIR] [--n 101]
        [--output results/routerbench_calibrated_cost.json] [--markdown results/routerbench_calibrated_cost.md]

Every estimator is fitted only on the rows the router trained on: the 80% of RouterBench's three
training files that the trainer keeps after ``_split_val(sets, 0.2, seed=0)`` (the held-out 20%,
"val", is the selection criterion; the 945 test rows are only read). The estimators:

* ``platt``: per LLM, a logistic regression of the LLM's 0/1 value on its own similarity sim_t (Platt scaling);
* ``logreg11``: per LLM, an L2 logistic regression on all 11 similarities, C chosen per LLM by
  5-fold cross-validation (log-loss) on the training 80%;
* ``knn``: per LLM, the mean value of the k nearest training queries (cosine, the router's frozen
  embeddings), k chosen by leave-one-out Brier score on the training 80%.

Each is swept with normalised costs (c_t in [0, 1], lambda grid of
:func:`routerdc.evaluate.cost_sweep.cost_weights`) and with raw dollar costs (lambda in dollars of
expected cost per query per unit of P; 0 and a geometric grid up to the lambda that sends every query
to the cheapest LLM). The rule's costs are the training 80%'s mean recorded costs (the shipped rule
keeps the folder's ``llm_cost``). AIQ, hulls and ``cost_to_match`` come from
:mod:`routerdc.evaluate.cost_curve`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from routerbench_cost_curve import GPT4, TEST_FILES, TRAIN_FILES, _load  # noqa: E402

DEFAULT_ROUTER = "checkpoints/routerdc-routerbench"
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)
K_GRID = (5, 10, 20, 40, 80, 160)


# ---------------------------------------------------------------------------------------- fitting
def _binary(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows and labels for a logistic fit: 0/1 labels as they are; a soft label y in (0, 1) becomes
    two rows, label 1 with weight y and label 0 with weight 1 - y."""
    y = np.asarray(y, dtype=np.float64)
    if np.all((y == 0) | (y == 1)):
        return X, y.astype(int), np.ones(len(y))
    return (np.concatenate([X, X]), np.concatenate([np.ones(len(y), int), np.zeros(len(y), int)]),
            np.concatenate([y, 1.0 - y]))


def _fit_lr(X: np.ndarray, y: np.ndarray, C: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    Xb, yb, w = _binary(X, y)
    if len(np.unique(yb)) < 2:  # an LLM always (never) right on the training rows: a constant
        return float(yb[0])
    return LogisticRegression(C=C, max_iter=2000).fit(Xb, yb, sample_weight=w)


def _predict(model: Any, X: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(X), model)
    return model.predict_proba(X)[:, 1]


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


class Platt:
    """Per LLM t: P_t = sigmoid(a_t * sim_t + d_t), nearly unregularised (C = 1e4)."""

    name = "Platt per LLM (sim_t)"

    def fit(self, sims: np.ndarray, values: np.ndarray, emb: np.ndarray) -> "Platt":
        self.models = [_fit_lr(sims[:, [t]], values[:, t], 1e4) for t in range(values.shape[1])]
        self.info = {"a": [None if isinstance(m, float) else float(m.coef_[0, 0]) for m in self.models],
                     "d": [None if isinstance(m, float) else float(m.intercept_[0]) for m in self.models]}
        return self

    def predict(self, sims: np.ndarray, emb: np.ndarray) -> np.ndarray:
        return np.stack([_predict(m, sims[:, [t]]) for t, m in enumerate(self.models)], axis=1)


class LogReg11:
    """Per LLM t: L2 logistic regression on all similarities (standardised), C by 5-fold CV log-loss."""

    name = "logistic per LLM (all 11 sims, C by CV)"

    def fit(self, sims: np.ndarray, values: np.ndarray, emb: np.ndarray) -> "LogReg11":
        from sklearn.model_selection import KFold

        self.mu, self.sd = sims.mean(0), sims.std(0) + 1e-12
        X = (sims - self.mu) / self.sd
        folds = list(KFold(5, shuffle=True, random_state=0).split(X))
        self.models, self.C, self.cv = [], [], []
        for t in range(values.shape[1]):
            y = values[:, t]
            losses = []
            for C in C_GRID:
                held = np.zeros(len(y))
                for tr, te in folds:
                    held[te] = _predict(_fit_lr(X[tr], y[tr], C), X[te])
                losses.append(_log_loss(held, y))
            C = C_GRID[int(np.argmin(losses))]
            self.C.append(C)
            self.cv.append({str(c): round(v, 5) for c, v in zip(C_GRID, losses)})
            self.models.append(_fit_lr(X, y, C))
        self.info = {"C": self.C, "cv_log_loss": self.cv}
        return self

    def predict(self, sims: np.ndarray, emb: np.ndarray) -> np.ndarray:
        X = (sims - self.mu) / self.sd
        return np.stack([_predict(m, X) for m in self.models], axis=1)


class KNN:
    """Mean value of the k nearest training queries (cosine), k by leave-one-out Brier score."""

    name = "k-NN correctness (k by LOO)"

    def fit(self, sims: np.ndarray, values: np.ndarray, emb: np.ndarray) -> "KNN":
        from sklearn.neighbors import NearestNeighbors

        self.nn = NearestNeighbors(n_neighbors=max(K_GRID) + 1, metric="cosine").fit(emb)
        self.values = values
        idx = self.nn.kneighbors(emb, return_distance=False)
        # Leave one out: drop each row's own index (not a duplicate query's, which stays a neighbour).
        own = idx == np.arange(len(emb))[:, None]
        loo = np.stack([r[~o][:max(K_GRID)] if o.any() else r[:max(K_GRID)] for r, o in zip(idx, own)])
        self.brier = {}
        for k in K_GRID:
            pred = values[loo[:, :k]].mean(axis=1)
            self.brier[k] = float(np.mean((pred - values) ** 2))
        self.k = min(self.brier, key=self.brier.get)
        self.info = {"k": self.k, "loo_brier": {str(k): round(v, 5) for k, v in self.brier.items()}}
        return self

    def predict(self, sims: np.ndarray, emb: np.ndarray) -> np.ndarray:
        idx = self.nn.kneighbors(emb, n_neighbors=self.k, return_distance=False)
        return self.values[idx].mean(axis=1)


# ---------------------------------------------------------------------------------------- sweeping
def dollar_weights(scores: np.ndarray, costs: np.ndarray, n: int) -> np.ndarray:
    """``n`` lambdas in dollars: 0, then geometric from 1e-3 of the top up to 1.01 x the largest
    score gap over the smallest positive cost gap to the cheapest LLM (every query to the cheapest)."""
    cheapest = int(np.argmin(costs))
    gap = float(np.max(scores - scores[:, [cheapest]]))
    dc = costs - costs[cheapest]
    top = 1.01 * gap / float(dc[dc > 0].min())
    return np.concatenate([[0.0], np.geomspace(top * 1e-3, top, n - 1)])


def sweep_dollars(scores: np.ndarray, costs: np.ndarray, lambdas: Sequence[float], values: np.ndarray,
                  qcost: np.ndarray, label: str) -> Any:
    from routerdc.evaluate.cost_curve import CostCurve, point

    pts = [point(values, qcost, np.argmax(scores - lam * costs[None, :], axis=1)) for lam in lambdas]
    return CostCurve(label, np.asarray(pts), tuple(float(x) for x in lambdas))


def norm_choices(scores: np.ndarray, costs: Sequence[float], lambdas: Sequence[float]) -> np.ndarray:
    """``(L, n)`` choices of :func:`~routerdc.evaluate.cost_sweep.sweep_scores` (the same expression), for the bootstrap."""
    from routerdc.routing import normalized_costs

    c = normalized_costs(costs)
    return np.stack([np.argmax(scores - np.float32(lam) * c, axis=1) for lam in lambdas])


def bootstrap_aiq_diff(ch_a: np.ndarray, ch_b: np.ndarray, values: np.ndarray, qcost: np.ndarray,
                       B: int, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over queries of AIQ(a) - AIQ(b): rows resampled, each lambda's choice per row kept,
    the fleet's cost range recomputed from the single LLMs on every resample."""
    from routerdc.evaluate.cost_curve import aiq

    rng = np.random.default_rng(seed)
    n = len(values)
    diffs = []
    for _ in range(B):
        i = rng.integers(0, n, n)
        v, q = values[i], qcost[i]
        tot = q.sum(axis=0)
        out = []
        for ch in (ch_a, ch_b):
            c = ch[:, i]
            pts = np.stack([np.take_along_axis(q, c.T, 1).sum(0), np.take_along_axis(v, c.T, 1).mean(0)], axis=1)
            out.append(aiq(pts, float(tot.min()), float(tot.max())))
        diffs.append(out[0] - out[1])
    d = np.asarray(diffs)
    return {"mean": round(float(d.mean()), 4), "sd": round(float(d.std(ddof=1)), 4),
            "ci95": [round(float(np.quantile(d, 0.025)), 4), round(float(np.quantile(d, 0.975)), 4)],
            "p_le_0": round(float(np.mean(d <= 0)), 3), "B": B}


def evaluate(curves: Sequence[Any], values: np.ndarray, qcost: np.ndarray, llms: Sequence[str]) -> dict[str, Any]:
    """AIQ, best quality and GPT-4 match per curve on one evaluation set (the fleet's range from its single LLMs)."""
    from routerdc.evaluate.cost_curve import cost_to_match, point
    from routerdc.evaluate.cost_sweep import SweepResult

    llm_points = {name: point(values, qcost, np.full(len(values), t)) for t, name in enumerate(llms)}
    totals = [c for c, _ in llm_points.values()]
    res = SweepResult(tuple(curves), llm_points, float(min(totals)), float(max(totals)))
    g_cost, g_q = llm_points[GPT4]
    rows = {}
    for r, c in zip(res.summary(), (None, *curves)):
        m = cost_to_match(np.asarray(list(llm_points.values())) if c is None else c.points, g_q)
        rows[r["method"]] = {"AIQ": r["AIQ"], "best_quality": r["best quality"],
                             "gpt4_cost_to_match": None if m is None else round(m, 4),
                             "gpt4_share": None if m is None else round(m / g_cost, 3),
                             "n_points": None if c is None else len(c.points)}
    return {"n_queries": int(len(values)), "fleet_cost_range": [res.c_min, res.c_max],
            "gpt4": {"total_cost": g_cost, "quality": g_q}, "single_llms": res.to_dict()["single_llms"],
            "methods": rows, "curves": {c.label: c.hull().tolist() for c in curves}}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.io import write_results
    from routerdc.evaluate.cost_curve import mean_costs, point
    from routerdc.evaluate.cost_sweep import cost_weights, pooled, sweep_scores
    from routerdc.inference import load_router
    from routerdc.inference.embed_cache import embedding_key, router_embeddings
    from routerdc.evaluate.metrics import query_values
    from routerdc.routing import similarities
    from routerdc.train.trainer import _split_val

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--router", default=DEFAULT_ROUTER, help=f"router folder (default {DEFAULT_ROUTER})")
    p.add_argument("--n", type=int, default=101, help="cost weights per sweep (default: 101)")
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples (default: 1000)")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", default=str(ROOT / "results" / "routerbench_calibrated_cost.json"))
    p.add_argument("--markdown", default=str(ROOT / "results" / "routerbench_calibrated_cost.md"))
    a = p.parse_args(argv)
    command = "python scripts/routerbench_calibrated_cost.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))

    r = load_router(a.router, "torch")
    cfg, keys = r.config, r.keys
    llms = list(cfg.llm_names)
    fit_sets, val_sets = _split_val(_load(TRAIN_FILES, a.data_dir), 0.2, 0)  # as the trainer (seed 0)
    test_sets = _load(TEST_FILES, a.data_dir)
    fit_sets, val_sets, test_sets = ([s.align(llms) for s in ss] for ss in (fit_sets, val_sets, test_sets))
    key = embedding_key(r)

    def feats(sets: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        embs = [router_embeddings(r, s.queries, key=key) for s in sets]
        return np.concatenate(embs), np.concatenate([similarities(e, keys, cfg.similarity) for e in embs])

    emb_fit, sims_fit = feats(fit_sets)
    sims_fit = sims_fit.astype(np.float64)
    values_fit = np.concatenate([query_values(s.scores, s.metric) for s in fit_sets])
    fit_cost = mean_costs(fit_sets)
    cost_fit = np.asarray([fit_cost[n] for n in llms])
    bias = np.asarray(cfg.llm_bias if cfg.llm_bias else np.zeros(len(llms)), dtype=np.float64)

    estimators = [Platt(), LogReg11(), KNN()]
    for e in estimators:
        e.fit(sims_fit, values_fit, emb_fit)
        print(f"fitted {e.name}: " + json.dumps(e.info)[:300], file=sys.stderr)

    # Calibration on the fitting rows and the held-out rows (Brier, log-loss per estimator): sanity.
    evals: dict[str, Any] = {}
    calib: dict[str, Any] = {}
    norm_rules: dict[str, dict[str, Any]] = {}  # where -> label -> (choices, values, qcost) for the bootstrap
    ship_n = f"shipped: sim + b - lambda c ({a.n} lambdas)"
    for where, sets in (("val", val_sets), ("test", test_sets)):
        emb, sims32 = feats(sets)
        sims = sims32.astype(np.float64)
        values, qcost = pooled(sets, llms)
        # Exactly as cost_sweep.sweep: float32 similarities plus the float32 offsets.
        shipped = sims32 + np.asarray(bias, dtype=np.float32)
        rules = [("shipped: sim + b - lambda c (41 lambdas, as routerbench_cost_curve)", shipped, cfg.llm_cost, 41),
                 (ship_n, shipped, cfg.llm_cost, a.n)]
        curves, dollar = [], {}
        calib[where] = {}
        for e in estimators:
            P = e.predict(sims, emb)
            calib[where][e.name] = {"brier": round(float(np.mean((P - values) ** 2)), 5),
                                    "log_loss": round(_log_loss(P, values), 5),
                                    "argmax_quality": round(float(values[np.arange(len(P)), P.argmax(1)].mean()), 4)}
            rules.append((f"{e.name}: P - lambda c_norm", P.astype(np.float32), tuple(cost_fit), a.n))
            dollar[f"{e.name}: P - lambda $"] = P
        norm_rules[where] = {}
        for label, sc, costs, n in rules:
            lams = cost_weights(sc, costs, n)
            curve = sweep_scores(sc, costs, lams, values, qcost, label)
            ch = norm_choices(sc, costs, lams)
            assert np.allclose(curve.points, [point(values, qcost, c) for c in ch])
            norm_rules[where][label] = ch
            curves.append(curve)
        for label, P in dollar.items():
            curves.append(sweep_dollars(P, cost_fit, dollar_weights(P, cost_fit, a.n), values, qcost, label))
        evals[where] = evaluate(curves, values, qcost, llms)
        evals[where]["_vq"] = (values, qcost)

    labels = list(evals["val"]["methods"])
    candidates = [m for m in labels if not m.startswith("zero router") and "41 lambdas" not in m]
    winner = max(candidates, key=lambda m: evals["val"]["methods"][m]["AIQ"])
    # Paired bootstrap of each c_norm rule's AIQ minus the shipped rule's (same lambda count), per set.
    boot: dict[str, Any] = {}
    for where in ("val", "test"):
        values, qcost = evals[where].pop("_vq")
        boot[where] = {label: bootstrap_aiq_diff(ch, norm_rules[where][ship_n], values, qcost, a.bootstrap)
                       for label, ch in norm_rules[where].items() if label.endswith("c_norm")}
    rec = {"command": command, "router": a.router, "n": a.n, "fit_rows": int(len(values_fit)),
           "soft_labels": bool(np.any((values_fit > 0) & (values_fit < 1))),
           "rule_costs_fit80": dict(zip(llms, cost_fit.tolist())),
           "estimators": {e.name: e.info for e in estimators}, "calibration": calib,
           "winner_by_val_AIQ": winner, "bootstrap_vs_shipped": boot, "val": evals["val"], "test": evals["test"]}
    md = to_markdown(rec)
    write_results(rec, a.output, md, a.markdown)
    print(md)
    return 0


def to_markdown(rec: dict[str, Any]) -> str:
    v, t = rec["val"], rec["test"]
    pct = lambda x: "–" if x is None else f"{100 * x:.0f}%"  # noqa: E731
    lines = [f"Command: `{rec['command']}`", "",
             f"Estimators fitted on the {rec['fit_rows']} training rows the router trained on (80% of the three "
             f"RouterBench training files, `_split_val(..., 0.2, seed=0)`); val = the held-out 20% "
             f"({v['n_queries']} rows, the selection criterion); test = the {t['n_queries']} test rows, read after "
             f"the choice. GPT-4 quality: val {v['gpt4']['quality']:.3f}, test {t['gpt4']['quality']:.3f}. "
             f"\"GPT-4 match\" = share of GPT-4's total cost at which the hull first reaches GPT-4's quality on "
             f"that set (– : never).", "",
             "| rule | AIQ val | AIQ test | best quality val | best quality test | GPT-4 match val | GPT-4 match test |",
             "|---|---|---|---|---|---|---|"]
    for m in v["methods"]:
        a, b = v["methods"][m], t["methods"][m]
        name = f"**{m}**" if m == rec["winner_by_val_AIQ"] else m
        lines.append(f"| {name} | {a['AIQ']:.4f} | {b['AIQ']:.4f} | {a['best_quality']:.3f} | "
                     f"{b['best_quality']:.3f} | {pct(a['gpt4_share'])} | {pct(b['gpt4_share'])} |")
    lines += ["", f"Winner by val AIQ (among all rules at {rec['n']} lambdas): **{rec['winner_by_val_AIQ']}**.", ""]
    lines += ["Paired bootstrap over queries (%d resamples) of AIQ(rule) - AIQ(shipped, %d lambdas):" % (
        next(iter(rec["bootstrap_vs_shipped"]["val"].values()))["B"], rec["n"]), "",
              "| rule | set | mean diff | sd | 95% interval | P(diff <= 0) |", "|---|---|---|---|---|---|"]
    for where in ("val", "test"):
        for m, b in rec["bootstrap_vs_shipped"][where].items():
            lines.append(f"| {m} | {where} | {b['mean']:+.4f} | {b['sd']:.4f} | "
                         f"[{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] | {b['p_le_0']:.3f} |")
    lines += ["", "Calibration of the estimates P_t(x) (mean over rows and LLMs; argmax quality = lambda 0):", "",
              "| estimator | set | Brier | log-loss | argmax quality |", "|---|---|---|---|---|"]
    for where in ("val", "test"):
        for name, c in rec["calibration"][where].items():
            lines.append(f"| {name} | {where} | {c['brier']:.4f} | {c['log_loss']:.4f} | {c['argmax_quality']:.3f} |")
    lines += ["", "Notes: the labels on the fitting rows are " + (
        "partly fractional (soft labels: each row twice, weights y and 1 - y)." if rec["soft_labels"] else
        "all 0/1 (MBPP's pass rates too), so no thresholding or soft labels arise.") +
              " `P - lambda $` is the same family of rules as `P - lambda c_norm`: c_norm = (c - c_min) / span, and "
              "the shift lambda c_min / span is common to every LLM, so lambda_$ = lambda / span makes the same "
              "choices; the two rows can differ only through their lambda grids (here they coincide)."]
    lines += ["", "Fitted hyper-parameters: " + ", ".join(
        f"{n}: {json.dumps({k: x for k, x in info.items() if k in ('C', 'k')})}"
        for n, info in rec["estimators"].items() if any(k in info for k in ("C", "k")))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
