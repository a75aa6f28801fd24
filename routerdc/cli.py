"""Command line: ``python -m routerdc {cluster,train,calibrate,evaluate,export,route,serve,serve-llms,
add-llm,remove-llm}``.

Every command takes ``--data-dir`` (else ``$ROUTERDC_DATA``, else ``../shared/data``); data
files may be given relative to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_fleet import FLEET_COMMANDS
from .data.registry import DATA_ENV

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "routerdc-minilm"

# Help for every TrainConfig field exposed as an option of `train`.
TRAIN_HELP: dict[str, str] = {
    "train_files": "training score files (.json/.jsonl/.csv); default: the paper's 5 in-distribution sets",
    "test_files": "test score files evaluated every --eval-every steps; default: the paper's 8 test sets",
    "output_dir": "where the best router is written (atomically)",
    "samples_per_task": "truncate or repeat each training task to N rows (0: keep as is)",
    "missing": "rows with absent scores: error, drop or zero",
    "cost_rate": "train on score - cost_rate * cost (RouterBench files carry costs)",
    "train_scores": "scores the losses see: raw (the paper: the files' scores; multiple choice as the probability "
                    "of the right answer) or metric (as the test metric counts them: multiple choice as "
                    "correct/wrong, pass rates as is)",
    "group_by": "groups of the sample-sample loss: cluster ids or task ids",
    "n_clusters": "k-means clusters when the data carry no cluster ids (or with --recluster)",
    "cluster_reduce": "reduction before k-means: none, pca or tsne (the paper's)",
    "recluster": "recompute cluster ids even when the files carry them",
    "id_tasks": "in-distribution task names (default: the training tasks)",
    "encoder": "encoder: all-MiniLM-L6-v2 (embedded), a hub id such as microsoft/mdeberta-v3-base, or a folder",
    "pooling": "cls (first token, the paper's) or mean",
    "similarity": "cos (the paper's) or dot",
    "temperature": "tau in softmax(sim / tau)",
    "max_length": "max tokens per query; longer queries are truncated from the left",
    "projection": "add a d x d linear projection after pooling",
    "normalization": "text normalisation: none, anyascii (all text to ASCII; Chinese to pinyin) or "
                     "translit-unk (only characters the tokenizer lacks)",
    "k_pos": "K+: top-scoring LLMs pulled towards the query",
    "k_neg": "K-: bottom-scoring LLMs pushed away",
    "neg_threshold": "ignore negatives scoring above this",
    "tie_break": "order of LLMs with equal scores when picking positives/negatives: index (column order, "
                 "biased towards the first columns) or random (a fresh permutation per query)",
    "lam": "lambda, weight of the sample-sample loss (0 disables it)",
    "n_neg": "H: out-group negatives per query in the sample-sample loss",
    "ss_temperature": "temperature of the sample-sample loss",
    "lr": "AdamW learning rate of the encoder",
    "head_lr": "learning rate of the LLM embeddings (default: --lr, or 1e-2 with --freeze-encoder)",
    "weight_decay": "AdamW weight decay",
    "batch_size": "queries per step",
    "grad_accum": "micro-batches per step, for small memory (the sample-sample loss is in-micro-batch)",
    "steps": "optimiser steps",
    "length_window": "group queries of similar length within windows of N batches (1: random batches)",
    "bf16": "bf16 autocast on CUDA",
    "freeze_encoder": "cache the encoder's embeddings once and train only the LLM embeddings (+ projection)",
    "eval_every": "evaluate every N steps (0: only at the end)",
    "eval_max_per_task": "evaluate on at most N rows per task (0: all)",
    "select_by": "keep the best router by the train average (the paper's rule) or a val split",
    "val_fraction": "held-out fraction of each training task with --select-by val",
    "calibrate": "after training, fit one routing offset per LLM on all training rows (maximising the "
                 "training-set average; see `calibrate`)",
    "seed": "random seed",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "cache_dir": "where frozen-encoder embeddings are cached (default: $ROUTERDC_CACHE or ~/.cache/routerdc)",
    "save_dtype": "save weights as float16 / bfloat16 / float32",
    "max_shard_size": "split saved weights into shards of at most this size (e.g. 15MB)",
}


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .train_config import TrainConfig

    p.add_argument("--config", help="a training config JSON (train.json); options given here override it")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "data_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f"{TRAIN_HELP[f.name]} (default: {default})"
        if f.name in ("train_files", "test_files", "id_tasks"):
            p.add_argument(flag, nargs="+", default=None, help=help_)
        elif isinstance(default, bool):
            p.add_argument(flag, type=_bool, nargs="?", const=True, default=None, help=help_)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            if f.name in ("head_lr",):
                kind = float
            p.add_argument(flag, type=kind, default=None, help=help_)


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
    _add_train_options(p)

    p = sub.add_parser("calibrate", help="fit one routing offset per LLM on training data (after training)")
    common(p)
    p.add_argument("--checkpoint", required=True, help="router folder")
    p.add_argument("--train-files", nargs="+",
                   help="score files to fit on (default: the router's training files, from its recipe)")
    p.add_argument("--output", help="router folder to write (default: rewrite --checkpoint's config.json "
                                    "in place, atomically; the weights are not touched)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")

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
    p.add_argument("--no-cache", action="store_true",
                   help="do not cache the routers' test-query embeddings (keyed by the weights' SHA-256) "
                        "in $ROUTERDC_CACHE or ~/.cache/routerdc")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    p.add_argument("--output", help="write the table as JSON here")
    p.add_argument("--markdown", help="write the table as markdown here")

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
    p.add_argument("--batch-size", type=int, default=64, help="queries per forward pass (default: 64)")
    p.add_argument("--temperature", type=float, help="override the router's tau")
    p.add_argument("--cost-weight", type=float, default=0.0, metavar="LAMBDA",
                   help="trade quality for cost: softmax((sim + b - LAMBDA * c) / tau), c the LLMs' costs scaled to "
                        "[0, 1]; needs a router with costs (default 0: no cost term)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--int8", action="store_true",
                   help="CPU only: int8 dynamic quantization of the encoder (about 1.4x faster; "
                        "argmax agreement with fp32 96.6%% for the shipped router, see README)")

    from .serving.server import add_serve_arguments  # light: argparse only

    add_serve_arguments(sub.add_parser("serve", help="the routed OpenAI-compatible API (/v1/chat/completions)"))
    from .serving.launcher import add_serve_llms_arguments

    add_serve_llms_arguments(sub.add_parser("serve-llms", help="launch a vLLM server per 'vllm' candidate"))
    from .cli_fleet import add_fleet_commands

    add_fleet_commands(sub)
    return parser


def _train_config(args: argparse.Namespace) -> Any:
    from .data import paper_files
    from .train_config import TrainConfig

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
    from .cluster import assign_clusters
    from .data import load_many, resolve_file, write_jsonl
    from .model import RouterDC

    sets = load_many([resolve_file(f, args.data_dir) for f in args.input], missing=args.missing)
    model = RouterDC.build(sets[0].llms, encoder=args.encoder, pooling=args.pooling)
    sets = assign_clusters(sets, model, args.n_clusters, reduce=args.reduce, seed=args.seed)
    write_jsonl(sets, args.output)
    sizes = {int(c): int((s.clusters == c).sum()) for s in sets for c in set(s.clusters.tolist())}  # type: ignore[union-attr]
    print(f"wrote {sum(len(s) for s in sets)} rows to {args.output}; cluster sizes (last task) {sizes}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = _train_config(args)

    def log_eval(step: int, losses: dict[str, float], metrics: dict[str, float] | None) -> None:
        if metrics is not None:  # one line per evaluation, also when no progress bar is shown
            avg = {k: round(v, 2) for k, v in metrics.items() if k.endswith("avg")}
            print(f"step {step}: loss {losses['total']:.4f} {avg}", file=sys.stderr, flush=True)

    result = train(cfg, progress=True, on_step=log_eval)
    status = "cancelled" if result.cancelled else "done"
    print(json.dumps({"status": status, "output_dir": str(result.output_dir), "best_step": result.best_step,
                      "best_score": result.best_score, "metrics": result.best_metrics,
                      "calibration": result.calibration,
                      "seconds": round(result.seconds, 1)}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibration import calibrate_checkpoint
    from .checkpoint import read_config
    from .data import load_many, resolve_file

    files = args.train_files or read_config(args.checkpoint).get("recipe", {}).get("train_files")
    if not files:
        raise ValueError(f"{args.checkpoint}: its recipe names no training files; give --train-files")
    sets = load_many([resolve_file(f, args.data_dir) for f in files], missing=args.missing)
    result = calibrate_checkpoint(args.checkpoint, sets, output=args.output)
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
    from .compare import (add_paper_row, aggregate_seeds, baseline_choices, comparison_table,
                          router_choices, to_markdown_pm)
    from .data import load_many, paper_files, resolve_file
    from .embed_cache import embedding_key
    from .evaluate import to_json
    from .model import RouterDC

    specs = _parse_routers(args)
    first_dir = next(iter(specs.values()))[0]
    first = RouterDC.from_pretrained(first_dir)
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
            router = first if d == first_dir else RouterDC.from_pretrained(d)
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

    from .model import RouterDC

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
    from .data import read_queries
    from .model import RouterDC

    queries = read_queries(args.input)
    router = RouterDC.from_pretrained(args.checkpoint, device=args.device)
    if args.int8:
        from .quantize import quantize_int8

        router = quantize_int8(router)
    routing = router.route(queries, batch_size=args.batch_size, temperature=args.temperature,
                           cost_weight=args.cost_weight)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in routing.records(queries):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)
    print(f"routed {len(queries)} queries to {args.output}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.server import cmd_serve as serve

    return serve(args)


def cmd_serve_llms(args: argparse.Namespace) -> int:
    from .serving.launcher import cmd_serve_llms as serve_llms

    return serve_llms(args)


COMMANDS = {"cluster": cmd_cluster, "train": cmd_train, "calibrate": cmd_calibrate, "evaluate": cmd_evaluate, "export": cmd_export,
            "route": cmd_route,
            "serve": cmd_serve, "serve-llms": cmd_serve_llms}
COMMANDS.update(FLEET_COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    from .checkpoint import CheckpointError
    from .data import DataError
    from .encoder import EncoderError

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
