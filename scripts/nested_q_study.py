"""Choose the novelty fallback's quantile q on training data only, by nested leave-one-task-out (issue 16).

    python scripts/nested_q_study.py [--seed 0] [--work runs/nestedq] [--output results/nested_q]

The novelty fallback (:mod:`routerdc.novelty`) sends a query whose nearest training query is below the
q-quantile of the training queries' own nearest-neighbour cosines to the LLM best on the training
data. q = 0.05 was fixed by hand. The goal "never worse than the best single LLM on a task the router
has not seen" can instead choose it, from the training files alone:

* for a router to be trained on the tasks S, each task U in S is held out in turn: a router is trained
  on S \\ {U} and (g) is applied to U's *training* rows at every q of the grid, against the LLM best on
  S \\ {U}'s training rows (what (g) falls back to);
* q* is the smallest q at which (g) is no worse than that LLM on every held-out U (larger q sends more
  queries to the fallback, which costs accuracy on the tasks the router knows, so the smallest one
  that meets the goal is taken). q = 1 (nearly every query falls back) meets it by construction.

Outer level, as ``scripts/loto_study.py``: each of the 5 in-distribution tasks T is left out, q* is
chosen inside the other 4 (4 routers on 3 tasks each), and the router on the 4 is tested on T's test
set with (g) at q*; the router on all 5, with q* from its 5 inner folds (the 4-task routers), is
tested on the 8 test sets (ID: tasks it saw; OOD: PreAlgebra, MBPP, C-EVAL). The recipe is the
frozen-encoder one (``configs/loto_frozen.json``), about a minute per router once the queries are
embedded, so one seed is 16 routers (10 on 3 tasks, 5 on 4, 1 on 5). The bank is a seeded sample of
2,000 of the router's training queries, as shipped. Writes ``OUTPUT.json`` and ``OUTPUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
BANK = 2000


def g_accuracies(folder: Path, seen: list[Any], evals: list[Any], grid: Sequence[float]) -> dict[str, Any]:
    """The router in ``folder`` (trained on ``seen``) with the novelty fallback at each q of ``grid``:
    accuracy on each of ``evals`` per q, the fallback LLM and its accuracy on each."""
    from beyond_study import router_scores
    from loto_study import _acc
    from routerdc.evaluate import combine
    from routerdc.evaluate.metrics import query_values

    llms = evals[0].llms
    seen = [s.align(llms) for s in seen]
    router, tr_emb, _ = router_scores(str(folder), seen, "torch")
    _, ev_emb, ev_sims = router_scores(str(folder), evals, "torch")
    bias = np.zeros(len(llms)) if router.config.llm_bias is None else np.asarray(router.config.llm_bias)
    fb = combine.best_llm([query_values(s.scores, s.metric) for s in seen])
    bank = np.concatenate(tr_emb)
    if len(bank) > BANK:
        bank = bank[np.sort(np.random.default_rng(0).choice(len(bank), BANK, replace=False))]
    train_nn = combine.nearest_similarity(bank, bank, exclude_self=True)
    near = [combine.nearest_similarity(bank, e) for e in ev_emb]
    out: dict[str, Any] = {"fallback_llm": llms[fb], "tasks": {}}
    for s, x, nn in zip(evals, ev_sims, near):
        choice = (x + bias).argmax(axis=1)
        out["tasks"][s.task] = {
            "fallback": _acc(s, np.full(len(s), fb)),
            "router": _acc(s, choice),
            "g": {f"{q:g}": _acc(s, combine.novelty_choices(choice, nn, float(np.quantile(train_nn, q)), fb))
                  for q in grid}}
    return out


def choose_q(inner: dict[str, dict[str, Any]], grid: Sequence[float]) -> float:
    """The smallest q at which (g) is no worse than the fallback LLM on every held-out task of ``inner``."""
    for q in grid:
        if all(r["tasks"][u]["g"][f"{q:g}"] >= r["tasks"][u]["fallback"] - 1e-9 for u, r in inner.items()):
            return float(q)
    return float(grid[-1])


def main(argv: Sequence[str] | None = None) -> int:
    from loto_study import train_once
    from routerdc.data import load_many, paper_files
    from routerdc.data.registry import PAPER_ID_TASKS, PAPER_OOD_TASKS, task_label
    from routerdc.train.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "loto_frozen.json"))
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=str(ROOT / "runs" / "nestedq"))
    p.add_argument("--output", default=str(ROOT / "results" / "nested_q"))
    a = p.parse_args(argv)

    cfg = TrainConfig.from_json(a.config)
    train_files, test_files = paper_files(a.data_dir)
    train = {s.task: s for s in load_many(train_files)}
    llms = next(iter(train.values())).llms
    train = {t: s.align(llms) for t, s in train.items()}
    tests = {s.task: s.align(llms) for s in load_many(test_files)}
    work = Path(a.work)

    def router(tasks: Sequence[str]) -> Path:
        kept = sorted(tasks, key=PAPER_ID_TASKS.index)
        name = "on-" + "+".join(kept) + f"-s{a.seed}"
        return train_once(cfg, [train[t] for t in kept], work / name, a.seed)

    def inner_folds(tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {u: g_accuracies(router([t for t in tasks if t != u]), [train[t] for t in tasks if t != u],
                                [train[u]], GRID) for u in tasks}

    outer: dict[str, Any] = {}
    for held in PAPER_ID_TASKS:
        tasks = [t for t in PAPER_ID_TASKS if t != held]
        inner = inner_folds(tasks)
        q = choose_q(inner, GRID)
        test = g_accuracies(router(tasks), [train[t] for t in tasks], [tests[held]], GRID)
        outer[held] = {"q": q, "inner": inner, "test": test}
        r = test["tasks"][held]
        print(f"{held} left out: q*={q:g}; fallback {r['fallback']:.2f}, router {r['router']:.2f}, "
              f"(g) q=0.05 {r['g']['0.05']:.2f}, (g) q* {r['g'][f'{q:g}']:.2f}", file=sys.stderr)
    inner = inner_folds(list(PAPER_ID_TASKS))
    q_all = choose_q(inner, GRID)
    every = [tests[t] for t in (*PAPER_ID_TASKS, *PAPER_OOD_TASKS)]
    full = g_accuracies(router(PAPER_ID_TASKS), [train[t] for t in PAPER_ID_TASKS], every, GRID)
    outer["all"] = {"q": q_all, "inner": inner, "test": full}

    cmd = "python scripts/nested_q_study.py" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    md = [f"Novelty quantile q chosen by nested leave-one-task-out on the training files (`{cmd}`; recipe "
          f"`{Path(a.config).name}`, seed {a.seed}), accuracy %. q* is the smallest q of {list(GRID)} at which (g) "
          "is no worse than the fallback LLM on every inner held-out task (its training rows).", "",
          "**Tasks the router never saw** (ID tasks left out of training; OOD tasks with the router on all 5):", "",
          "| task | q* | best LLM on the training data | router | (g) q = 0.05 | (g) q = q* |", "|---|---|---|---|---|---|"]
    rows = [(t, outer[t]["q"], outer[t]["test"]) for t in PAPER_ID_TASKS] + [(t, q_all, full) for t in PAPER_OOD_TASKS]
    worse = {"router": 0, "0.05": 0, "q*": 0}
    for t, q, res in rows:
        r = res["tasks"][t]
        gq = r["g"][f"{q:g}"]
        worse["router"] += r["router"] < r["fallback"] - 1e-9
        worse["0.05"] += r["g"]["0.05"] < r["fallback"] - 1e-9
        worse["q*"] += gq < r["fallback"] - 1e-9
        md.append(f"| {task_label(t)} | {q:g} | {res['fallback_llm'].split('/')[-1]}: {r['fallback']:.2f} | "
                  f"{r['router']:.2f} | {r['g']['0.05']:.2f} | {gq:.2f} |")
    md += ["", f"Below the best LLM on the training data on: router {worse['router']}, (g) q = 0.05 {worse['0.05']}, "
           f"(g) q = q* {worse['q*']} of {len(rows)} tasks.", "",
           f"**The router on all 5 tasks** at q* = {q_all:g} (chosen in its 5 inner folds), on tasks it saw (ID) "
           "and did not (OOD), for each q of the grid:", "",
           "| q | " + " | ".join(task_label(t) for t in (*PAPER_ID_TASKS, *PAPER_OOD_TASKS)) + " | ID avg | OOD avg |",
           "|---" * (len(every) + 3) + "|"]
    for q in ("router", *[f"{g:g}" for g in GRID]):
        accs = [full["tasks"][t]["router"] if q == "router" else full["tasks"][t]["g"][q]
                for t in (*PAPER_ID_TASKS, *PAPER_OOD_TASKS)]
        label = "no fallback" if q == "router" else q + (" (q*)" if float(q) == q_all else "")
        md.append(f"| {label} | " + " | ".join(f"{x:.2f}" for x in accs)
                  + f" | {np.mean(accs[:len(PAPER_ID_TASKS)]):.2f} | {np.mean(accs[len(PAPER_ID_TASKS):]):.2f} |")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "grid": list(GRID), "outer": outer}, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
