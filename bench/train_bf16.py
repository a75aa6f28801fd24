"""Training on CPU in fp32 against bf16 autocast (fp32 master weights), in one run.

Two copies of the same fresh router (real MiniLM, the paper's 7 LLMs) train side by side on the
same balanced paper training data, the same batches (length-grouped, dynamic padding, as the
trainer does) and the same RouterDC loss and AdamW settings; their steps alternate, so background
load hits both alike. One copy runs in fp32, the other under ``torch.autocast("cpu", bfloat16)``
(what ``TrainConfig(cpu_bf16=True)`` does on a CPU with AMX-BF16 or AVX512-BF16). Reported:
samples/s of each, the bf16/fp32 ratio, both loss curves and their gap against the step-to-step
noise of the fp32 curve.

    python bench/train_bf16.py [--steps 50] [--batch-size 16]

Prints a summary and writes JSON (default ``bench/results/train_bf16.json``).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from machine import machine_info, write_report  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "train_bf16.json"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from routerdc.train.batching import Collator, length_grouped_batches, pretokenize
    from routerdc.data import balance, load_many, paper_files
    from routerdc.inference.features import cpu_features
    from routerdc.model.losses import router_loss
    from routerdc.model.router import RouterDC
    from routerdc.train.config import TrainConfig

    info = machine_info()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(batch_size=args.batch_size, seed=args.seed)
    sets = balance(load_many(paper_files(args.data_dir)[0]), cfg.samples_per_task)
    texts = [q for s in sets for q in s.queries]
    scores = torch.as_tensor(np.concatenate([s.scores for s in sets]), dtype=torch.float32)
    groups = torch.as_tensor(np.concatenate([s.clusters for s in sets]))
    base = RouterDC.build(sets[0].llms, seed=cfg.seed, max_length=cfg.max_length)
    ids = pretokenize(base.tokenizer, base.prepare_texts(texts), cfg.max_length)
    collate = Collator(base.tokenizer, ids)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = length_grouped_batches([len(x) for x in ids], cfg.batch_size, window=cfg.length_window, generator=gen)
    order = [next(batches) for _ in range(args.warmup + args.steps)]
    runs = {}
    for name in ("fp32", "bf16"):
        model = copy.deepcopy(base).train()
        head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
        optim = torch.optim.AdamW([{"params": head, "lr": cfg.effective_head_lr},
                                   {"params": list(model.encoder.parameters()), "lr": cfg.lr}],
                                  weight_decay=cfg.weight_decay)
        runs[name] = {"model": model, "optim": optim, "gen": torch.Generator().manual_seed(cfg.seed),
                      "loss": [], "seconds": [], "samples": 0}
    for step, index in enumerate(order):
        batch = collate(index)
        for name, r in runs.items():
            t0 = time.perf_counter()
            r["optim"].zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                logits, emb = r["model"](**batch)
            loss = router_loss(logits.float(), scores[index], emb.float(), groups[index], k_pos=cfg.k_pos,
                               k_neg=cfg.k_neg, neg_threshold=cfg.neg_threshold, lam=cfg.lam, n_neg=cfg.n_neg,
                               ss_temperature=cfg.ss_temperature, generator=r["gen"])
            loss.total.backward()
            r["optim"].step()
            dt = time.perf_counter() - t0
            if step >= args.warmup:
                r["seconds"].append(dt)
                r["samples"] += len(index)
            r["loss"].append(float(loss.total.detach()))
        print(f"  step {step + 1}: fp32 {runs['fp32']['loss'][-1]:.4f}, bf16 {runs['bf16']['loss'][-1]:.4f}",
              file=sys.stderr, flush=True)
    out = {n: {"samples_per_s": r["samples"] / sum(r["seconds"]), "s_per_step": float(np.mean(r["seconds"])),
               "loss": r["loss"]} for n, r in runs.items()}
    f32, b16 = np.asarray(out["fp32"]["loss"]), np.asarray(out["bf16"]["loss"])
    noise = float(np.std(np.diff(f32)))  # step-to-step variation of the fp32 curve
    tail = slice(-10, None)
    return {
        "cpu": cpu_features().summary(), "cpu_has_bf16": cpu_features().bf16, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "runs": out,
        "bf16_over_fp32_samples_per_s": out["bf16"]["samples_per_s"] / out["fp32"]["samples_per_s"],
        "loss_gap_mean_abs": float(np.mean(np.abs(f32 - b16))), "loss_gap_max_abs": float(np.max(np.abs(f32 - b16))),
        "fp32_step_noise_std": noise,
        "last10_mean": {"fp32": float(f32[tail].mean()), "bf16": float(b16[tail].mean())},
        "machine": {"start": info, "end": machine_info()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/train_bf16.py " + " ".join(sys.argv[1:]),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps (their losses are kept)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    r = run(args)
    print(f"bf16/fp32 samples/s: {r['bf16_over_fp32_samples_per_s']:.2f} "
          f"(fp32 {r['runs']['fp32']['samples_per_s']:.1f}, bf16 {r['runs']['bf16']['samples_per_s']:.1f}); "
          f"loss gap mean {r['loss_gap_mean_abs']:.4f} max {r['loss_gap_max_abs']:.4f} vs fp32 step noise "
          f"{r['fp32_step_noise_std']:.4f}; last 10 steps {r['last10_mean']}")
    write_report(r, args.output)
    return r


if __name__ == "__main__":
    main()
