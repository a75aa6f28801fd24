"""Routing speed on this machine, every figure a ratio against the bare encoder of the same run.

On the same seeded sample of real test queries (``--n-per-task`` of each of the 8 paper test
sets, 128 by default: 1024 queries), with the shipped router unless ``--checkpoint``:

  limit     the bare encoder (transformers forward only, no tokenising, no routing) on
            length-sorted batches, at its best batching (fixed 16 or a token budget of 2048 / 4096 / 8192) and
            precision (fp32, bf16 autocast where the CPU has it): what routing could reach;
  route     ``routerdc.load_router(ckpt).route(queries)`` end to end (``auto`` engine, queries in
            their given order, tokenising and the routing rule included);
  engines   each engine of the inference layer the same way, with its agreement with torch fp32
            per task (choices >= 99.5%, probabilities within 1e-2; a checked engine also says which
            share of the queries it re-encoded in fp32);
  budgets   the auto engine at several token budgets (the default is the best of these);
  official  the official RouterDC inference path: every query padded to 512 tokens, batches of
            ``--official-batch`` in the given order (timed on a prefix, ``--official-queries``;
            it costs the same per query whatever the query);
  latency   single queries: the bare encoder at batch 1 against ``load_router(...).route([q])``,
            interleaved query by query.

    python bench/route_speed.py [--checkpoint DIR] [--n-per-task 128] [--threads 0]

Prints a table and writes JSON (default ``bench/results/route_speed.json``) with the machine,
its load average, the engine ``auto`` picked and why.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from routerdc.data import ScoreSet, load_score_set, paper_files  # noqa: E402
from routerdc.evaluate.metrics import accuracy  # noqa: E402
from routerdc.inference import ENGINES, EngineUnavailable, load_router  # noqa: E402
from routerdc.model.batching import token_budget_batches  # noqa: E402
from routerdc.inference.features import cpu_features  # noqa: E402
from routerdc.inference.select import MIN_AGREEMENT, PROB_TOL  # noqa: E402
from routerdc.model.router import RouterDC, Routing  # noqa: E402

from machine import machine_info, write_report  # noqa: E402  (bench/machine.py; the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "route_speed.json"
SHIPPED = ROOT / "checkpoints" / "routerdc-minilm"
BUDGETS = (2048, 4096, 8192, 16384)


def sample_queries(n_per_task: int, seed: int, data_dir: str | None = None
                   ) -> tuple[list[str], list[str], list[tuple[ScoreSet, np.ndarray]]]:
    """``n_per_task`` random queries of each paper test set (all of a smaller set), shuffled together.

    Returns the queries and their task names, in the (random) order used for the naive batches,
    and per test set its sampled rows with their positions in that order (for accuracies).
    """
    rng = np.random.default_rng(seed)
    subsets = []
    for path in paper_files(data_dir)[1]:
        s = load_score_set(path)
        subsets.append(s.subset(np.sort(rng.choice(len(s), min(n_per_task, len(s)), replace=False))))
    queries = [q for s in subsets for q in s.queries]
    tasks = [s.task for s in subsets for _ in s.queries]
    order = rng.permutation(len(queries))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    parts, start = [], 0
    for s in subsets:
        parts.append((s, position[start:start + len(s)]))
        start += len(s)
    return [queries[i] for i in order], [tasks[i] for i in order], parts


def task_accuracies(routing: Routing, parts: Sequence[tuple[ScoreSet, np.ndarray]]) -> dict[str, float] | None:
    """Accuracy (%) per test set of the routing decisions, when the router's LLMs are the data's."""
    if any(set(s.llms) != set(routing.llm_names) for s, _ in parts):
        return None
    acc = {s.task: accuracy(s.align(routing.llm_names).scores, routing.choice[pos], s.metric) for s, pos in parts}
    acc["avg"] = float(np.mean(list(acc.values())))
    return acc


@torch.inference_mode()
def route_naive(model: RouterDC, texts: Sequence[str], batch_size: int) -> tuple[np.ndarray, Routing]:
    """The official way: every query padded to ``max_length`` (512), batches in the given order."""
    model.eval()
    texts = getattr(model, "prepare_texts", list)(texts)  # the configured text normalisation, if any
    out = []
    for start in range(0, len(texts), batch_size):
        enc = model.tokenizer(list(texts[start:start + batch_size]), padding="max_length", truncation=True,
                              max_length=model.config.max_length, return_tensors="pt",
                              return_token_type_ids=False)
        emb = model.project(model.encode(enc["input_ids"], enc["attention_mask"]))
        out.append(emb.float().numpy())
    emb = np.concatenate(out)
    return emb, model.route_embeddings(emb)


def route_official(model: RouterDC, texts: Sequence[str], batch_size: int) -> Routing:
    """The official way: every query padded to ``max_length`` (512), batches in the given order."""
    texts = model.prepare_texts(list(texts))
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = model.tokenizer(list(texts[start:start + batch_size]), padding="max_length", truncation=True,
                                  max_length=model.config.max_length, return_tensors="pt",
                                  return_token_type_ids=False)
            out.append(model.project(model.encode(enc["input_ids"], enc["attention_mask"])).float().numpy())
    return model.route_embeddings(np.concatenate(out))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def agreement(ref: Routing, other: Routing) -> dict[str, float]:
    return {
        "n": int(len(ref.choice)),
        "argmax_agreement": float(np.mean(ref.choice == other.choice)),
        "max_abs_prob_diff": float(np.abs(ref.probs - other.probs).max()),
        "mean_abs_prob_diff": float(np.abs(ref.probs - other.probs).mean()),
    }


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def bare_encoder(model: RouterDC, texts: Sequence[str], batches: list[list[int]], bf16: bool) -> float:
    """Queries/s of the bare transformers forward on pre-tokenised ``batches`` (the limit)."""
    enc = model.tokenize(list(texts))
    ids, mask = enc["input_ids"], enc["attention_mask"]
    lengths = mask.sum(1)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    cut = []
    for b in batches:
        w = int(lengths[b].max())
        cut.append((ids[b][:, :w], mask[b][:, :w]))
    with torch.inference_mode(), ctx:
        model.encoder(input_ids=cut[0][0][:4], attention_mask=cut[0][1][:4])  # warm-up
        t0 = time.perf_counter()
        for i, m in cut:
            model.encoder(input_ids=i, attention_mask=m)
        return len(texts) / (time.perf_counter() - t0)


def fixed_sorted(lengths: Sequence[int], size: int) -> list[list[int]]:
    order = np.argsort(np.asarray(lengths), kind="stable")
    return [order[i:i + size].tolist() for i in range(0, len(order), size)]


def per_task_agreement(ref: Routing, other: Routing, tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    t = np.asarray(tasks)
    for task in sorted(set(tasks)):
        m = t == task
        out[task] = {"agreement": float(np.mean(ref.choice[m] == other.choice[m])),
                     "max_prob_diff": float(np.abs(ref.probs[m] - other.probs[m]).max())}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    info_start = machine_info()
    queries, tasks, parts = sample_queries(args.n_per_task, args.seed, args.data_dir)
    checkpoint = Path(args.checkpoint or SHIPPED)
    model = RouterDC.from_pretrained(checkpoint).eval()
    lengths = model.tokenize(queries)["attention_mask"].sum(1).tolist()
    cache = tempfile.TemporaryDirectory(prefix="route-speed-cache-") if args.fresh_cache else None
    cache_dir = cache.name if cache else None
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "n_queries": len(queries), "tasks": sorted(set(tasks)),
                              "mean_tokens": float(np.mean(lengths)), "cpu": cpu_features().summary()}

    # -- the limit: the bare encoder at its best batching and precision
    limit_runs = {}
    precisions = ["fp32"] + (["bf16"] if cpu_features().bf16 else [])
    for prec in precisions:
        for name, batches in [("batch 16", fixed_sorted(lengths, 16)),
                              *[(f"budget {b}", token_budget_batches(lengths, b)) for b in (2048, 4096, 8192)]]:
            limit_runs[f"{prec}, {name}"] = bare_encoder(model, queries, batches, prec == "bf16")
            print(f"  bare encoder {prec}, {name}: {limit_runs[f'{prec}, {name}']:.1f} q/s", flush=True)
    limit_name = max(limit_runs, key=limit_runs.get)
    limit = limit_runs[limit_name]
    report["limit"] = {"best": limit_name, "qps": limit, "runs": limit_runs}

    # -- load_router(...).route end to end (auto), then each engine
    t_auto, router = timed(lambda: load_router(checkpoint, "auto", "cpu", cache_dir=cache_dir, model=model,
                                               data_dir=args.data_dir, threads=args.threads))
    report["auto"] = {"engine": router.engine_name, "reason": router.reason, "load_seconds": t_auto}
    print(f"auto: {router.reason}", flush=True)
    router.route(queries[:8])
    t, routed = timed(lambda: router.route(queries))
    report["route"] = {"qps": len(queries) / t, "ratio_to_limit": len(queries) / t / limit,
                       "accuracy": task_accuracies(routed, parts)}
    ref_router = load_router(checkpoint, "torch", "cpu", cache_dir=cache_dir, model=model)
    ref = ref_router.route(queries)
    engines = {}
    for name in ENGINES:
        try:
            r = ref_router if name == "torch" else load_router(checkpoint, name, "cpu", cache_dir=cache_dir,
                                                                model=model, threads=args.threads)
        except EngineUnavailable as exc:
            engines[name] = {"available": False, "why": str(exc)}
            continue
        r.route(queries[:8])
        t, got = timed(lambda: r.route(queries))
        pt = per_task_agreement(ref, got, tasks)
        engines[name] = {"available": True, "qps": len(queries) / t, "ratio_to_limit": len(queries) / t / limit,
                         "agreement": float(np.mean(ref.choice == got.choice)),
                         "max_prob_diff": float(np.abs(ref.probs - got.probs).max()), "per_task": pt,
                         "rechecked_in_fp32": getattr(r.engine, "recheck_share", None),
                         "agrees_on_every_task": all(v["agreement"] >= MIN_AGREEMENT and v["max_prob_diff"] <= PROB_TOL
                                                     for v in pt.values())}
        print(f"  {name}: {engines[name]['qps']:.1f} q/s, agreement {engines[name]['agreement']:.3%}", flush=True)
    report["engines"] = engines

    # -- token budgets of the auto engine
    budgets = {}
    for b in BUDGETS:
        router.token_budget = b
        t, _ = timed(lambda: router.route(queries))
        budgets[str(b)] = len(queries) / t
        print(f"  budget {b}: {budgets[str(b)]:.1f} q/s", flush=True)
    router.token_budget = None
    report["budgets"] = {"qps": budgets, "best": max(budgets, key=budgets.get)}

    # -- the official path (a prefix)
    n_off = min(args.official_queries, len(queries))
    t, off = timed(lambda: route_official(model, queries[:n_off], args.official_batch))
    report["official"] = {"queries": n_off, "batch": args.official_batch, "qps": n_off / t,
                          "route_speedup": report["route"]["qps"] / (n_off / t),
                          "agreement_with_route": float(np.mean(off.choice == ref.choice[:n_off]))}

    # -- single queries, interleaved
    rng = np.random.default_rng(args.seed + 1)
    single = [queries[i] for i in rng.choice(len(queries), min(args.latency_queries, len(queries)), replace=False)]
    bare_ms, route_ms = [], []
    for q in single:
        enc = model.tokenize([q])
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            bare_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        router.route([q])
        route_ms.append((time.perf_counter() - t0) * 1000)
    report["latency"] = {"queries": len(single), "bare_encoder_p50_ms": statistics.median(bare_ms),
                         "route_p50_ms": statistics.median(route_ms),
                         "ratio": statistics.median(route_ms) / statistics.median(bare_ms),
                         "route_p95_ms": percentile(route_ms, 95)}
    report["targets"] = {
        "route >= 0.9x limit": report["route"]["ratio_to_limit"] >= 0.9,
        "route >= 5x official": report["official"]["route_speedup"] >= 5,
        "single p50 <= 1.2x bare batch-1": report["latency"]["ratio"] <= 1.2,
        "auto-pickable engines agree on every task": all(
            e.get("agrees_on_every_task", True) for n, e in engines.items()
            if e.get("available") and any(t["engine"] == n and t["ok"] for t in _trials(router))),
    }
    report["machine"] = {"start": info_start, "end": machine_info()}
    report["date"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report["command"] = "python bench/route_speed.py " + " ".join(sys.argv[1:])
    if cache:
        cache.cleanup()
    return report


def _trials(router: Any) -> list[dict[str, Any]]:
    """The probe trials of auto's decision (the engines it found routing like torch fp32)."""
    d = router.decision
    return [] if d is None else [{"engine": t.engine, "ok": t.ok} for t in d.trials]


def print_report(r: dict[str, Any]) -> None:
    lim = r["limit"]["qps"]
    print(f"\n{r['n_queries']} queries, mean {r['mean_tokens']:.0f} tokens; {r['cpu']}")
    print(f"limit (bare encoder, {r['limit']['best']}): {lim:.1f} q/s")
    print(f"load_router().route ({r['auto']['engine']}): {r['route']['qps']:.1f} q/s = "
          f"{r['route']['ratio_to_limit']:.2f}x limit, {r['official']['route_speedup']:.1f}x official "
          f"({r['official']['qps']:.1f} q/s)")
    for n, e in r["engines"].items():
        if e["available"]:
            print(f"  {n:11s} {e['qps']:7.1f} q/s  {e['ratio_to_limit']:.2f}x limit  agreement {e['agreement']:.2%}"
                  f"  max dp {e['max_prob_diff']:.1e}  every task ok: {e['agrees_on_every_task']}")
        else:
            print(f"  {n:11s} unavailable: {e['why']}")
    print(f"budgets: {r['budgets']['qps']} best {r['budgets']['best']}")
    lat = r["latency"]
    print(f"single query p50: route {lat['route_p50_ms']:.1f} ms vs bare encoder {lat['bare_encoder_p50_ms']:.1f} ms "
          f"({lat['ratio']:.2f}x)")
    print(f"targets: {r['targets']}; load average {r['machine']['start']['load_average']} -> "
          f"{r['machine']['end']['load_average']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="router folder (default: the shipped checkpoints/routerdc-minilm)")
    p.add_argument("--n-per-task", type=int, default=128, help="queries sampled per test set")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: the libraries' default)")
    p.add_argument("--latency-queries", type=int, default=64, help="single queries timed")
    p.add_argument("--official-queries", type=int, default=128, help="queries timed on the official path")
    p.add_argument("--official-batch", type=int, default=64, help="batch size of the official path")
    p.add_argument("--fresh-cache", action="store_true",
                   help="measure auto's choice afresh in a temporary cache (default: the user's cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="score data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
