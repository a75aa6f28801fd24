"""Command line: ``python -m routerdc {cluster,train,calibrate,evaluate,export,route,serve,serve-llms,
add-llm,remove-llm,costs,
import-lm-eval,collect,data}``.

Every command takes ``--data-dir`` (else ``$ROUTERDC_DATA``, else ``../shared/data``); data
files may be given relative to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from routerdc.cli.train import add_train_options
from routerdc.data.registry import DATA_ENV

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "routerdc-minilm"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m routerdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help=f"score-data directory (default: ${DATA_ENV} or ../shared/data)")

    p = sub.add_parser("cluster", help="k-means cluster ids for training queries, written as JSONL")
    common(p)
    p.add_argument("--input", nargs="+", required=True, help="score files to cluster together")
    p.add_argument("--output", required=True, help="output JSONL file (our format, with 'cluster')")
    p.add_argument("--n-clusters", type=int, default=5, help="number of clusters (default: 5)")
    p.add_argument("--reduce", default="none", choices=("none", "pca", "tsne"),
                   help="reduction before k-means (the paper used tsne; default: none)")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="encoder whose embeddings are clustered")
    p.add_argument("--pooling", default="cls", choices=("cls", "mean"), help="pooling (default: cls)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    p.add_argument("--seed", type=int, default=0, help="seed of the reduction and k-means")

    p = sub.add_parser("train", help="train a router with the dual contrastive losses")
    common(p)
    add_train_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the router already in --output-dir from the first evaluation on; without it a new "
                        "run replaces that router only with a better one (by the selection rule), and refuses a "
                        "folder that holds something else")

    p = sub.add_parser("calibrate", help="fit one routing offset per LLM on training data (after training)")
    common(p)
    p.add_argument("--checkpoint", required=True, help="router folder")
    p.add_argument("--train-files", nargs="+",
                   help="score files to fit on (default: the router's training files, from its recipe)")
    p.add_argument("--output", help="router folder to write (default: rewrite --checkpoint's config.json "
                                    "in place, atomically; the weights are not touched)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    engine_arguments(p)

    p = sub.add_parser("evaluate", help="the results table of a router against LLMs, oracle and baselines")
    common(p)
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
                   "quality, total cost and AIQ per router, LLM, oracle, k-NN; see cli_costs.py")

    p = sub.add_parser("export", help="re-save a router, e.g. as fp16 safetensors shards (to ship or upload)")
    p.add_argument("--checkpoint", required=True, help="router folder to read")
    p.add_argument("--output", required=True, help="router folder to write (atomically)")
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"),
                   help="weight dtype (default: float16, half the size)")
    p.add_argument("--max-shard-size", default="15MB", help="largest safetensors shard (default: 15MB)")
    p.add_argument("--train-config", help="a train.json to store beside the weights (default: the router's recipe)")

    p = sub.add_parser("route", help="route queries in batch; one JSON line per query, in input order")
    common(p)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="router folder")
    p.add_argument("--input", required=True, help="a score file (.json/.jsonl/.csv) or a text file, one query per line")
    p.add_argument("--output", required=True, help="output JSONL: {query, llm, probs} per line")
    p.add_argument("--batch-size", type=int, help="at most N queries per forward pass (default: the token budget decides)")
    p.add_argument("--token-budget", type=int, help="padded tokens per batch (default: 4096, see README)")
    p.add_argument("--temperature", type=float, help="override the router's tau")
    p.add_argument("--cost-weight", type=float, default=0.0, metavar="LAMBDA",
                   help="trade quality for cost: softmax((sim + b - LAMBDA * c) / tau), c the LLMs' costs scaled to "
                        "[0, 1]; needs a router with costs (default 0: no cost term)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when there is one, else the CPU)")
    engine_arguments(p)
    p.add_argument("--int8", action="store_true", help="same as --engine int8 (kept for old scripts)")
    p.add_argument("--verbose", action="store_true", help="say which engine routes, and why, on stderr")

    from routerdc.serving.server import add_serve_arguments  # light: argparse only

    add_serve_arguments(sub.add_parser("serve", help="the routed OpenAI-compatible API (/v1/chat/completions)"))
    from routerdc.serving.launcher import add_serve_llms_arguments

    add_serve_llms_arguments(sub.add_parser("serve-llms", help="launch a vLLM server per 'vllm' candidate"))
    from routerdc.cli.costs import add_costs_command
    from routerdc.cli.collect import add_collect_commands
    from routerdc.cli.data import add_data_command
    from routerdc.cli.fleet import add_fleet_commands

    add_fleet_commands(sub)
    add_costs_command(sub)
    add_collect_commands(sub)
    add_data_command(sub)
    return parser


def engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--remeasure``: the inference layer's choice (see routerdc.inference)."""
    from routerdc.inference import ENGINE_CHOICES, ENGINE_ENV

    p.add_argument("--engine", choices=ENGINE_CHOICES,
                   help=f"inference engine (default: ${ENGINE_ENV}, else auto: the fastest on this machine that "
                        "routes like torch fp32, measured once per router and machine, then cached)")
    p.add_argument("--remeasure", action="store_true", help="with --engine auto: measure the engines again")


def _train_config(args: argparse.Namespace) -> Any:
    from routerdc.data import paper_files
    from routerdc.train.config import TrainConfig

    base = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if getattr(args, f.name, None) is not None}
    if args.data_dir:
        changes["data_dir"] = args.data_dir
    cfg = base.replace(**changes)
    if not cfg.train_files:
        train, test = paper_files(cfg.data_dir)
        cfg = cfg.replace(train_files=tuple(map(str, train)),
                          test_files=cfg.test_files or tuple(map(str, test)))
    return cfg


def cmd_cluster(args: argparse.Namespace) -> int:
    from routerdc.train.cluster import assign_clusters
    from routerdc.data import load_many, resolve_file, write_jsonl
    from routerdc.model.router import RouterDC

    sets = load_many([resolve_file(f, args.data_dir) for f in args.input], missing=args.missing)
    model = RouterDC.build(sets[0].llms, encoder=args.encoder, pooling=args.pooling)
    sets = assign_clusters(sets, model, args.n_clusters, reduce=args.reduce, seed=args.seed)
    write_jsonl(sets, args.output)
    sizes = {int(c): int((s.clusters == c).sum()) for s in sets for c in set(s.clusters.tolist())}  # type: ignore[union-attr]
    print(f"wrote {sum(len(s) for s in sets)} rows to {args.output}; cluster sizes (last task) {sizes}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from routerdc.train.trainer import train

    cfg = _train_config(args)

    def log_eval(step: int, losses: dict[str, float], metrics: dict[str, float] | None) -> None:
        if metrics is not None:  # one line per evaluation, also when no progress bar is shown
            avg = {k: round(v, 2) for k, v in metrics.items() if k.endswith("avg")}
            print(f"step {step}: loss {losses['total']:.4f} {avg}", file=sys.stderr, flush=True)

    try:
        result = train(cfg, progress=True, on_step=log_eval, overwrite=args.overwrite)
    except ValueError as exc:
        if "--overwrite" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = "cancelled" if result.cancelled else "done"
    if result.kept_existing is not None:
        status = "kept-existing"
        print(f"kept the router already in {cfg.output_dir}: its {cfg.select_by} score {result.kept_existing:.2f} "
              f"was not beaten by this run (pass --overwrite to replace it anyway)", file=sys.stderr)
    print(json.dumps({"status": status, "output_dir": str(result.output_dir), "best_step": result.best_step,
                      "best_score": result.best_score, "metrics": result.best_metrics,
                      "calibration": result.calibration,
                      "seconds": round(result.seconds, 1)}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from routerdc.train.calibration import calibrate_checkpoint
    from routerdc.inference import default_engine
    from routerdc.checkpoint import read_config
    from routerdc.data import load_many, resolve_file

    files = args.train_files or read_config(args.checkpoint).get("recipe", {}).get("train_files")
    if not files:
        raise ValueError(f"{args.checkpoint}: its recipe names no training files; give --train-files")
    sets = load_many([resolve_file(f, args.data_dir) for f in files], missing=args.missing)
    result = calibrate_checkpoint(args.checkpoint, sets, output=args.output, engine=args.engine or default_engine(),
                                  remeasure=args.remeasure)
    print(json.dumps({"output": args.output or args.checkpoint, **result.to_dict()}, indent=2))
    return 0


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
    from routerdc.evaluate.compare import (add_paper_row, aggregate_seeds, baseline_choices, comparison_table,
                          router_choices, to_markdown_pm)
    from routerdc.data import load_many, paper_files, resolve_file
    from routerdc.inference.embed_cache import embedding_key
    from routerdc.evaluate.metrics import to_json
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
    id_tasks = args.id_tasks or first.meta.get("recipe", {}).get("train_tasks")
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
    table = to_markdown_pm(values, spread)
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


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from routerdc.model.router import RouterDC

    router = RouterDC.from_pretrained(args.checkpoint)
    meta = router.meta
    recipe = dict(meta.get("recipe", {}))
    train_json = json.loads(Path(args.train_config).read_text(encoding="utf-8")) if args.train_config else {
        k: v for k, v in recipe.items() if k != "train_tasks"}
    folder = router.save_pretrained(
        args.output, include_encoder=meta.get("encoder_weights", "included") == "included", recipe=recipe,
        metrics=meta.get("metrics", {}), dtype=getattr(torch, args.dtype), max_shard_size=args.max_shard_size,
        extra_json={"train.json": train_json} if train_json else None,
        extra_meta={"calibration": meta["calibration"]} if "calibration" in meta else None)
    size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB, {args.dtype})")
    return 0


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


def _lazy(module: str, name: str) -> Any:
    """The command ``name`` of ``module``, imported only when it runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)
    return run


COMMANDS = {"cluster": cmd_cluster, "train": cmd_train, "calibrate": cmd_calibrate, "evaluate": cmd_evaluate,
            "export": cmd_export, "route": cmd_route, "serve": _lazy("routerdc.serving.server", "cmd_serve"),
            "serve-llms": _lazy("routerdc.serving.launcher", "cmd_serve_llms"),
            "add-llm": _lazy("routerdc.cli.fleet", "cmd_add_llm"), "remove-llm": _lazy("routerdc.cli.fleet", "cmd_remove_llm"),
            "costs": _lazy("routerdc.cli.costs", "cmd_costs"),
            "import-lm-eval": _lazy("routerdc.cli.collect", "cmd_import_lm_eval"), "collect": _lazy("routerdc.cli.collect", "cmd_collect"),
            "data": _lazy("routerdc.cli.data", "cmd_data")}


def main(argv: Sequence[str] | None = None) -> int:
    from routerdc.checkpoint import CheckpointError
    from routerdc.data import DataError
    from routerdc.model.encoder import EncoderError

    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        return COMMANDS[args.command](args)
    except (DataError, CheckpointError, EncoderError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last saved router is intact", file=sys.stderr)
        return 130
