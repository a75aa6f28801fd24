"""Routing under concurrent requests: the routed API's decision path with micro-batching on/off.

Each client is a thread that, like a request of the routed API (``routerdc.serving.api``, which
routes in a worker thread), routes one query at a time through ``MicroBatcher.route`` over
``load_router(ckpt)`` and sends the next as soon as it has the answer. Real test queries (the
8 paper test sets, shuffled). For 1, 8 and 32 clients, with micro-batching on and off: the
throughput (routed queries/s) and the p50/p95 latency of a routing decision. HTTP and the
candidate LLM's generation are left out: they do not depend on micro-batching.

The physical bound, measured in the same run: the bare encoder (transformers forward on
pre-tokenised queries, no routing) at batch 1 against its best batched throughput (length-sorted
batches of 16 and a token budget of 4096) on the same queries, in fp32 and (where the CPU has it)
bf16. Micro-batching can multiply one client's throughput by at most that ratio (less: 32
concurrent queries are not sorted by length), so a ratio below 4 means the 4x target cannot be
met on this machine.

    python bench/api_speed.py [--checkpoint DIR] [--engine auto] [--seconds 8] [--windows-ms 0 2]
                              [--pad-ratios 1.5 1000]

Prints a table and writes JSON (default ``bench/results/api_speed.json``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from routerdc.data import paper_files, read_queries  # noqa: E402
from routerdc.inference import load_router  # noqa: E402
from routerdc.serving.batcher import BatchConfig, MicroBatcher  # noqa: E402

from machine import machine_info, write_report  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "api_speed.json"


def load(n: int, seed: int, data_dir: str | None) -> list[str]:
    qs = [q for p in paper_files(data_dir)[1] for q in read_queries(p)]
    rng = np.random.default_rng(seed)
    return [qs[i] for i in rng.permutation(len(qs))[:n]]


def clients(batcher: MicroBatcher, queries: Sequence[str], n: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    start = threading.Barrier(n)
    b0 = batcher.batches

    def client(k: int) -> None:
        start.wait()
        i = k
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            batcher.route(queries[i % len(queries)])
            with lock:
                lat.append((time.perf_counter() - t0) * 1000)
            i += n

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"clients": n, "routed": len(lat), "qps": len(lat) / wall, "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "batches": batcher.batches - b0,
            "mean_batch": len(lat) / max(1, batcher.batches - b0)}


def physical_bound(model: Any, queries: Sequence[str], bf16: bool, rounds: int = 3) -> dict[str, float]:
    """The bare encoder's best batched q/s over its batch-1 q/s on the same pre-tokenised queries."""
    import contextlib

    import torch

    from routerdc.model.batching import token_budget_batches

    enc = model.tokenize(list(queries))
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(1)
    order = np.argsort(lengths.numpy(), kind="stable")
    layouts = {"batch 1": [[i] for i in range(len(queries))],
               "sorted batches of 16": [order[i:i + 16].tolist() for i in range(0, len(order), 16)],
               "token budget 4096": token_budget_batches(lengths.tolist(), 4096)}
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    qps = dict.fromkeys(layouts, 0.0)
    cuts = {name: [(ids[b][:, :int(lengths[b].max())].contiguous(), mask[b][:, :int(lengths[b].max())].contiguous())
                   for b in batches] for name, batches in layouts.items()}
    with torch.inference_mode(), ctx:
        model.encoder(input_ids=ids[:2, :16], attention_mask=mask[:2, :16])  # warm-up
        for _ in range(rounds):  # interleaved, best of the rounds: a shared machine's load hits all alike
            for name, cut in cuts.items():
                t0 = time.perf_counter()
                for i, m in cut:
                    model.encoder(input_ids=i, attention_mask=m)
                qps[name] = max(qps[name], len(queries) / (time.perf_counter() - t0))
    best = max(v for k, v in qps.items() if k != "batch 1")
    return {**qps, "batched_over_batch1": best / qps["batch 1"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from routerdc.inference.features import cpu_features
    from routerdc.model.router import RouterDC

    info = machine_info()
    queries = load(args.queries, args.seed, args.data_dir)
    checkpoint = args.checkpoint or ROOT / "checkpoints" / "routerdc-minilm"
    model = RouterDC.from_pretrained(checkpoint).eval()
    bound = {}
    for prec in ["fp32"] + (["bf16"] if cpu_features().bf16 else []):
        bound[prec] = physical_bound(model, queries[:args.bound_queries], prec == "bf16")
        print(f"  bare encoder {prec}: " + ", ".join(f"{k} {v:.2f}" for k, v in bound[prec].items()), flush=True)
    router = load_router(checkpoint, args.engine, "cpu", data_dir=args.data_dir, model=model)
    print(f"engine {router.engine_name}: {router.reason}", flush=True)
    router.route(queries[:8])
    rows = []
    modes = [("off", BatchConfig(enabled=False))] + [
        (f"on, {w:g} ms, pad ratio {r:g}", BatchConfig(enabled=True, window_ms=w, max_pad_ratio=r))
        for w in args.windows_ms for r in args.pad_ratios]
    for mode, config in modes:
        batcher = MicroBatcher(router, config)
        for n in args.clients:
            r = {"mode": mode, "micro_batching": config.enabled, "window_ms": config.window_ms,
                 "max_pad_ratio": config.max_pad_ratio,
                 **clients(batcher, queries, n, args.seconds)}
            rows.append(r)
            print(f"  {mode:28s} {n:3d} clients: {r['qps']:6.1f} q/s  p50 {r['p50_ms']:7.1f} ms  "
                  f"p95 {r['p95_ms']:7.1f} ms  mean batch {r['mean_batch']:.1f}", flush=True)
        batcher.close()
    one = {r["mode"]: r["qps"] for r in rows if r["clients"] == 1}
    many = {r["mode"]: r["qps"] for r in rows if r["clients"] == max(args.clients)}
    best = max(many, key=many.get)
    return {"engine": router.engine_name, "reason": router.reason, "windows_ms": args.windows_ms, "rows": rows,
            "ratio_max_clients_to_one": {m: many[m] / one[m] for m in many},
            "best_at_max_clients": best, "physical_bound": bound,
            "target_32_clients_ge_4x_one": many[best] / one[best] >= 4,
            "machine": {"start": info, "end": machine_info()},
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/api_speed.py " + " ".join(sys.argv[1:])}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="router folder (default: the shipped one)")
    p.add_argument("--engine", default="auto", help="the inference layer's engine (default: auto)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=8.0, help="per setting")
    p.add_argument("--windows-ms", type=float, nargs="+", default=[0.0, 2.0],
                   help="micro-batching windows to measure (besides micro-batching off)")
    p.add_argument("--pad-ratios", type=float, nargs="+", default=[1.5, 1000.0],
                   help="micro-batching's max_pad_ratio values to measure (1000: one pass per gathered batch)")
    p.add_argument("--bound-queries", type=int, default=64, help="queries of the bare-encoder bound")
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    report = run(args)
    print(f"engine {report['engine']}; {max(args.clients)} clients / 1 client: {report['ratio_max_clients_to_one']}; "
          f"best {report['best_at_max_clients']}; physical bound (bare batched / batch 1): "
          + ", ".join(f"{k} {v['batched_over_batch1']:.2f}" for k, v in report["physical_bound"].items()))
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
