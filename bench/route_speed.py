"""Routing speed on CPU: naive fp32 vs dynamic padding vs int8, measured in one run.

Variants, all on the same seeded sample of real test queries of the 8 paper test sets:

  (a) naive: fp32, every query padded to 512 tokens, batches in the sample's order (the official
      RouterDC code);
  (b) fp32: dynamic padding + length-sorted batches (``RouterDC.route``);
  (c) int8: ``routerdc.quantize.quantize_int8`` + the same dynamic padding and sorting;
  (d) onnx: the router's ONNX form on ONNX Runtime (``routerdc.onnx_engine``, fp32, what the app
      routes with), same dynamic padding and sorting.

Batched throughput (queries/s, tokenization included) and single-query latency (batch of 1,
tokenization included) per variant, and the routing agreement of (c) and (a) with (b). The
latency rounds interleave the variants query by query, so background load hits them alike.
The naive variant costs the same for every query (all are padded to 512 tokens), so its
throughput and latency are timed on a prefix of the sample (``--naive-queries``,
``--naive-latency``) to keep the run short; (b) and (c) always run on the whole sample.

    python bench/route_speed.py [--checkpoint DIR] [--n-per-task 64] [--threads 2]

Prints a table and writes JSON (default ``bench/results/route_speed.json``).
"""

from __future__ import annotations

import argparse
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
from routerdc.evaluate import accuracy  # noqa: E402
from routerdc.model import RouterDC, Routing  # noqa: E402
from routerdc.onnx_engine import OnnxRouter, export_onnx  # noqa: E402
from routerdc.quantize import SCHEME, quantize_int8  # noqa: E402

from machine import machine_info, write_report  # noqa: E402  (bench/machine.py; the script's folder is on sys.path)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "route_speed.json"
TARGET_P50_MS = 15.0
TARGET_QPS = 100.0
RANDOM_LLMS = tuple(f"llm-{i}" for i in range(7))  # as many as the paper's candidate LLMs

RouteFn = Callable[[Sequence[str]], "tuple[np.ndarray, Routing]"]


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


def route_dynamic(model: RouterDC, texts: Sequence[str], batch_size: int) -> tuple[np.ndarray, Routing]:
    """Our way, as ``RouterDC.route``: dynamic padding, length-sorted batches."""
    emb = model.embed_texts(texts, batch_size=batch_size)
    return emb, model.route_embeddings(emb)


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


def load_router(checkpoint: str | None) -> tuple[RouterDC, str]:
    if checkpoint:
        return RouterDC.from_pretrained(checkpoint), f"trained checkpoint {checkpoint}"
    return (RouterDC.build(RANDOM_LLMS, seed=0),
            f"fresh router, {len(RANDOM_LLMS)} random LLM embeddings (seed 0): near-uniform probabilities, "
            "so argmax agreement is a worst case")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    info_start = machine_info()
    queries, tasks, parts = sample_queries(args.n_per_task, args.seed, args.data_dir)
    rng = np.random.default_rng(args.seed + 1)
    single = [queries[i] for i in rng.choice(len(queries), min(args.latency_queries, len(queries)), replace=False)]
    fp32, router_desc = load_router(args.checkpoint)
    fp32 = fp32.cpu().eval()
    t_quant, int8 = timed(lambda: quantize_int8(fp32))
    onnx_tmp = tempfile.TemporaryDirectory(prefix="route-speed-onnx-")
    t_export, onnx = timed(lambda: OnnxRouter.load(export_onnx(fp32, Path(onnx_tmp.name) / "router"),
                                                   threads=torch.get_num_threads()))
    bs = args.batch_size

    def route_onnx(texts: Sequence[str]) -> tuple[np.ndarray, Routing]:
        emb = onnx.embed_texts(texts, batch_size=bs)
        return emb, onnx.route_embeddings(emb)

    variants: dict[str, RouteFn] = {
        "naive_fp32_pad512": lambda t: route_naive(fp32, t, bs),
        "fp32_dynamic_sorted": lambda t: route_dynamic(fp32, t, bs),
        "int8_dynamic_sorted": lambda t: route_dynamic(int8, t, bs),
        "onnx_dynamic_sorted": route_onnx,
    }
    workload = {"naive_fp32_pad512": queries[:args.naive_queries] if args.naive_queries else queries,
                "fp32_dynamic_sorted": queries, "int8_dynamic_sorted": queries, "onnx_dynamic_sorted": queries}
    print(f"{len(queries)} queries ({args.n_per_task} per task), {len(single)} single queries; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; router: "
          f"{router_desc}", flush=True)

    # Warm-up: one small batch and a few single queries per variant.
    for name, fn in variants.items():
        fn(queries[:8])
        for q in single[:3]:
            fn([q])

    # Throughput, interleaved over rounds; the best round counts (least disturbed by other load).
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    routings: dict[str, Routing] = {}
    embeddings: dict[str, np.ndarray] = {}
    for r in range(args.repeats):
        for name, fn in variants.items():
            seconds, (emb, routing) = timed(lambda fn=fn, name=name: fn(workload[name]))
            rounds[name].append(len(workload[name]) / seconds)
            routings[name], embeddings[name] = routing, emb
            print(f"  round {r + 1}: {name:22s} {rounds[name][-1]:8.1f} q/s ({len(workload[name])} queries, "
                  f"{seconds:.1f} s)", flush=True)

    # Single-query latency, interleaved query by query with a rotating variant order.
    latency: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i, q in enumerate(single):
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            if name == "naive_fp32_pad512" and i >= args.naive_latency:
                continue
            seconds, _ = timed(lambda name=name: variants[name]([q]))
            latency[name].append(seconds * 1e3)

    # Accuracy of int8 against fp32 (b) on the whole sample, and the naive prefix as a sanity check.
    ref = routings["fp32_dynamic_sorted"]
    emb32, emb8 = embeddings["fp32_dynamic_sorted"], embeddings["int8_dynamic_sorted"]
    cos = np.sum(emb32 * emb8, 1) / (np.linalg.norm(emb32, axis=1) * np.linalg.norm(emb8, axis=1))
    int8_vs_fp32 = agreement(ref, routings["int8_dynamic_sorted"])
    int8_vs_fp32["embedding_cosine_min"] = float(cos.min())
    int8_vs_fp32["embedding_cosine_mean"] = float(cos.mean())
    per_task = {}
    for task in dict.fromkeys(tasks):
        mask = np.asarray(tasks) == task
        per_task[task] = float(np.mean(ref.choice[mask] == routings["int8_dynamic_sorted"].choice[mask]))
    int8_vs_fp32["argmax_agreement_per_task"] = per_task
    acc32, acc8 = (task_accuracies(routings[n], parts) for n in ("fp32_dynamic_sorted", "int8_dynamic_sorted"))
    if acc32 is not None and acc8 is not None:
        int8_vs_fp32["task_accuracy_fp32"], int8_vs_fp32["task_accuracy_int8"] = acc32, acc8
    n_naive = len(workload["naive_fp32_pad512"])
    naive_ref = Routing(ref.llm_names, ref.probs[:n_naive], ref.similarities[:n_naive])
    naive_vs_fp32 = agreement(naive_ref, routings["naive_fp32_pad512"])
    naive_vs_fp32["max_abs_embedding_diff"] = float(np.abs(embeddings["naive_fp32_pad512"] - emb32[:n_naive]).max())

    results: dict[str, Any] = {}
    for name in variants:
        lat = latency[name]
        results[name] = {
            "throughput_qps": max(rounds[name]), "throughput_qps_rounds": rounds[name],
            "throughput_queries": len(workload[name]),
            "latency_p50_ms": percentile(lat, 50), "latency_p90_ms": percentile(lat, 90),
            "latency_mean_ms": float(statistics.fmean(lat)), "latency_queries": len(lat),
        }
    a, b, c, d = (results[n] for n in names)
    onnx_vs_fp32 = agreement(ref, routings["onnx_dynamic_sorted"])
    onnx_vs_fp32["max_abs_embedding_diff"] = float(np.abs(embeddings["onnx_dynamic_sorted"] - emb32).max())
    onnx_tmp.cleanup()

    def ratios(x: dict[str, Any], y: dict[str, Any]) -> dict[str, float]:
        return {"throughput": x["throughput_qps"] / y["throughput_qps"],
                "latency_p50_speedup": y["latency_p50_ms"] / x["latency_p50_ms"],
                "latency_p90_speedup": y["latency_p90_ms"] / x["latency_p90_ms"]}

    lengths = [len(ids) for ids in fp32.tokenizer(queries, truncation=True, max_length=fp32.config.max_length,
                                                  return_attention_mask=False)["input_ids"]]
    report = {
        "benchmark": "route_speed",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *args.argv]),
        "machine": info_start, "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "router": router_desc, "quantization": SCHEME, "quantize_seconds": t_quant, "onnx_export_seconds": t_export,
        "settings": {"n_per_task": args.n_per_task, "n_queries": len(queries), "batch_size": bs,
                     "latency_queries": len(single), "naive_queries": n_naive,
                     "naive_latency_queries": len(latency["naive_fp32_pad512"]), "repeats": args.repeats,
                     "seed": args.seed, "max_length": fp32.config.max_length,
                     "token_length_mean": float(np.mean(lengths)), "token_length_p50": percentile(lengths, 50),
                     "token_length_p90": percentile(lengths, 90)},
        "variants": results,
        "ratios": {"fp32_dynamic_vs_naive": ratios(b, a), "int8_vs_naive": ratios(c, a),
                   "int8_vs_fp32_dynamic": ratios(c, b), "onnx_vs_fp32_dynamic": ratios(d, b)},
        "accuracy": {"int8_vs_fp32_dynamic": int8_vs_fp32, "naive_vs_fp32_dynamic": naive_vs_fp32,
                     "onnx_vs_fp32_dynamic": onnx_vs_fp32},
        "targets": {"latency_p50_ms": TARGET_P50_MS, "throughput_qps": TARGET_QPS,
                    "met": {n: {"latency": r["latency_p50_ms"] <= TARGET_P50_MS,
                                "throughput": r["throughput_qps"] >= TARGET_QPS} for n, r in results.items()}},
    }
    return report


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"\nRouting speed, {s['n_queries']} real test queries (mean {s['token_length_mean']:.0f} tokens), "
          f"batch {s['batch_size']}, {report['machine']['torch_threads']} threads; router: {report['router']}")
    print(f"{'variant':22s} {'q/s (batch)':>12s} {'p50 ms':>8s} {'p90 ms':>8s}")
    for name, r in report["variants"].items():
        print(f"{name:22s} {r['throughput_qps']:12.1f} {r['latency_p50_ms']:8.1f} {r['latency_p90_ms']:8.1f}")
    print(f"targets: >= {TARGET_QPS:.0f} q/s, p50 <= {TARGET_P50_MS:.0f} ms")
    for name, r in report["ratios"].items():
        print(f"ratio {name:22s} throughput x{r['throughput']:.2f}, p50 latency x{r['latency_p50_speedup']:.2f} "
              f"faster, p90 x{r['latency_p90_speedup']:.2f}")
    acc = report["accuracy"]["int8_vs_fp32_dynamic"]
    print(f"int8 vs fp32 on {acc['n']} queries: argmax agreement {acc['argmax_agreement']:.3f}, "
          f"max |dp| {acc['max_abs_prob_diff']:.4f}, embedding cosine min {acc['embedding_cosine_min']:.4f} "
          f"mean {acc['embedding_cosine_mean']:.4f}")
    print("  per task: " + ", ".join(f"{t} {v:.2f}" for t, v in acc["argmax_agreement_per_task"].items()))
    if "task_accuracy_fp32" in acc:
        print("  routing accuracy % (fp32 -> int8): " + ", ".join(
            f"{t} {a:.1f}->{acc['task_accuracy_int8'][t]:.1f}" for t, a in acc["task_accuracy_fp32"].items()))
    ov = report["accuracy"]["onnx_vs_fp32_dynamic"]
    print(f"onnx vs fp32 on {ov['n']} queries: agreement {ov['argmax_agreement']:.3f}, "
          f"max |dp| {ov['max_abs_prob_diff']:.2e}, max |d emb| {ov['max_abs_embedding_diff']:.2e}")
    nv = report["accuracy"]["naive_vs_fp32_dynamic"]
    print(f"naive vs fp32 (padding only) on {nv['n']} queries: agreement {nv['argmax_agreement']:.3f}, "
          f"max |dp| {nv['max_abs_prob_diff']:.2e}, max |d emb| {nv['max_abs_embedding_diff']:.2e}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="a trained router folder (default: a fresh router, random LLM embeddings)")
    p.add_argument("--n-per-task", type=int, default=64, help="queries sampled per test set")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--latency-queries", type=int, default=100, help="single queries timed per variant")
    p.add_argument("--naive-queries", type=int, default=128,
                   help="queries timed for the naive throughput (its cost is the same for every query); 0: all")
    p.add_argument("--naive-latency", type=int, default=30, help="single queries timed for the naive variant")
    p.add_argument("--repeats", type=int, default=1, help="interleaved throughput rounds; the best counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="score data directory (default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    args = p.parse_args(argv)
    if args.naive_queries < 0:
        p.error("--naive-queries must be >= 0")
    for key in ("n_per_task", "batch_size", "latency_queries", "naive_latency", "repeats"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    write_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
