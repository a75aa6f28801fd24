"""Routing under concurrent requests: the routed API's decision path with micro-batching on/off.

Each client is a thread that, like a request of the routed API (``routerdc.serving.api``, which
routes in a worker thread), routes one query at a time through ``MicroBatcher.route`` over
``load_router(ckpt)`` and sends the next as soon as it has the answer. Real test queries (the
8 paper test sets, shuffled). For 1, 8 and 32 clients, with micro-batching on and off: the
throughput (routed queries/s) and the p50/p95 latency of a routing decision. HTTP and the
candidate LLM's generation are left out: they do not depend on micro-batching.

    python bench/api_speed.py [--checkpoint DIR] [--engine auto] [--seconds 8] [--window-ms 2]

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = machine_info()
    queries = load(args.queries, args.seed, args.data_dir)
    router = load_router(args.checkpoint or ROOT / "checkpoints" / "routerdc-minilm", args.engine, "cpu",
                         data_dir=args.data_dir)
    router.route(queries[:8])
    rows = []
    for enabled in (False, True):
        batcher = MicroBatcher(router, BatchConfig(enabled=enabled, window_ms=args.window_ms))
        for n in args.clients:
            r = {"micro_batching": enabled, **clients(batcher, queries, n, args.seconds)}
            rows.append(r)
            print(f"  micro-batching {'on ' if enabled else 'off'} {n:3d} clients: {r['qps']:6.1f} q/s  "
                  f"p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  mean batch {r['mean_batch']:.1f}", flush=True)
        batcher.close()
    one = {r["micro_batching"]: r["qps"] for r in rows if r["clients"] == 1}
    many = {r["micro_batching"]: r["qps"] for r in rows if r["clients"] == max(args.clients)}
    return {"engine": router.engine_name, "reason": router.reason, "window_ms": args.window_ms, "rows": rows,
            "ratio_max_clients_to_one": {"on": many[True] / one[True], "off": many[False] / one[False]},
            "target_32_clients_ge_4x_one": many[True] / one[True] >= 4,
            "machine": {"start": info, "end": machine_info()},
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python bench/api_speed.py " + " ".join(sys.argv[1:])}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="router folder (default: the shipped one)")
    p.add_argument("--engine", default="auto", help="the inference layer's engine (default: auto)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--seconds", type=float, default=8.0, help="per setting")
    p.add_argument("--window-ms", type=float, default=2.0)
    p.add_argument("--queries", type=int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = p.parse_args(argv)
    report = run(args)
    print(f"engine {report['engine']}; {max(args.clients)} clients / 1 client: {report['ratio_max_clients_to_one']}")
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
