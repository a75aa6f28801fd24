"""Where a router sends each task: the share of each test set's queries routed to each LLM (%).

    python scripts/route_distribution.py CHECKPOINT [CHECKPOINT ...] [--output results/route_distribution.md]

Uses the embedding cache of ``python -m routerdc evaluate`` (keyed by the checkpoint's bytes), so
after an evaluation it takes seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def distribution_markdown(name: str, llms: Sequence[str], tasks: Sequence[str], choices: Sequence[np.ndarray]) -> str:
    short = [n.split("/")[-1] for n in llms]
    lines = [f"#### {name}", "", "| task | " + " | ".join(short) + " |", "|---|" + "---|" * len(short)]
    for task, c in zip(tasks, choices):
        share = np.bincount(c, minlength=len(llms)) / max(len(c), 1) * 100
        lines.append(f"| {task} | " + " | ".join(f"{x:.0f}" for x in share) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.evaluate.evaluator import router_choices
    from routerdc.data import load_many, paper_files
    from routerdc.inference.embed_cache import embedding_key
    from routerdc.model.router import RouterDC

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", default=str(ROOT / "results" / "route_distribution.md"))
    args = p.parse_args(argv)
    parts = ["Share of each test set's queries routed to each LLM (%); "
             f"`python scripts/route_distribution.py {' '.join(args.checkpoints)}`.\n"]
    for d in args.checkpoints:
        router = RouterDC.from_pretrained(d)
        sets = [s.align(router.config.llm_names) for s in load_many(paper_files(args.data_dir)[1])]
        choices = router_choices(router, sets, key=embedding_key(router))
        parts.append(distribution_markdown(d, router.config.llm_names, [s.task for s in sets], choices))
    text = "\n".join(parts)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
