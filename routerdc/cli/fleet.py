"""``python -m routerdc add-llm`` and ``remove-llm``: change a router's fleet without retraining the
encoder (see :mod:`routerdc.train.fleet`). Registered by :mod:`routerdc.cli.main`; argparse only at import."""

from __future__ import annotations

import argparse
import json
from typing import Any

from routerdc.data.registry import DATA_ENV


def add_fleet_commands(sub: Any) -> None:
    """Add the ``add-llm`` and ``remove-llm`` sub-commands to ``sub`` (an argparse sub-parsers object)."""
    p = sub.add_parser("add-llm", help="add a candidate LLM: fit only its key (encoder and other keys frozen), "
                                       "then refit the offsets")
    _common(p)
    p.add_argument("--llm", required=True, help="name of the LLM to add (its score column in the files)")
    p.add_argument("--scores", nargs="+", required=True,
                   help="score files with a column for every LLM of the router plus the new one")
    p.add_argument("--steps", type=int, default=300, help="Adam steps on the new key (full batches; default 300)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate, relative to the key's norm (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of random tie-breaking, if the recipe uses it")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="select the key on this seeded fraction of each score file's rows, held out of its fit "
                        "(default 0: on all rows; 0.2 did worse on the paper's data, see README)")

    p = sub.add_parser("remove-llm", help="remove a candidate LLM (its key and offset), then refit the others' offsets")
    _common(p)
    p.add_argument("--llm", required=True, help="name of the LLM to remove")
    p.add_argument("--scores", nargs="+",
                   help="score files to refit the offsets on (default: the router's training files, from its recipe)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=f"score-data directory (default: ${DATA_ENV} or ../shared/data)")
    p.add_argument("--checkpoint", required=True, help="router folder to start from")
    p.add_argument("--output", required=True, help="router folder to write (atomically)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    p.add_argument("--cache-dir", help="embedding cache (default: $ROUTERDC_CACHE or ~/.cache/routerdc)")


def _sets(files: list[str], args: argparse.Namespace) -> list:
    from routerdc.data import load_many, resolve_file

    return load_many([resolve_file(f, args.data_dir) for f in files], missing=args.missing)


def cmd_add_llm(args: argparse.Namespace) -> int:
    from routerdc.train.fleet import add_llm

    change = add_llm(args.checkpoint, args.llm, _sets(args.scores, args), output=args.output,
                     cache_dir=args.cache_dir, steps=args.steps, lr=args.lr, seed=args.seed,
                     holdout=args.holdout)
    print(json.dumps(change.to_dict(), indent=2))
    return 0


def cmd_remove_llm(args: argparse.Namespace) -> int:
    from routerdc.checkpoint import read_config
    from routerdc.train.fleet import remove_llm

    files = args.scores or read_config(args.checkpoint).get("recipe", {}).get("train_files")
    if not files:
        raise ValueError(f"{args.checkpoint}: its recipe names no training files; give --scores")
    change = remove_llm(args.checkpoint, args.llm, _sets(list(files), args), output=args.output,
                        cache_dir=args.cache_dir)
    print(json.dumps(change.to_dict(), indent=2))
    return 0
