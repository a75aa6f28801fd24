"""Training throughput on CPU: the naive way vs ours, measured in one run.

Both variants take real training steps on the real MiniLM encoder: the balanced paper training
data (5 tasks x 1000 rows, cluster ids as groups), the RouterDC loss
(``routerdc.model.losses.router_loss`` with the paper's defaults) and AdamW (lr 5e-5, weight decay 0.01):

  (a) naive: every query padded to 512 tokens, random batches, attention dropout on (the
      encoder config's 0.1, as the official code trains);
  (b) ours: dynamic padding, length-grouped batches (``length_grouped_batches``, window 4),
      attention dropout off (``RouterDC.build``'s default).

Each variant runs in its own subprocess, one after the other (``--rounds`` alternates them), so
that each one's peak RSS (``ru_maxrss`` of the process) is its own. A step is timed from drawing
the batch (collation included) to the end of ``optimizer.step()``; warm-up steps are not timed.
A naive step costs the same whatever the batch (always batch x 512 tokens), so a few steps do
(``--steps``); ours depends on the lengths drawn, so it is averaged over more (``--ours-steps``),
and the padded tokens per step of the timed steps are reported beside their mean over a whole
epoch of the same batch order, to show how representative the timed steps were.

    python bench/train_speed.py [--batch-size 16] [--steps 3] [--ours-steps 30] [--warmup 1]

Prints a table and writes JSON (default ``bench/results/train_speed.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from machine import machine_info, write_report  # bench/machine.py; the script's folder is on sys.path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "train_speed.json"
VARIANTS = {
    "naive_pad512_random_dropout": {"pad_to_max": True, "window": 1, "attention_dropout": True},
    "ours_dynamic_grouped_nodropout": {"pad_to_max": False, "window": 4, "attention_dropout": False},
}


def _maxrss_mb(who: int) -> float:
    """Peak resident set size in MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(who).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run one variant in this process and return its measurements."""
    import numpy as np
    import torch

    from routerdc.train.batching import Collator, length_grouped_batches, pretokenize
    from routerdc.data import balance, load_many, paper_files
    from routerdc.model.losses import router_loss
    from routerdc.model.router import RouterDC
    from routerdc.train.config import TrainConfig

    spec = VARIANTS[variant]
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(batch_size=args.batch_size, seed=args.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    sets = balance(load_many(paper_files(args.data_dir)[0]), cfg.samples_per_task)
    texts = [q for s in sets for q in s.queries]
    scores = torch.as_tensor(np.concatenate([s.scores for s in sets]), dtype=torch.float32)
    groups = torch.as_tensor(np.concatenate([s.clusters for s in sets]))
    model = RouterDC.build(sets[0].llms, seed=cfg.seed, attention_dropout=spec["attention_dropout"],
                           max_length=cfg.max_length)
    prepare = getattr(model, "prepare_texts", list)  # the configured text normalisation, if any
    ids = pretokenize(model.tokenizer, prepare(texts), cfg.max_length)
    lengths = [len(x) for x in ids]
    tok = model.tokenizer
    if spec["pad_to_max"]:
        def collate(index: Sequence[int]) -> dict[str, torch.Tensor]:
            enc = tok.pad({"input_ids": [ids[i] for i in index]}, padding="max_length",
                          max_length=cfg.max_length, return_tensors="pt")
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    else:
        collate = Collator(tok, ids)
    batches = length_grouped_batches(lengths, cfg.batch_size, window=spec["window"], generator=gen)
    # The padded tokens per step over one epoch of the same batch order (a copy of the generator).
    epoch_gen = torch.Generator().manual_seed(cfg.seed)
    epoch_gen.set_state(gen.get_state())
    epoch = length_grouped_batches(lengths, cfg.batch_size, window=spec["window"], generator=epoch_gen)
    per_epoch = len(lengths) // min(cfg.batch_size, len(lengths))
    epoch_tokens = float(np.mean([
        len(b) * (cfg.max_length if spec["pad_to_max"] else max(lengths[i] for i in b))
        for b in (next(epoch) for _ in range(per_epoch))
    ]))
    n_steps = args.steps if spec["pad_to_max"] else args.ours_steps
    head = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    optim = torch.optim.AdamW([{"params": head, "lr": cfg.effective_head_lr},
                               {"params": list(model.encoder.parameters()), "lr": cfg.lr}],
                              weight_decay=cfg.weight_decay)
    model.train()
    rss_setup = _maxrss_mb(resource.RUSAGE_SELF)

    steps = []
    for step in range(args.warmup + n_steps):
        t0 = time.perf_counter()
        index = next(batches)
        batch = collate(index)
        optim.zero_grad(set_to_none=True)
        logits, emb = model(**batch)
        loss = router_loss(logits.float(), scores[index], emb.float(), groups[index], k_pos=cfg.k_pos,
                           k_neg=cfg.k_neg, neg_threshold=cfg.neg_threshold, lam=cfg.lam, n_neg=cfg.n_neg,
                           ss_temperature=cfg.ss_temperature, generator=gen)
        loss.total.backward()
        optim.step()
        seconds = time.perf_counter() - t0
        if not np.isfinite(float(loss.total.detach())):
            raise FloatingPointError(f"non-finite loss at step {step}")
        steps.append({"seconds": seconds, "warmup": step < args.warmup, "batch": len(index),
                      "padded_length": int(batch["input_ids"].shape[1]),
                      "real_tokens": int(batch["attention_mask"].sum()), "loss": float(loss.total.detach())})
        print(f"  {variant}: step {step + 1}{' (warm-up)' if step < args.warmup else ''} "
              f"{seconds:.2f} s, padded to {steps[-1]['padded_length']}", file=sys.stderr, flush=True)
    timed = [s for s in steps if not s["warmup"]]
    total = sum(s["seconds"] for s in timed)
    enc_cfg = model.encoder.config
    return {
        "variant": variant, **spec,
        "attention_dropout_prob": float(getattr(enc_cfg, "attention_probs_dropout_prob", float("nan"))),
        "attn_implementation": getattr(enc_cfg, "_attn_implementation", None),
        "samples_per_s": sum(s["batch"] for s in timed) / total,
        "s_per_step": total / len(timed),
        "padded_tokens_per_step": float(np.mean([s["batch"] * s["padded_length"] for s in timed])),
        "padded_tokens_per_step_epoch_mean": epoch_tokens, "timed_steps": len(timed),
        "real_tokens_per_step": float(np.mean([s["real_tokens"] for s in timed])),
        "rss_after_setup_mb": rss_setup, "rss_peak_mb": _maxrss_mb(resource.RUSAGE_SELF),
        "torch_threads": torch.get_num_threads(), "steps": steps,
    }


def run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--ours-steps", str(args.ours_steps), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--seed", str(args.seed)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} failed with exit status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - t0
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"training speed: batch {args.batch_size}, {args.warmup} warm-up + {args.steps} (naive) / {args.ours_steps} "
          f"(ours) timed steps, "
          f"{args.rounds} round(s); torch {info['torch']}, {info['torch_threads']} threads, {info['cpu_count']} CPUs",
          flush=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            runs[name].append(run_child(name, args))
    results = {}
    for name, rs in runs.items():
        best = max(rs, key=lambda x: x["samples_per_s"])  # the least disturbed round
        results[name] = {**best, "samples_per_s_rounds": [x["samples_per_s"] for x in rs],
                         "rss_peak_mb_rounds": [x["rss_peak_mb"] for x in rs]}
    naive, ours = (results[n] for n in VARIANTS)
    return {
        "benchmark": "train_speed",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *args.argv]),
        "machine": info, "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "settings": {"batch_size": args.batch_size, "steps": args.steps, "ours_steps": args.ours_steps,
                     "warmup": args.warmup,
                     "rounds": args.rounds, "seed": args.seed, "samples_per_task": 1000, "max_length": 512,
                     "data": "paper training files (split2_model7_cluster), balanced to 1000 rows per task"},
        "variants": results,
        "ratio": {"samples_per_s": ours["samples_per_s"] / naive["samples_per_s"],
                  "s_per_step_speedup": naive["s_per_step"] / ours["s_per_step"],
                  "rss_peak": ours["rss_peak_mb"] / naive["rss_peak_mb"],
                  "rss_training_increment": ((ours["rss_peak_mb"] - ours["rss_after_setup_mb"])
                                             / max(naive["rss_peak_mb"] - naive["rss_after_setup_mb"], 1e-9)),
                  "padded_tokens_per_step": ours["padded_tokens_per_step"] / naive["padded_tokens_per_step"]},
    }


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"\nTraining speed on CPU, batch {s['batch_size']}, {s['steps']} (naive) / {s['ours_steps']} (ours) timed "
          f"steps after {s['warmup']} warm-up, {report['machine']['torch_threads']} threads")
    print(f"{'variant':32s} {'samples/s':>10s} {'s/step':>8s} {'tokens/step':>12s} {'(epoch)':>8s} {'RSS setup':>10s} "
          f"{'RSS peak':>9s}")
    for name, r in report["variants"].items():
        print(f"{name:32s} {r['samples_per_s']:10.2f} {r['s_per_step']:8.2f} {r['padded_tokens_per_step']:12.0f} "
              f"{r['padded_tokens_per_step_epoch_mean']:8.0f} {r['rss_after_setup_mb']:8.0f}MB "
              f"{r['rss_peak_mb']:7.0f}MB")
    q = report["ratio"]
    print(f"ratio ours/naive: samples/s x{q['samples_per_s']:.2f}, "
          f"padded tokens per step x{q['padded_tokens_per_step']:.3f}, peak RSS x{q['rss_peak']:.2f} (training increment x{q['rss_training_increment']:.2f})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps of the naive variant")
    p.add_argument("--ours-steps", type=int, default=30, help="timed steps of ours (their cost varies with the batch)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--rounds", type=int, default=1, help="runs per variant, alternating; the best counts")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="score data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    p.add_argument("--child", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_size < 2 or min(args.steps, args.ours_steps, args.rounds) < 1 or args.warmup < 0:
        p.error("need --batch-size >= 2, --steps, --ours-steps, --rounds >= 1 and --warmup >= 0")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)), flush=True)
        return None
    report = run(args)
    print_report(report)
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
