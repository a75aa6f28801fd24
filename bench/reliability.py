"""Reliability under load, over time and under faults, all on 127.0.0.1.

    python bench/reliability.py [--app-users 20 --app-s 180 --api-clients 20 --api-s 120 --soak-s 600
                                 --sessions 300 --kills 50] [--quick]

Phases (each bounded in count and time):

1. **sessions**: the app (shipped router, real data, PCA map) gets ``--sessions`` new sessions, each
   routing one query; the app's RSS before and 20 s after is the memory those sessions cost.
2. **app users**: ``--app-users`` gradio_client users route queries for ``--app-s`` seconds.
3. **API streams**: ``--api-clients`` clients stream from ``python -m routerdc serve`` (tiny local
   Llamas, an API key) for ``--api-s`` seconds; a stream counts only if it ends with ``[DONE]``.
4. **soak**: ``--soak-s`` seconds of mixed traffic to both servers (normal requests, and bad ones:
   413, 401, lone surrogates, huge seeds and stop strings, empty queries), with RSS, threads and
   open files of both servers after a warm-up and at the end. Meanwhile, **kill -9**: ``--kills``
   training runs into one router folder, each killed at a random moment; after each, the folder
   must hold a loadable router, no left-over may be listed as a router, and the folder's
   selection score must never drop (no better router lost).
5. **faults**: a backend killed mid-stream (clear error event, ``[DONE]``, the next request fast);
   the app started with a missing and an unreadable data directory (a clear status, the app up).

Prints the figures and writes ``bench/results/reliability.json`` and ``results/reliability.md``.
Targets (issue 15): 0 failures; RSS growth < 5% after warm-up; 300 sessions < 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from bench.reliability_clients import (  # noqa: E402
    KEY, ENV, proc_stats, stop, start_app, start_api, stream_once, bad_api_once, route_once, bad_app_once, hammer, Tally,
)


# ----------------------------------------------------------------------------- phases
def sessions_phase(app: subprocess.Popen, url: str, n: int) -> dict[str, Any]:
    from gradio_client import Client

    c = Client(url, verbose=False)
    for _ in range(5):  # warm-up: the first routes load the router's engine and the map
        route_once(c)
    time.sleep(5)
    before = proc_stats(app.pid)
    t0 = time.monotonic()
    fails = 0
    for _ in range(n):
        c.session_hash = uuid.uuid4().hex
        try:
            route_once(c)
        except Exception:  # noqa: BLE001
            fails += 1
        if time.monotonic() - t0 > 600:
            break
    time.sleep(20)
    after = proc_stats(app.pid)
    cost = after["rss_mib"] - before["rss_mib"]
    return {"sessions": n, "failures": fails, "rss_before_mib": before["rss_mib"], "rss_after_20s_mib": after["rss_mib"],
            "cost_mib": round(cost, 1), "per_session_kib": round(cost * 1024 / n, 1), "target_mib": 50,
            "ok": cost < 50 and fails == 0}


def kill_loop(n: int, seconds: float, tmp: Path, data_dir: str) -> dict[str, Any]:
    """``n`` training runs into one folder, each SIGKILLed at a random moment."""
    import numpy as np

    from routerdc.checkpoint import CheckpointError, list_routers, load_state_dict, read_config
    from routerdc.data import load_score_set, write_jsonl

    root = Path(data_dir) / "routerdc" / "split2_model7_cluster"
    sets = [load_score_set(root / f).subset(np.arange(40)) for f in ("mmlu_train.json", "gsm8k-train.json")]
    train = write_jsonl(sets, tmp / "kill-train.jsonl")
    base = tmp / "kill-runs"
    base.mkdir()
    out = base / "router"
    rng = random.Random(0)
    best, corrupt, listed, lost, runs, completed = None, 0, 0, 0, 0, 0
    deadline = time.monotonic() + seconds
    notes: list[str] = []
    for i in range(n):
        if time.monotonic() > deadline:
            notes.append(f"stopped after {i} runs at the time bound")
            break
        cmd = [sys.executable, "-m", "routerdc", "train", "--train-files", str(train), "--output-dir", str(out),
               "--freeze-encoder", "true", "--steps", "40", "--eval-every", "4", "--batch-size", "16",
               "--samples-per-task", "40", "--seed", str(i), "--calibrate", str(i % 2 == 0).lower()]
        p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # the first run completes: the router a crashed later run must not lose
            p.wait(300 if i == 0 else rng.uniform(4.0, 25.0))
            completed += 1
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        runs += 1
        if (out / "config.json").exists() or any(base.iterdir()):
            try:
                cfg = read_config(out)
                load_state_dict(out)
                score = cfg.get("metrics", {}).get("train/avg")
                if best is not None and (score is None or score < best - 1e-9):
                    lost += 1
                    notes.append(f"run {i}: score {score} < best {best}")
                best = score if best is None else max(best, score)
            except CheckpointError as exc:
                if out.exists() or best is not None:
                    corrupt += 1
                    notes.append(f"run {i}: {exc}")
        names = [p.name for p in list_routers(base, sweep=False)]
        listed += sum(1 for x in names if x != "router")
    leftovers = sorted(p.name for p in base.iterdir() if p.name.startswith("."))
    swept = list_routers(base, sweep=True)
    return {"runs": runs, "killed": runs - completed, "completed": completed, "corrupt_routers": corrupt,
            "listed_leftovers": listed, "better_router_lost": lost, "final_score": best,
            "hidden_leftovers_seen": len(leftovers), "listed_after_sweep": [p.name for p in swept],
            "notes": notes[:10], "ok": corrupt == 0 and listed == 0 and lost == 0}


def soak_phase(app: subprocess.Popen, app_url: str, api: subprocess.Popen, api_url: str, seconds: float,
               warmup: float) -> dict[str, Any]:
    import httpx
    from gradio_client import Client

    out: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}

    def sampler() -> None:
        time.sleep(warmup)
        stats["warm"] = {"app": proc_stats(app.pid), "api": proc_stats(api.pid)}

    threading.Thread(target=sampler, daemon=True).start()
    start = {"app": proc_stats(app.pid), "api": proc_stats(api.pid)}
    results: dict[str, Tally] = {}

    def api_mix(c: Any, i: int) -> tuple[bool, str]:
        return bad_api_once(c, api_url, i) if i % 4 == 3 else stream_once(c, api_url)

    def app_mix(c: Any, i: int) -> tuple[bool, str]:
        return bad_app_once(c, i) if i % 5 == 4 else route_once(c)

    ts = [threading.Thread(target=lambda: results.__setitem__("api", hammer(4, seconds, httpx.Client, api_mix))),
          threading.Thread(target=lambda: results.__setitem__(
              "app", hammer(4, seconds, lambda: Client(app_url, verbose=False), app_mix)))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 300)
    time.sleep(5)
    end = {"app": proc_stats(app.pid), "api": proc_stats(api.pid)}
    for who in ("app", "api"):
        warm = stats.get("warm", start)[who]
        out[who] = {**results[who].summary(), "start": start[who], "after_warmup": warm, "end": end[who],
                    "rss_growth_after_warmup_pct": round(100 * (end[who]["rss_mib"] / warm["rss_mib"] - 1), 2)}
    out["seconds"], out["warmup_s"] = seconds, warmup
    out["ok"] = all(out[w]["failures"] == 0 and out[w]["rss_growth_after_warmup_pct"] < 5 for w in ("app", "api"))
    return out


def backend_killed_phase(tmp: Path, router: Path, models: dict[str, Path]) -> dict[str, Any]:
    """A front API whose candidates are served by a second server, killed mid-stream."""
    import httpx

    from tests.serving_support import free_port, write_config

    bport, fport = free_port(), free_port()
    bcfg = write_config(tmp / "back.json", [{"name": n, "backend": "transformers", "model": str(p)}
                                            for n, p in models.items()])
    back = start_api(bport, router, bcfg, tmp / "back.log", key=None)
    fcfg = write_config(tmp / "front.json", [{"name": n, "backend": "openai", "base_url": f"http://127.0.0.1:{bport}/v1",
                                              "model": n, "tokenizer": str(p)} for n, p in models.items()],
                        limits={"max_tokens": 4000, "max_retries": 0, "request_timeout_s": 10})
    front = start_api(fport, router, fcfg, tmp / "front.log")
    url = f"http://127.0.0.1:{fport}"
    res: dict[str, Any] = {}
    try:
        body = {"model": "routerdc", "messages": [{"role": "user", "content": "hello world"}], "stream": True,
                "max_tokens": 4000, "temperature": 1.0}
        lines: list[str] = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as r:
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    back.send_signal(signal.SIGKILL)
                    t_kill = time.perf_counter()
        t_end = time.perf_counter() - t_kill
        lines = [x for x in lines if x.startswith("data: ")]
        errors = [json.loads(x[6:])["error"]["message"] for x in lines if x.startswith('data: {"error"')]
        t = time.perf_counter()
        nxt = httpx.post(url + "/v1/chat/completions", json={**body, "stream": False, "max_tokens": 4},
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        next_ms = (time.perf_counter() - t) * 1000
        res = {"error_event": errors[:1], "ends_with_done": bool(lines) and lines[-1] == "data: [DONE]",
               "stream_end_after_kill_s": round(t_end, 2), "next_request": f"HTTP {nxt.status_code}",
               "next_request_ms": round(next_ms, 1)}
        res["ok"] = bool(errors) and res["ends_with_done"] and nxt.status_code in (502, 503) and next_ms < 5000
    finally:
        stop(front)
        stop(back)
    return res


def data_dir_phase(tmp: Path, port_fn: Callable[[], int]) -> dict[str, Any]:
    """The app with a missing and with an unreadable data directory: it starts and says why."""
    from gradio_client import Client

    out: dict[str, Any] = {}
    unreadable = tmp / "unreadable-data"
    (unreadable / "routerdc").mkdir(parents=True)
    os.chmod(unreadable, 0)
    for name, d in (("missing", str(tmp / "no-such-data")), ("unreadable", str(unreadable))):
        port = port_fn()
        app = start_app(port, d, tmp / f"app-{name}.log")
        try:
            c = Client(f"http://127.0.0.1:{port}/", verbose=False)
            status = c.predict(api_name="/status")
            routed = route_once(c)[0]
            line = next((x for x in status.splitlines() if "**Data**" in x), "")
            why = next((x for x in status.splitlines() if x.strip().startswith("- unavailable")), "")
            out[name] = {"status_data_line": (line.strip() + " " + why.strip())[:300], "routes": routed,
                         "ok": routed and "0 score sets" in line}
        finally:
            stop(app)
    os.chmod(unreadable, 0o700)
    out["running_as_root"] = os.geteuid() == 0  # root reads a 000 folder anyway
    out["ok"] = all(v["ok"] for k, v in out.items() if isinstance(v, dict))
    return out


# ----------------------------------------------------------------------------- report
def markdown(rep: dict[str, Any]) -> str:
    s, a, api, soak = rep["sessions"], rep["app_users"], rep["api_streams"], rep["soak"]
    k, b, d = rep["kill9"], rep["backend_killed"], rep["data_dir"]
    load = rep["machine"]["load_average"]
    rows = [
        ("300 new app sessions, RSS 20 s later", f"{s['cost_mib']} MiB ({s['per_session_kib']} KiB/session), "
         f"{s['failures']} failures", "< 50 MB", s["ok"]),
        (f"{rep['args']['app_users']} app users x {rep['args']['app_s']} s (/route)",
         f"{a['failures']} failures / {a['requests']} requests; median {a['median_ms']} ms, p95 {a['p95_ms']} ms",
         "0 failures", a["failures"] == 0),
        (f"{rep['args']['api_clients']} streaming API clients x {rep['args']['api_s']} s",
         f"{api['failures']} failures / {api['requests']} streams (each ends with [DONE]); median {api['median_ms']} ms",
         "0 failures", api["failures"] == 0),
        (f"soak {soak['seconds']:.0f} s, app (4 users, 1 in 5 bad)",
         f"{soak['app']['failures']} failures / {soak['app']['requests']}; RSS {soak['app']['after_warmup']['rss_mib']} -> "
         f"{soak['app']['end']['rss_mib']} MiB ({soak['app']['rss_growth_after_warmup_pct']:+.2f}%), threads "
         f"{soak['app']['after_warmup']['threads']} -> {soak['app']['end']['threads']}, open files "
         f"{soak['app']['after_warmup']['open_files']} -> {soak['app']['end']['open_files']}",
         "0 failures, RSS < +5%", soak["app"]["failures"] == 0 and soak["app"]["rss_growth_after_warmup_pct"] < 5),
        (f"soak {soak['seconds']:.0f} s, API (4 clients, 1 in 4 bad)",
         f"{soak['api']['failures']} failures / {soak['api']['requests']}; RSS {soak['api']['after_warmup']['rss_mib']} -> "
         f"{soak['api']['end']['rss_mib']} MiB ({soak['api']['rss_growth_after_warmup_pct']:+.2f}%), threads "
         f"{soak['api']['after_warmup']['threads']} -> {soak['api']['end']['threads']}, open files "
         f"{soak['api']['after_warmup']['open_files']} -> {soak['api']['end']['open_files']}",
         "0 failures, RSS < +5%", soak["api"]["failures"] == 0 and soak["api"]["rss_growth_after_warmup_pct"] < 5),
        (f"kill -9 during training ({k['runs']} runs, {k['killed']} killed)",
         f"{k['corrupt_routers']} corrupt, {k['listed_leftovers']} left-overs listed, {k['better_router_lost']} "
         f"better routers lost", "0 / 0 / 0", k["ok"]),
        ("backend killed mid-stream", f"error event {'yes' if b.get('error_event') else 'no'}, [DONE] "
         f"{'yes' if b.get('ends_with_done') else 'no'}, stream ended {b.get('stream_end_after_kill_s')} s after the kill, "
         f"next request {b.get('next_request')} in {b.get('next_request_ms')} ms", "clear error, [DONE], fast", b.get("ok")),
        ("data dir missing / unreadable", f"{d['missing']['status_data_line']} / {d['unreadable']['status_data_line']}"
         + (" (run as root: a 000 folder is still readable)" if d.get("running_as_root") else ""),
         "clear status, app up", d["ok"]),
    ]
    head = (f"# Reliability (bench/reliability.py)\n\nCommand: `{rep['command']}`  \n"
            f"Machine: {rep['machine'].get('cpu_model')}, {rep['machine'].get('cpu_count')} CPUs, shared with other "
            f"work: load average {load[0]:.2f} at the start, {rep['load_end'][0]:.2f} at the end. Wall time "
            f"{rep['wall_s'] / 60:.1f} min.\n\n| check | result | target | met |\n|---|---|---|---|\n")
    return head + "".join(f"| {a_} | {b_} | {c_} | {'yes' if ok else 'NO'} |\n" for a_, b_, c_, ok in rows)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--app-users", type=int, default=20)
    p.add_argument("--app-s", type=float, default=180)
    p.add_argument("--api-clients", type=int, default=20)
    p.add_argument("--api-s", type=float, default=120)
    p.add_argument("--soak-s", type=float, default=600)
    p.add_argument("--warmup-s", type=float, default=60)
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="a short smoke run (seconds per phase)")
    p.add_argument("--data-dir", default=os.environ.get("ROUTERDC_DATA") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "reliability.json"))
    p.add_argument("--markdown", default=str(ROOT / "results" / "reliability.md"))
    a = p.parse_args(argv)
    if a.quick:
        a.app_users, a.app_s, a.api_clients, a.api_s, a.soak_s, a.warmup_s, a.sessions, a.kills = 3, 10, 3, 10, 30, 10, 20, 3
    from bench.machine import machine_info, write_report
    from tests.serving_support import build_router, free_port, tiny_llms, write_config

    t_all = time.monotonic()
    rep: dict[str, Any] = {"command": "python bench/reliability.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "args": vars(a), "machine": machine_info()}
    tmp = Path(tempfile.mkdtemp(prefix="routerdc-reliability-"))
    procs: list[subprocess.Popen] = []
    try:
        models = tiny_llms()
        router = build_router(tmp / "api-router", list(models))
        cfg = write_config(tmp / "models.json", [{"name": n, "backend": "transformers", "model": str(p_)}
                                                 for n, p_ in models.items()])
        app_port, api_port = free_port(), free_port()
        app = start_app(app_port, a.data_dir, tmp / "app.log")
        procs.append(app)
        api = start_api(api_port, router, cfg, tmp / "api.log")
        procs.append(api)
        app_url, api_url = f"http://127.0.0.1:{app_port}/", f"http://127.0.0.1:{api_port}"
        print("servers up", flush=True)

        from gradio_client import Client
        import httpx

        rep["sessions"] = sessions_phase(app, app_url, a.sessions)
        print("sessions", rep["sessions"], flush=True)
        rep["app_users"] = hammer(a.app_users, a.app_s, lambda: Client(app_url, verbose=False),
                                  lambda c, i: route_once(c)).summary()
        print("app users", rep["app_users"], flush=True)
        rep["api_streams"] = hammer(a.api_clients, a.api_s, httpx.Client,
                                    lambda c, i: stream_once(c, api_url)).summary()
        print("api streams", rep["api_streams"], flush=True)
        kills: dict[str, Any] = {}
        kt = threading.Thread(target=lambda: kills.update(kill_loop(a.kills, a.soak_s + 300, tmp, a.data_dir)))
        kt.start()
        rep["soak"] = soak_phase(app, app_url, api, api_url, a.soak_s, a.warmup_s)
        print("soak", json.dumps(rep["soak"])[:2000], flush=True)
        kt.join(a.soak_s + 400)
        rep["kill9"] = kills
        print("kill -9", kills, flush=True)
        for pr in procs:
            stop(pr)
        procs.clear()
        rep["backend_killed"] = backend_killed_phase(tmp, router, models)
        print("backend killed", rep["backend_killed"], flush=True)
        rep["data_dir"] = data_dir_phase(tmp, free_port)
        print("data dir", rep["data_dir"], flush=True)
    finally:
        for pr in procs:
            stop(pr)
        with_logs = ROOT / "bench" / "results" / "reliability-logs"
        with_logs.mkdir(parents=True, exist_ok=True)
        for log in tmp.glob("*.log"):
            shutil.copy(log, with_logs / log.name)
        shutil.rmtree(tmp, ignore_errors=True)
    rep["wall_s"] = round(time.monotonic() - t_all, 1)
    rep["load_end"] = list(os.getloadavg())
    write_report(rep, a.output)
    md = Path(a.markdown)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(rep), encoding="utf-8")
    print(md.read_text())
    return rep


if __name__ == "__main__":
    main()
