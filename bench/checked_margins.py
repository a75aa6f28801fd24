"""How much fp32 work ``torch-bf16-checked`` needs, and whether it routes like fp32 (no timing).

On ``auto``'s probe set (``--probe-per-task`` queries of each paper test set) the bf16 error of
every score difference gives the bounds (:func:`routerdc.inference.checked.bounds_from_errors`);
then on the held-out sample of ``bench/route_speed.py`` (``--n-per-task`` of each test set, same
seed) it reports, per task: the share of queries the checked engine re-encodes in fp32, with the
per-pair bounds and with one bound for all pairs (the largest), and the agreement with fp32 of
plain bf16 and of the checked engine. Counts only, so the figures do not depend on the load.

    python bench/checked_margins.py [--checkpoint DIR] [--n-per-task 128] [--probe-per-task 32]

Prints a table and writes JSON (default ``bench/results/checked_margins.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from routerdc.inference.checked import SAFETY, measured_bounds, near_tie_mask, pair_errors  # noqa: E402
from routerdc.inference.select import probe_texts  # noqa: E402
from routerdc.model.router import RouterDC  # noqa: E402
from routerdc.routing import route_embeddings  # noqa: E402

from machine import machine_info, write_report  # noqa: E402
from route_speed import SHIPPED, sample_queries  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "checked_margins.json"


def embed_both(model: RouterDC, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """fp32 and bf16-autocast embeddings of ``texts``."""
    fp32 = model.embed_texts(list(texts))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = model.embed_texts(list(texts))
    return fp32, bf16


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = RouterDC.from_pretrained(args.checkpoint or SHIPPED).eval()
    keys, cfg = model.llm_keys(), model.config
    probe, probe_desc = probe_texts(args.data_dir, args.probe_per_task)
    p32, p16 = embed_both(model, probe)
    bank = model.novelty_bank  # the novelty fallback's training queries (None without it)
    f16, f32 = route_embeddings(p16, keys, cfg, bank=bank), route_embeddings(p32, keys, cfg, bank=bank)
    errors = pair_errors(f16, f32)  # reported; the bounds are the checked engine's own
    bounds, nov = measured_bounds(f16, f32, args.safety)
    one = np.full_like(bounds, bounds.max())
    np.fill_diagonal(one, 0.0)
    queries, tasks, _ = sample_queries(args.n_per_task, args.seed, args.data_dir)
    e32, e16 = embed_both(model, queries)
    ref = route_embeddings(e32, keys, cfg, bank=bank)
    fast = route_embeddings(e16, keys, cfg, temperature=1.0, bank=bank)  # tau 1, as the checked engine: gaps in score units
    out: dict[str, Any] = {}
    for name, b in (("per-pair bounds", bounds), ("one bound", one)):
        near = near_tie_mask(fast, b, nov)
        emb = e16.copy()
        emb[near] = e32[near]
        got = route_embeddings(emb, keys, cfg, bank=bank)
        t = np.asarray(tasks)
        out[name] = {task: {"rechecked": float(near[t == task].mean()),
                            "agreement": float(np.mean(got.choice[t == task] == ref.choice[t == task]))}
                     for task in sorted(set(tasks))}
        out[name]["all"] = {"rechecked": float(near.mean()), "agreement": float(np.mean(got.choice == ref.choice))}
    t = np.asarray(tasks)
    bf16 = {task: float(np.mean(fast.choice[t == task] == ref.choice[t == task])) for task in sorted(set(tasks))}
    bf16["all"] = float(np.mean(fast.choice == ref.choice))
    return {"probe": probe_desc, "n_queries": len(queries), "safety": args.safety,
            "pair_errors": errors.tolist(), "bounds": bounds.tolist(), "novelty_bound": nov, "bf16_agreement": bf16, "checked": out,
            "machine": machine_info(), "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/checked_margins.py " + " ".join(sys.argv[1:])}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="router folder (default: the shipped one)")
    p.add_argument("--n-per-task", type=int, default=128)
    p.add_argument("--probe-per-task", type=int, default=32, help="auto's probe size per task (its default: 32)")
    p.add_argument("--safety", type=float, default=SAFETY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    r = run(args)
    print(f"{r['n_queries']} queries; bounds from {r['probe']}; largest pair error {max(map(max, r['pair_errors'])):.2e}")
    print(f"{'task':15s} {'bf16 agrees':>12s} " + " ".join(f"{n + ': fp32 / agrees':>30s}" for n in r["checked"]))
    for task in r["bf16_agreement"]:
        print(f"{task:15s} {r['bf16_agreement'][task]:12.2%} " + " ".join(
            f"{v[task]['rechecked']:>20.1%} / {v[task]['agreement']:.2%}" for v in r["checked"].values()))
    write_report(r, args.output)
    return r


if __name__ == "__main__":
    main()
