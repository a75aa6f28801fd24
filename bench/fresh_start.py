"""A newcomer's first start: a fresh clone of this repository, the venv already set up, an empty
cache. Times ``bash scripts/demo.sh`` until the UI is served, then the first routed query.

    python bench/fresh_start.py [--repeats N] [--keep]

Clones the committed HEAD into a temporary folder, links this checkout's ``.venv`` into it (so
``scripts/setup.sh`` finds it set up: same requirement files, nothing to install), points
``ROUTERDC_CACHE`` and ``XDG_CACHE_HOME`` at empty folders and runs ``bash scripts/demo.sh`` on a free
port. "Served" is the first HTTP 200 from ``/``; "first answer" is the first ``/route`` call through
``gradio_client``, timed from the moment the UI was served (client connection included). Prints
the figures and writes ``bench/results/fresh_start.json``. Targets (issue 17): served within 20 s,
first routed query within 1 s after that.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make bench.machine importable
    sys.path.insert(0, str(ROOT))

from bench.machine import machine_info, write_report  # noqa: E402

QUERY = "Janet has 3 apples and buys 5 more. How many apples does she have?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 - loopback only
            return r.status == 200
    except OSError:
        return False


def one_start(workdir: Path, data_dir: str, timeout_s: float = 300) -> dict:
    """Clone, start the demo, time it; the demo is stopped before returning."""
    from gradio_client import Client  # imported before any clock starts

    clone = workdir / "routerdc"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(ROOT / ".venv")
    cache, xdg = workdir / "cache", workdir / "xdg-cache"
    cache.mkdir()
    xdg.mkdir()
    port = _free_port()
    env = {**os.environ, "ROUTERDC_CACHE": str(cache), "XDG_CACHE_HOME": str(xdg), "ROUTERDC_DATA": data_dir,
           "ROUTERDC_PORT": str(port), "ROUTERDC_HOST": "127.0.0.1"}
    env.pop("ROUTERDC_CHECKPOINT", None)
    log = (workdir / "demo.log").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        while not _served(url):
            if proc.poll() is not None:
                raise SystemExit(f"demo.sh exited with {proc.returncode}; see {workdir / 'demo.log'}")
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(f"demo.sh did not serve within {timeout_s:.0f} s")
            time.sleep(0.05)
        served_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        client = Client(url, verbose=False)
        connect_s = time.perf_counter() - t1
        out = client.predict(QUERY, 1.0, api_name="/route")
        first_s = time.perf_counter() - t1
        status = client.predict(api_name="/status")
        return {"served_s": round(served_s, 2), "first_answer_after_served_s": round(first_s, 2),
                "client_connect_s": round(connect_s, 2), "route_call_s": round(first_s - connect_s, 2),
                "first_route_llm": out[7]["llm"], "map_shipped": "shipped with the router" in str(status),
                "cache_files_written": sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())[:5]}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh starts (each in a new clone)")
    p.add_argument("--data-dir", default=os.environ.get("ROUTERDC_DATA") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--keep", action="store_true", help="keep the clones and logs (printed)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "fresh_start.json"))
    a = p.parse_args(argv)
    if not (ROOT / ".venv" / "bin" / "python").exists():
        raise SystemExit("set up the venv first (bash scripts/setup.sh): this benchmark times a set-up venv")
    runs = []
    for i in range(a.repeats):
        work = Path(tempfile.mkdtemp(prefix="routerdc-fresh-"))
        try:
            runs.append(one_start(work, a.data_dir))
            print(f"start {i + 1}: {runs[-1]}")
        finally:
            if a.keep:
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    report = {
        "what": "fresh clone (HEAD), venv set up, empty cache: bash scripts/demo.sh until served, then the first /route",
        "head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip(),
        "served_s_median": med(r["served_s"] for r in runs),
        "first_answer_after_served_s_median": med(r["first_answer_after_served_s"] for r in runs),
        "runs": runs,
        "targets": {"served_s": 20, "first_answer_after_served_s": 1},
        "machine": machine_info(),
    }
    print(f"served after {report['served_s_median']} s (median of {len(runs)}), first routed query "
          f"{report['first_answer_after_served_s_median']} s after that")
    write_report(report, a.output)
    return report


if __name__ == "__main__":
    main()
