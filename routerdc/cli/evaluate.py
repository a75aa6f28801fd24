"""``evaluate``: the results table of routers (seeds as mean ± std) against the LLMs, the oracle and
the baselines, through the one evaluator (:mod:`routerdc.evaluate.evaluator`); ``--cost-sweep``
adds quality against cost (:mod:`routerdc.cli.costs`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from routerdc.cli.common import DEFAULT_CHECKPOINT, data_dir_argument, engine_arguments


def add_evaluate_command(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="the results table of a router against LLMs, oracle and baselines")
    data_dir_argument(p)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="router folder")
    p.add_argument("--test-files", nargs="+", help="test score files (default: the paper's 8 test sets)")
    p.add_argument("--id-tasks", nargs="+", help="in-distribution task names (default: the router's training tasks)")
    p.add_argument("--baselines", action="store_true", help="also train and evaluate k-NN and MLP baselines")
    p.add_argument("--train-files", nargs="+", help="training files of the baselines (default: the paper's)")
    p.add_argument("--label", default="RouterDC", help="row label of the --checkpoint router")
    p.add_argument("--router", action="append", metavar="LABEL=DIR[,DIR...]",
                   help="a router row (repeatable); several folders (seeds) show as mean ± std; "
                        "replaces --checkpoint")
    p.add_argument("--paper-row", action="store_true", help="add the paper's reported RouterDC row")
    engine_arguments(p)
    p.add_argument("--no-cache", action="store_true",
                   help="do not cache the routers' test-query embeddings (keyed by the weights' SHA-256) "
                        "in $ROUTERDC_CACHE or ~/.cache/routerdc")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    p.add_argument("--output", help="write the table as JSON here")
    p.add_argument("--markdown", help="write the table as markdown here")
    p.add_argument("--cost-sweep", type=int, metavar="N", help="also sweep N cost weights (test files with costs): "
                   "quality, total cost and AIQ per router, LLM, oracle, k-NN; see routerdc/cli/costs.py")


def _parse_routers(args: argparse.Namespace) -> dict[str, list[str]]:
    """``--router LABEL=DIR[,DIR...]`` (several folders: seeds, shown as mean ± std)."""
    if not args.router:
        return {args.label: [args.checkpoint]}
    out: dict[str, list[str]] = {}
    for spec in args.router:
        label, sep, dirs = spec.rpartition("=")
        if not sep or not label or not dirs:
            raise ValueError(f"--router expects LABEL=DIR[,DIR...], got {spec!r}")
        out[label] = [d for d in dirs.split(",") if d]
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from routerdc.evaluate.evaluator import baseline_choices, comparison_table, default_id_tasks, router_choices
    from routerdc.evaluate.table import add_paper_row, aggregate_seeds, to_json, to_markdown
    from routerdc.data import load_many, paper_files, resolve_file
    from routerdc.inference.embed_cache import embedding_key
    from routerdc.inference import default_engine, load_router
    from routerdc.model.router import RouterDC

    engine = args.engine or default_engine()

    def load(d: str) -> Any:
        return load_router(d, engine, data_dir=args.data_dir, remeasure=args.remeasure)

    specs = _parse_routers(args)
    first_dir = next(iter(specs.values()))[0]
    first = load(first_dir)
    llms = first.config.llm_names
    if args.test_files:
        test_files = [resolve_file(f, args.data_dir) for f in args.test_files]
    else:
        test_files = paper_files(args.data_dir)[1]
    test_sets = [s.align(llms) for f in test_files for s in load_many([f], missing=args.missing)]
    id_tasks = args.id_tasks or default_id_tasks(first.meta.recipe if first.meta else None)
    routers: dict[str, list] = {}
    groups: dict[str, list[str]] = {}
    for label, dirs in specs.items():
        groups[label] = []
        for d in dirs:
            router = first if d == first_dir else load(d)
            key = label if len(dirs) == 1 else f"{label} [{Path(d).name}]"
            ckey = None if args.no_cache else embedding_key(router)  # fleet changes and offsets aside
            routers[key] = router_choices(router, test_sets, key=ckey)
            groups[label].append(key)
    if args.baselines:
        train_files = ([resolve_file(f, args.data_dir) for f in args.train_files] if args.train_files
                       else paper_files(args.data_dir)[0])
        train_sets = load_many(train_files, missing=args.missing)
        untrained = RouterDC.build(llms, encoder=first.config.encoder, pooling=first.config.pooling,
                                   max_length=first.config.max_length)
        routers = {**baseline_choices(untrained, train_sets, test_sets), **routers}
    if args.cost_sweep:
        from routerdc.cli.costs import run_cost_sweep

        print(run_cost_sweep(specs, {first_dir: first}, test_sets, args, train_sets if args.baselines else None))
    per_seed = comparison_table(test_sets, routers, id_tasks=id_tasks)
    values, spread = aggregate_seeds(per_seed, {k: v for k, v in groups.items() if len(v) > 1})
    if args.paper_row:
        values = add_paper_row(values)
    table = to_markdown(values, spread=spread)
    print(table)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"command": "python -m routerdc " + " ".join(sys.argv[1:] if args.argv is None else args.argv),
                  "values": to_json(values), "spread": to_json(spread.dropna(how="all")),
                  "per_checkpoint": to_json(per_seed), "routers": specs}
        out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table, encoding="utf-8")
    return 0
