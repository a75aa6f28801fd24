"""``route``: route queries in batch through the inference layer; one JSON line per query."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from routerdc.cli.common import DEFAULT_CHECKPOINT, data_dir_argument, engine_arguments


def add_route_command(sub: Any) -> None:
    p = sub.add_parser("route", help="route queries in batch; one JSON line per query, in input order")
    data_dir_argument(p)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="router folder")
    p.add_argument("--input", required=True, help="a score file (.json/.jsonl/.csv) or a text file, one query per line")
    p.add_argument("--output", required=True, help="output JSONL: {query, llm, probs} per line")
    p.add_argument("--batch-size", type=int, help="at most N queries per forward pass (default: the token budget decides)")
    p.add_argument("--token-budget", type=int, help="padded tokens per batch (default: 2048, see README)")
    p.add_argument("--temperature", type=float, help="override the router's tau")
    p.add_argument("--cost-weight", type=float, default=0.0, metavar="LAMBDA",
                   help="trade quality for cost: softmax((sim + b - LAMBDA * c) / tau), c the LLMs' costs scaled to "
                        "[0, 1]; needs a router with costs (default 0: no cost term)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when there is one, else the CPU)")
    engine_arguments(p)
    p.add_argument("--int8", action="store_true", help="same as --engine int8 (kept for old scripts)")
    p.add_argument("--verbose", action="store_true", help="say which engine routes, and why, on stderr")


def cmd_route(args: argparse.Namespace) -> int:
    from routerdc.data import read_queries
    from routerdc.inference import default_engine, load_router

    queries = read_queries(args.input)
    router = load_router(args.checkpoint, "int8" if args.int8 else (args.engine or default_engine()), args.device,
                         token_budget=args.token_budget, max_rows=args.batch_size, data_dir=args.data_dir,
                         remeasure=args.remeasure)
    if args.verbose:
        print(f"routing on {router.describe()}", file=sys.stderr)
    routing = router.route(queries, temperature=args.temperature, cost_weight=args.cost_weight)
    out = Path(args.output)
    from routerdc.io import atomic_file

    with atomic_file(out, "w", encoding="utf-8") as f:
        for rec in routing.records(queries):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"routed {len(queries)} queries to {args.output}", file=sys.stderr)
    return 0
