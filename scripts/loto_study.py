"""Leave one task out (issue 16): how a router does on a task it was never trained on, against the
LLM a user would pick without a router (the one best on the training data, never the one best on
the test set, which nobody knows in advance).

    python scripts/loto_study.py [--seeds 0 1 2] [--work runs/loto] [--output results/loto]

For each of the paper's 5 in-distribution tasks and each seed, a router is trained on the other 4
tasks' training files and tested on the left-out task's test set, with the post-hoc methods of
``scripts/beyond_study.py`` fitted on the 4 training tasks only: (b) the confidence fallback and (f)
the k-NN mix, and (g) the novelty fallback. A router trained on all 5 is also tested on the 3 OOD sets, against the LLM best on
its training data. The router is the frozen-encoder recipe (``configs/loto_frozen.json``: frozen
all-MiniLM-L6-v2, mean pooling, only the keys learnt, calibrated), which fits 18 runs into a CPU
session; the fine-tuned recipe takes about 25 minutes per run on a 2-core CPU.

Writes ``OUTPUT.json`` and ``OUTPUT.md``.
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


def _acc(s: Any, choice: np.ndarray) -> float:
    from routerdc.evaluate.metrics import accuracy

    return accuracy(s.scores, choice, s.metric)


def train_once(cfg: Any, train_sets: list[Any], out: Path, seed: int) -> Path:
    """Train ``cfg`` (with ``seed``) on ``train_sets`` into ``out``, unless a router is already there."""
    from dataclasses import replace

    from routerdc.train.trainer import Trainer

    if not (out / "config.json").exists():
        Trainer(replace(cfg, seed=seed, output_dir=str(out), train_files=(), test_files=()),
                train_sets=train_sets, test_sets=[], overwrite=True).run()
    return out


def run_fold(cfg: Any, train_sets: list[Any], test_sets: list[Any], out: Path, seed: int) -> dict[str, Any]:
    """Train (or reuse) the fold's router, then each method's accuracy per test set."""
    from beyond_study import study
    from routerdc.evaluate.combine import best_llm
    from routerdc.evaluate.metrics import query_values

    train_once(cfg, train_sets, out, seed)
    res = study([str(out)], train_sets, test_sets)
    llms = test_sets[0].llms
    fb = best_llm([query_values(s.align(llms).scores, s.metric) for s in train_sets])
    name = out.name
    rows: dict[str, dict[str, float]] = {}
    for i, s in enumerate(test_sets):
        rows[s.task] = {
            "best on training data": _acc(s, np.full(len(s), fb)),
            "best on this test set (hindsight)": float(max(_acc(s, np.full(len(s), t)) for t in range(len(llms)))),
            "router": _acc(s, res["choices"][f"calibrated [{name}]"][i]),
            "(b) fallback": _acc(s, res["choices"][f"(b) fallback [{name}]"][i]),
            "(f) k-NN mix": _acc(s, res["choices"][f"(f) k-NN mix [{name}]"][i]),
            "(g) novelty fallback": _acc(s, res["choices"][f"(g) novelty fallback, q=0.05 [{name}]"][i]),
        }
    return {"rows": rows, "fitted": res["fitted"][name], "best_train_llm": llms[fb]}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.data import load_many, paper_files
    from routerdc.data.registry import PAPER_ID_TASKS, PAPER_OOD_TASKS, task_label
    from routerdc.train.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "loto_frozen.json"))
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default=str(ROOT / "runs" / "loto"))
    p.add_argument("--output", default=str(ROOT / "results" / "loto"))
    a = p.parse_args(argv)

    cfg = TrainConfig.from_json(a.config)
    train_files, test_files = paper_files(a.data_dir)
    train_all = load_many(train_files)
    tests = load_many(test_files)
    llms = tests[0].llms
    tests = {s.task: s.align(llms) for s in tests}
    work = Path(a.work)
    folds: dict[str, list[dict[str, Any]]] = {}
    for seed in a.seeds:
        for task in PAPER_ID_TASKS:
            kept = [s for s in train_all if s.task != task]
            r = run_fold(cfg, kept, [tests[task]], work / f"without-{task}-s{seed}", seed)
            folds.setdefault(task, []).append(r)
            print(f"seed {seed}, {task} left out: " + ", ".join(f"{k} {v:.2f}" for k, v in r["rows"][task].items()),
                  file=sys.stderr)
        r = run_fold(cfg, train_all, [tests[t] for t in PAPER_OOD_TASKS], work / f"all-s{seed}", seed)
        folds.setdefault("ood", []).append(r)
    methods = ["best on training data", "router", "(b) fallback", "(f) k-NN mix", "(g) novelty fallback",
               "best on this test set (hindsight)"]
    cells: dict[str, dict[str, tuple[float, float]]] = {}
    for task in (*PAPER_ID_TASKS, *PAPER_OOD_TASKS):
        runs = folds["ood"] if task in PAPER_OOD_TASKS else folds[task]
        cells[task] = {m: (float(np.mean([r["rows"][task][m] for r in runs])),
                           float(np.std([r["rows"][task][m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0)
                       for m in methods}
    cmd = "python scripts/loto_study.py --seeds " + " ".join(map(str, a.seeds))
    head = ["task", "trained on", "best LLM on the training data", *methods[1:]]
    md = [f"Tasks the router never saw (`{cmd}`; recipe `{Path(a.config).name}`), accuracy %, mean ± std over "
          f"{len(a.seeds)} seeds. ID tasks: left out of training (trained on the other 4); OOD tasks: the router "
          "trained on all 5.", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for task, c in cells.items():
        runs = folds["ood"] if task in PAPER_OOD_TASKS else folds[task]
        where = "all 5 ID tasks" if task in PAPER_OOD_TASKS else "the other 4"
        best = runs[0]["best_train_llm"].split("/")[-1]
        md.append(f"| {task_label(task)} | {where} | {best}: {c[methods[0]][0]:.2f} | " +
                  " | ".join(f"{c[m][0]:.2f} ± {c[m][1]:.2f}" for m in methods[1:]) + " |")
    for m in methods[1:5]:
        worse = [task_label(t) for t, c in cells.items() if c[m][0] < c[methods[0]][0] - 1e-9]
        md.append(f"\n{m}: below the best LLM on the training data on {len(worse)} of {len(cells)} tasks"
                  + (f" ({', '.join(worse)})" if worse else "") + ".")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "config": Path(a.config).name, "cells": cells,
                                                    "folds": folds}, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
