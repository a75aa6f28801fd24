"""Fleet changes on the paper's data: remove each LLM from a router and add it back from the
training files (``routerdc.train.fleet``), then evaluate, against the router that had all 7 from the start.

    python scripts/fleet_study.py [--checkpoint checkpoints/routerdc-minilm] [--work runs/fleet]

For each of the router's LLMs: ``remove-llm`` (offsets refitted on the training files), then
``add-llm`` of the same LLM from the recipe's training files (only its key is fitted; encoder and
other keys frozen; offsets refitted), then the paper's test table. The embeddings go through the
cache keyed by the encoder's weights, so the queries are embedded once for all 14 routers. Each
addition's wall and CPU seconds are measured around the ``add_llm`` call (the router's load
included; embeddings cached after the first). Writes ``results/fleet_changes.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]


def delta_table(rows: dict[str, dict[str, float]], ref_label: str) -> list[str]:
    """Markdown lines: one row per router, its columns, then ΔID / ΔOOD against the ``ref_label`` row."""
    cols = list(next(iter(rows.values())))
    ref = rows[ref_label]
    lines = ["| router | " + " | ".join(cols) + " | ΔID | ΔOOD |", "|---" * (len(cols) + 3) + "|"]
    for label, r in rows.items():
        d = (f"{r['ID avg'] - ref['ID avg']:+.2f} | {r['OOD avg'] - ref['OOD avg']:+.2f}"
             if label != ref_label else " | ")
        lines.append(f"| {label} | " + " | ".join(f"{r[c]:.2f}" for c in cols) + f" | {d} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.checkpoint import read_config
    from routerdc.evaluate.evaluator import comparison_table, router_choices
    from routerdc.data import load_many, paper_files, resolve_file
    from routerdc.data.registry import PAPER_ID_TASKS
    from routerdc.inference.embed_cache import embedding_key
    from routerdc.train.fleet import add_llm, remove_llm
    from routerdc.model.router import RouterDC

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "routerdc-minilm"))
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--work", default=str(ROOT / "runs" / "fleet"), help="where the changed routers are written")
    p.add_argument("--llms", nargs="+", help="only these LLMs (default: all of the router's)")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="add-llm selects the key on this held-out fraction of each training set (default 0: on all of it)")
    p.add_argument("--output", default=str(ROOT / "results" / "fleet_changes"))
    a = p.parse_args(argv)

    base = RouterDC.from_pretrained(a.checkpoint)
    llms = base.config.llm_names
    train_files = read_config(a.checkpoint).get("recipe", {}).get("train_files") or paper_files(a.data_dir)[0]
    train_sets = load_many([resolve_file(f, a.data_dir) for f in train_files])
    test_sets = [s.align(llms) for s in load_many(paper_files(a.data_dir)[1])]
    work = Path(a.work)

    def table_row(router: RouterDC) -> dict[str, float]:
        choices = router_choices(router, test_sets, key=embedding_key(router))
        df = comparison_table(test_sets, {"r": choices}, id_tasks=PAPER_ID_TASKS, include_llms=False)
        return {str(k): round(float(v), 2) for k, v in df.loc["r"].items()}

    t = time.perf_counter()
    rows = {"all 7 from the start": table_row(base)}
    print(f"embedded and evaluated the base router in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    records = []
    for name in a.llms or llms:
        short = name.split("/")[-1]
        removed, added = work / f"without-{short}", work / f"readded-{short}"
        rm = remove_llm(a.checkpoint, name, train_sets, output=removed)
        rows[f"without {short}"] = table_row(RouterDC.from_pretrained(removed))
        w0, c0 = time.perf_counter(), time.process_time()
        add = add_llm(removed, name, train_sets, output=added, holdout=a.holdout)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rows[f"{short} removed, then added back"] = table_row(RouterDC.from_pretrained(added))
        records.append({"llm": name, "remove": rm.to_dict(), "add": add.to_dict(),
                        "add_wall_s": round(wall, 1), "add_cpu_s": round(cpu, 1)})
        r = rows[f"{short} removed, then added back"]
        print(f"{short}: re-added ID {r['ID avg']} OOD {r['OOD avg']} (add: {wall:.1f} s wall, {cpu:.1f} s CPU)",
              file=sys.stderr)

    lines = delta_table(rows, "all 7 from the start")
    cmd = "python scripts/fleet_study.py" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    how = (f"selected on a held-out {a.holdout:g} of each training set" if a.holdout
           else "selected by the calibrated training-set average")
    md = (f"Fleet changes on `{Path(a.checkpoint).name}` (`{cmd}`): each LLM removed "
          "(offsets refitted), then added back from the training files (only its key fitted, "
          f"{how}, then the offsets), evaluated on the paper's 8 test sets.\n\n" + "\n".join(lines) + "\n\n"
          "| LLM | add-llm wall s | add-llm CPU s |\n|---|---|---|\n"
          + "".join(f"| {x['llm']} | {x['add_wall_s']} | {x['add_cpu_s']} |\n" for x in records))
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "rows": rows, "changes": records}, indent=2) + "\n",
                                        encoding="utf-8")
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
