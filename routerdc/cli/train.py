"""``cluster`` and ``train``: cluster ids for training queries, and training a router. Its options come
from :class:`~routerdc.train.config.TrainConfig`, one per field, with the help text kept in the field's
metadata (a field without one is an error at ``--help``, caught by the tests). ``--resume`` and
``--keep-resume`` are flags of the command, not of the recipe: a run stopped by Ctrl-C (after its current
step) or killed continues from ``<output-dir>.resume`` (:mod:`routerdc.train.resume`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from typing import Any

from routerdc.cli.common import data_dir_argument


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_train_options(p: argparse.ArgumentParser) -> None:
    from routerdc.train.config import TrainConfig

    p.add_argument("--config", help="a training config JSON, or a router folder / its config.json to retrain it from "
                                    "its recipe; options given here override it")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("extra", "data_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if "help" not in f.metadata:
            raise TypeError(f"TrainConfig.{f.name} has no help text in its metadata (routerdc/train/config.py)")
        help_ = f"{f.metadata['help']} (default: {default})"
        if f.name in ("train_files", "test_files", "id_tasks"):
            p.add_argument(flag, nargs="+", default=None, help=help_)
        elif isinstance(default, bool):
            p.add_argument(flag, type=_bool, nargs="?", const=True, default=None, help=help_)
        else:
            kind = {int: int, float: float}.get(type(default), str)
            if f.name in ("head_lr",):
                kind = float
            p.add_argument(flag, type=kind, default=None, help=help_)


def add_cluster_command(sub: Any) -> None:
    p = sub.add_parser("cluster", help="k-means cluster ids for training queries, written as JSONL")
    data_dir_argument(p)
    p.add_argument("--input", nargs="+", required=True, help="score files to cluster together")
    p.add_argument("--output", required=True, help="output JSONL file (our format, with 'cluster')")
    p.add_argument("--n-clusters", type=int, default=5, help="number of clusters (default: 5)")
    p.add_argument("--reduce", default="none", choices=("none", "pca", "tsne"),
                   help="reduction before k-means (the paper used tsne; default: none)")
    p.add_argument("--encoder", default="all-MiniLM-L6-v2", help="encoder whose embeddings are clustered")
    p.add_argument("--pooling", default="cls", choices=("cls", "mean"), help="pooling (default: cls)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    p.add_argument("--seed", type=int, default=0, help="seed of the reduction and k-means")


def add_train_command(sub: Any) -> None:
    p = sub.add_parser("train", help="train a router with the dual contrastive losses")
    data_dir_argument(p)
    add_train_options(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the router already in --output-dir from the first evaluation on; without it a new "
                        "run replaces that router only with a better one (by the selection rule), and refuses a "
                        "folder that holds something else; also discards a resume state left by an earlier run")
    p.add_argument("--resume", action="store_true",
                   help="continue the run stopped (cancelled, killed) with this recipe from its resume state in "
                        "<output-dir>.resume; give the same options (only --steps, to extend the run, --eval-every, "
                        "--device and --cache-dir may change)")
    p.add_argument("--keep-resume", action="store_true",
                   help="keep the resume state also when the run finishes all its steps (to extend it later with "
                        "--resume --steps N); by default a finished run removes it")


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
    from routerdc.train.resume import ResumeError
    from routerdc.train.trainer import train

    cfg = _train_config(args)

    def log_eval(step: int, losses: dict[str, float], metrics: dict[str, float] | None) -> None:
        if metrics is not None:  # one line per evaluation, also when no progress bar is shown
            avg = {k: round(v, 2) for k, v in metrics.items() if k.endswith("avg")}
            print(f"step {step}: loss {losses['total']:.4f} {avg}", file=sys.stderr, flush=True)

    cancel = threading.Event()

    def on_interrupt(signum: int, frame: Any) -> None:  # the first Ctrl-C stops after the step, resumably
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("stopping after the current step; continue later with --resume (Ctrl-C again aborts)",
              file=sys.stderr, flush=True)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if main_thread else None
    try:
        result = train(cfg, progress=True, on_step=log_eval, overwrite=args.overwrite, resume=args.resume,
                       keep_resume=args.keep_resume, cancel=cancel)
    except ValueError as exc:
        if not isinstance(exc, ResumeError) and "--overwrite" not in str(exc):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGINT, previous)
    status = "cancelled" if result.cancelled else "done"
    if result.cancelled and result.resume_dir is not None:
        print(f"cancelled after step {result.steps_done}; the resume state is in {result.resume_dir}: run the same "
              "command with --resume to continue", file=sys.stderr)
    if result.kept_existing is not None:
        status = "kept-existing"
        print(f"kept the router already in {cfg.output_dir}: its {cfg.select_by} score {result.kept_existing:.2f} "
              f"was not beaten by this run (pass --overwrite to replace it anyway)", file=sys.stderr)
    print(json.dumps({"status": status, "output_dir": str(result.output_dir), "best_step": result.best_step,
                      "best_score": result.best_score, "metrics": result.best_metrics,
                      "calibration": result.calibration, "resumed_from": result.resumed_from,
                      "resume_state": None if result.resume_dir is None else str(result.resume_dir),
                      "seconds": round(result.seconds, 1)}, indent=2))
    return 0
