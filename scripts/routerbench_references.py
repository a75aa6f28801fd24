"""The cost references of RouterBench's test sets: each single LLM's quality and total cost, the zero
router's AIQ (the single LLMs mixed at random) and the oracle (the cheapest of the best LLMs per query).

    python scripts/routerbench_references.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

import numpy as np

FILES = ("arc_challenge_test.csv", "mbpp_test.csv", "winograde_test.csv")


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.evaluate.cost_curve import aiq, point
    from routerdc.evaluate.cost_sweep import pooled
    from routerdc.data import load_scores, resolve_data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    a = p.parse_args(argv)
    root = resolve_data_dir(a.data_dir) / "routerbench" / "routerbench_zs"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows without every score are dropped, as everywhere
        sets = [s for f in FILES for s in load_scores(root / f, missing="drop")]
    llms = sets[0].llms
    values, costs = pooled(sets, llms)
    pts = np.array([point(values, costs, np.full(len(values), t)) for t in range(len(llms))])
    for name, (c, q) in zip(llms, pts):
        print(f"{name:40s} quality {q:.3f}  total cost ${c:.3f}")
    best = values.max(axis=1, keepdims=True)
    oracle = point(values, costs, np.argmin(np.where(values >= best, costs, np.inf), axis=1))
    print(f"{len(values)} queries; zero router AIQ {aiq(pts, pts[:, 0].min(), pts[:, 0].max()):.3f}; "
          f"oracle quality {oracle[1]:.3f} at ${oracle[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
