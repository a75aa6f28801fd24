"""``export``: re-save a router, e.g. as fp16 safetensors shards, with its one recipe updated."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_export_command(sub: Any) -> None:
    p = sub.add_parser("export", help="re-save a router, e.g. as fp16 safetensors shards (to ship or upload)")
    p.add_argument("--checkpoint", required=True, help="router folder to read")
    p.add_argument("--output", required=True, help="router folder to write (atomically)")
    p.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"),
                   help="weight dtype (default: float16, half the size)")
    p.add_argument("--max-shard-size", default="15MB", help="largest safetensors shard (default: 15MB)")
    p.add_argument("--train-config", help="a training config JSON to record as the exported router's recipe "
                                          "(default: the router's own recipe)")


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from routerdc.model.router import RouterDC

    router = RouterDC.from_pretrained(args.checkpoint)
    meta = router.meta
    recipe = dict(meta.recipe)
    if args.train_config:  # the recipe to record instead of the trained one
        recipe = {**json.loads(Path(args.train_config).read_text(encoding="utf-8")),
                  **({"train_tasks": recipe["train_tasks"]} if "train_tasks" in recipe else {})}
    # The one recipe retrains this router as exported: its dtype and shards are the export's.
    recipe.update(save_dtype=args.dtype, max_shard_size=args.max_shard_size, output_dir=str(args.output))
    folder = router.save_pretrained(
        args.output, include_encoder=meta.included, recipe=recipe, metrics=meta.metrics,
        dtype=getattr(torch, args.dtype), max_shard_size=args.max_shard_size,
        extra_meta={**({"calibration": meta.calibration} if meta.calibration is not None else {}), **meta.extra})
    size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 2**20:.1f} MiB, {args.dtype})")
    return 0
