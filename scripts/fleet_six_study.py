"""Fleet changes, second half (issue 12): train a router on 6 of the paper's 7 LLMs, add the 7th with
``add-llm`` (only its key fitted), and compare with a router trained on all 7 with the same recipe.

    python scripts/fleet_six_study.py [--config configs/loto_frozen.json] [--work runs/fleet6] \
        [--output results/fleet_six]

The recipe is the frozen-encoder one (``configs/loto_frozen.json``: all-MiniLM-L6-v2 frozen, mean
pooling, only the keys learnt, calibrated), since 8 runs of the fine-tuned CPU recipe (about 25 minutes
each on a 2-core CPU) do not fit a session; with a frozen encoder the 6-LLM router and the 7-LLM one
share the same embeddings, so the comparison isolates what ``add-llm`` does. Each addition's wall and
CPU seconds are measured around the ``add_llm`` call. Writes ``OUTPUT.json`` and ``OUTPUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.data import load_many, paper_files
    from routerdc.data.registry import PAPER_ID_TASKS
    from routerdc.evaluate.evaluator import comparison_table, router_choices
    from routerdc.inference.embed_cache import embedding_key
    from routerdc.model.router import RouterDC
    from routerdc.train.config import TrainConfig
    from fleet_study import delta_table
    from loto_study import train_once
    from routerdc.train.fleet import add_llm

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "loto_frozen.json"))
    p.add_argument("--data-dir", help="score-data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llms", nargs="+", help="only these LLMs (default: all 7)")
    p.add_argument("--work", default=str(ROOT / "runs" / "fleet6"))
    p.add_argument("--output", default=str(ROOT / "results" / "fleet_six"))
    a = p.parse_args(argv)

    cfg = TrainConfig.from_json(a.config)
    train_files, test_files = paper_files(a.data_dir)
    train_sets = load_many(train_files)
    llms = train_sets[0].llms
    train_sets = [s.align(llms) for s in train_sets]
    test_sets = [s.align(llms) for s in load_many(test_files)]
    work = Path(a.work)

    def trained(out: Path, names: tuple[str, ...]) -> Path:
        return train_once(cfg, [s.select(names) for s in train_sets], out, a.seed)

    def table_row(folder: Path) -> dict[str, float]:
        router = RouterDC.from_pretrained(folder)
        sets = [s.select(router.config.llm_names) for s in test_sets]
        df = comparison_table(sets, {"r": router_choices(router, sets, key=embedding_key(router))},
                              id_tasks=PAPER_ID_TASKS, include_llms=False)
        return {str(k): round(float(v), 2) for k, v in df.loc["r"].items()}

    rows = {"all 7 from the start": table_row(trained(work / f"all7-s{a.seed}", llms))}
    records = []
    for name in a.llms or llms:
        short = name.split("/")[-1]
        six = trained(work / f"without-{short}-s{a.seed}", tuple(n for n in llms if n != name))
        rows[f"trained without {short}"] = table_row(six)
        w0, c0 = time.perf_counter(), time.process_time()
        add_llm(six, name, train_sets, output=work / f"added-{short}-s{a.seed}")
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        rows[f"trained without {short}, then added"] = table_row(work / f"added-{short}-s{a.seed}")
        records.append({"llm": name, "add_wall_s": round(wall, 1), "add_cpu_s": round(cpu, 1)})
        r = rows[f"trained without {short}, then added"]
        print(f"{short}: added ID {r['ID avg']} OOD {r['OOD avg']} ({wall:.0f} s wall, {cpu:.0f} s CPU)", file=sys.stderr)

    lines = delta_table(rows, "all 7 from the start")
    cmd = "python scripts/fleet_six_study.py" + "".join(f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    encoder = "frozen encoder" if cfg.freeze_encoder else "fine-tuned encoder"
    md = (f"Routers trained on 6 LLMs, then given the 7th by `add-llm` (`{cmd}`; recipe `{Path(a.config).name}`, "
          f"{encoder}), against the router trained on all 7 with the same recipe; the paper's 8 test sets.\n\n"
          + "\n".join(lines) + "\n\n| LLM | add-llm wall s | add-llm CPU s |\n|---|---|---|\n"
          + "".join(f"| {x['llm']} | {x['add_wall_s']} | {x['add_cpu_s']} |\n" for x in records))
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"command": cmd, "rows": rows, "changes": records}, indent=2) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
