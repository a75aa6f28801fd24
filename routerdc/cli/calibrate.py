"""``calibrate``: fit one routing offset per LLM, then the temperature, on training data, after training."""

from __future__ import annotations

import argparse
import json
from typing import Any

from routerdc.cli.common import data_dir_argument, engine_arguments


def add_calibrate_command(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="fit one routing offset per LLM, then the temperature, on training data "
                                         "(after training)")
    data_dir_argument(p)
    p.add_argument("--checkpoint", required=True, help="router folder")
    p.add_argument("--train-files", nargs="+",
                   help="score files to fit on (default: the router's training files, from its recipe)")
    p.add_argument("--output", help="router folder to write (default: rewrite --checkpoint's config.json "
                                    "in place, atomically; the weights are not touched)")
    p.add_argument("--missing", default="error", choices=("error", "drop", "zero"), help="rows with absent scores")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--no-temperature", dest="temperature", action="store_false",
                       help="fit only the offsets, not the temperature that calibrates the probabilities")
    which.add_argument("--temperature-only", action="store_true",
                       help="keep the router's offsets and fit only the temperature (no choice changes)")
    p.add_argument("--novelty-quantile", type=float, default=0.05,
                   help="also fit the novelty fallback at this quantile (default 0.05; 0: none, and an existing one "
                        "is removed; see routerdc.novelty)")
    engine_arguments(p)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from routerdc.train.calibration import calibrate_checkpoint
    from routerdc.inference import default_engine
    from routerdc.checkpoint import read_config
    from routerdc.data import load_many, resolve_file

    files = args.train_files or read_config(args.checkpoint).get("recipe", {}).get("train_files")
    if not files:
        raise ValueError(f"{args.checkpoint}: its recipe names no training files; give --train-files")
    sets = load_many([resolve_file(f, args.data_dir) for f in files], missing=args.missing)
    if args.temperature_only:
        from routerdc.train.calibration import calibrate_temperature

        fit = calibrate_temperature(args.checkpoint, sets, output=args.output, engine=args.engine or default_engine())
        print(json.dumps({"output": args.output or args.checkpoint, "temperature": fit.to_dict()}, indent=2))
        return 0
    result = calibrate_checkpoint(args.checkpoint, sets, output=args.output, engine=args.engine or default_engine(),
                                  remeasure=args.remeasure, temperature=args.temperature,
                                  novelty=args.novelty_quantile or None)
    out = args.output or args.checkpoint
    cal = read_config(out).get("calibration") or {}
    extra = {k: cal[k] for k in ("temperature", "novelty") if cal.get(k)}
    print(json.dumps({"output": out, **result.to_dict(), **extra}, indent=2))
    return 0
