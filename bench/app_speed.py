"""Speed of the Gradio app: cold start to the first routed query, warm route-to-plots latency, and
the placement of a new query on the Explore map.

    python bench/app_speed.py [--checkpoint DIR] [--repeats N]

Prepares the router's map cache first (``app.py --prepare``, not timed), then launches ``app.py``
in a fresh process and times it until ``/route`` answers through ``gradio_client``. Prints a
table and writes ``bench/results/app_speed.json``. Targets (issue 4): cold start <= 10 s, route to
plots <= 300 ms warm, map placement <= 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the app package importable
    sys.path.insert(0, str(ROOT))
QUERIES = [
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33",
    "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_checkpoint() -> str:
    shipped = ROOT / "checkpoints" / "routerdc-minilm"
    return str(shipped if (shipped / "config.json").exists() else ROOT / "runs" / "frozen-proj")


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=os.environ.get("ROUTERDC_CHECKPOINT") or _default_checkpoint())
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "app_speed.json"))
    a = p.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ROUTERDC_CHECKPOINT": a.checkpoint}
    py = sys.executable

    t = time.perf_counter()
    subprocess.run([py, "app.py", "--prepare"], cwd=ROOT, env=env, check=True, capture_output=True)
    prepare_s = time.perf_counter() - t

    from gradio_client import Client  # imported before the clock starts

    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([py, "app.py", "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        while client is None:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        up_s = time.perf_counter() - t0
        first = client.predict(QUERIES[0], 1.0, api_name="/route")
        cold_s = time.perf_counter() - t0

        client_ms, handler_ms = [], []
        for i in range(a.repeats):
            t = time.perf_counter()
            out = client.predict(QUERIES[i % len(QUERIES)], 1.0, api_name="/route")
            client_ms.append((time.perf_counter() - t) * 1000)
            handler_ms.append(out[7]["seconds"] * 1000)
        retemper_ms = []
        for i in range(a.repeats):
            t = time.perf_counter()
            client.predict(0.5 + 0.1 * (i % 5), api_name="/retemper")
            retemper_ms.append((time.perf_counter() - t) * 1000)
    finally:
        proc.terminate()
        proc.wait(30)

    # Map placement, in-process on the same cached map.

    from app.context import AppContext
    from app.settings import Settings

    ctx = AppContext.create(Settings.from_env(checkpoint=a.checkpoint), background_map=False)
    view = ctx.routers.get(ctx.default_key)
    ctx.maps.ensure(view, background=False)
    emb = view.embed(QUERIES)
    place_ms, embed_place_ms = [], []
    for i in range(max(a.repeats, 50)):
        t = time.perf_counter()
        view.map.emap.place(emb[i % len(emb)][None])
        place_ms.append((time.perf_counter() - t) * 1000)
    for i in range(a.repeats):
        t = time.perf_counter()
        view.map.emap.place(view.embed([QUERIES[i % len(QUERIES)]]))
        embed_place_ms.append((time.perf_counter() - t) * 1000)

    med = statistics.median
    res = {
        "checkpoint": str(a.checkpoint), "map": view.map.state, "map_points": len(view.map.emap),
        "prepare_map_s (not timed below)": round(prepare_s, 2),
        "cold_start_server_up_s": round(up_s, 2),
        "cold_start_to_first_routed_query_s": round(cold_s, 2),
        "first_route_ok": bool(first[7]["llm"]),
        "route_to_plots_client_ms_median": round(med(client_ms), 1),
        "route_to_plots_client_ms_p90": round(sorted(client_ms)[int(0.9 * (len(client_ms) - 1))], 1),
        "route_handler_ms_median": round(med(handler_ms), 1),
        "retemper_client_ms_median": round(med(retemper_ms), 1),
        "map_place_ms_median": round(med(place_ms), 3),
        "map_embed_and_place_ms_median": round(med(embed_place_ms), 1),
        "targets": {"cold_start_s": 10, "route_to_plots_ms": 300, "map_place_ms": 100},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }
    for k, v in res.items():
        print(f"{k:45s} {v}")
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    return res


if __name__ == "__main__":
    main()
