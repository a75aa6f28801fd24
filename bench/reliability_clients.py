"""Processes and clients of bench/reliability.py: starting the app and the API on 127.0.0.1,
their /proc figures, one normal or bad request of each kind, and a bounded thread pool of users."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KEY = "bench-" + uuid.uuid4().hex[:12]
QUERIES = [
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33",
    "以下哪个城市是中国的首都？A. 上海 B. 北京 C. 广州 D. 深圳",
    "🙂🚀 what is 2 + 2?",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}



# ----------------------------------------------------------------------------- processes
def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MiB), threads and open files of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1), "threads": int(fields["Threads"]),
            "open_files": len(os.listdir(f"/proc/{pid}/fd"))}


def wait_until(check: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
               what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} not up in {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_app(port: int, data_dir: str, log: Path, *extra: str) -> subprocess.Popen:
    from gradio_client import Client

    cmd = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--data-dir", data_dir,
           "--map-method", "pca", "--max-rows", "200", *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    wait_until(lambda: bool(Client(f"http://127.0.0.1:{port}/", verbose=False)), 300, proc, "app")
    return proc


def start_api(port: int, checkpoint: Path, config: Path, log: Path, key: str | None = KEY) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "routerdc", "serve", "--checkpoint", str(checkpoint), "--models-config", str(config),
           "--host", "127.0.0.1", "--port", str(port), "--preload", "--log-level", "warning"]
    env = {**ENV, "ROUTERDC_API_KEY": key} if key else {k: v for k, v in ENV.items() if k != "ROUTERDC_API_KEY"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200, 180, proc, "api")
    return proc


# ----------------------------------------------------------------------------- clients
def stream_once(client: Any, url: str, max_tokens: int = 12, timeout: float = 60.0) -> tuple[bool, str]:
    """One streamed chat completion; ok only with content and a final [DONE]."""
    body = {"model": "routerdc", "messages": [{"role": "user", "content": random.choice(QUERIES)}],
            "stream": True, "max_tokens": max_tokens, "temperature": 0.0}
    got, done, err = 0, False, ""
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout,
                       headers={"Authorization": f"Bearer {KEY}"}) as r:
        if r.status_code != 200:
            return False, f"HTTP {r.status_code}: {r.read()[:200]!r}"
        for line in r.iter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                obj = json.loads(line[6:])
                if "error" in obj:
                    err = obj["error"]["message"]
                elif obj["choices"][0]["delta"].get("content"):
                    got += 1
    return (done and got > 0 and not err), err or ("" if done else "no [DONE]")


BAD_API = [  # (name, method kwargs, expected status)
    ("no key", dict(headers={}), 401),
    ("wrong key", dict(headers={"Authorization": "Bearer wrong"}), 401),
    ("2 MB body", dict(content=b'{"model": "routerdc", "messages": [{"role": "user", "content": "'
                       + b"x" * (2 << 20) + b'"}]}'), 413),
    ("lone surrogate", dict(content=b'{"model": "routerdc", "messages": [{"role": "user", "content": "a\\ud800b"}]}'),
     400),
    ("seed 2^70", dict(json={"model": "routerdc", "messages": [{"role": "user", "content": "hi"}], "seed": 2**70}), 400),
    ("4 x 100k stop", dict(json={"model": "routerdc", "messages": [{"role": "user", "content": "hi"}],
                                  "stop": ["y" * 100_000] * 4}), 400),
    ("1000 messages", dict(json={"model": "routerdc", "messages": [{"role": "user", "content": "hi"}] * 1000}), 400),
    ("not JSON", dict(content=b"{not json"), 400),
]


def bad_api_once(client: Any, url: str, i: int) -> tuple[bool, str]:
    name, kw, want = BAD_API[i % len(BAD_API)]
    kw = dict(kw)
    override = kw.pop("headers", None)
    headers = {"Content-Type": "application/json",
               **(override if override is not None else {"Authorization": f"Bearer {KEY}"})}
    if override is not None:
        kw = {"json": {"model": "routerdc", "messages": [{"role": "user", "content": "hi"}]}}
    t = time.perf_counter()
    r = client.post(url + "/v1/chat/completions", headers=headers, timeout=30, **kw)
    ms = (time.perf_counter() - t) * 1000
    ok = r.status_code == want and "error" in r.json()
    return ok, f"{name}: HTTP {r.status_code} in {ms:.0f} ms"


def route_once(client: Any) -> tuple[bool, str]:
    out = client.predict(random.choice(QUERIES), 1.0, api_name="/route")
    return bool(out[7]["llm"]), ""


def bad_app_once(client: Any, i: int) -> tuple[bool, str]:
    bad = ["", " \x00 ", "a\ud800b", "x" * 200_000][i % 4]
    try:
        client.predict(bad, 1.0, api_name="/route")
    except Exception as exc:  # noqa: BLE001 - the app's clear message (AppError)
        msg = str(exc)
        return ("Unexpected error" not in msg and len(msg) > 10), msg[:120]
    return False, "accepted a bad query"


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = self.fail = 0
        self.errors: list[str] = []
        self.ms: list[float] = []

    def run(self, fn: Callable[[], tuple[bool, str]]) -> None:
        t = time.perf_counter()
        try:
            ok, why = fn()
        except Exception as exc:  # noqa: BLE001 - counted as a failure
            ok, why = False, f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.ms.append((time.perf_counter() - t) * 1000)
            if ok:
                self.ok += 1
            else:
                self.fail += 1
                if len(self.errors) < 10:
                    self.errors.append(why[:300])

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.ms) or [0.0]
        return {"requests": self.ok + self.fail, "failures": self.fail, "median_ms": round(ms[len(ms) // 2], 1),
                "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1), "errors": self.errors}


def hammer(n: int, seconds: float, make: Callable[[], Any], step: Callable[[Any, int], tuple[bool, str]]) -> Tally:
    """``n`` threads, each with its own client from ``make()``, calling ``step`` until the deadline."""
    tally = Tally()
    deadline = time.monotonic() + seconds

    def user(u: int) -> None:
        try:
            c = make()
        except Exception as exc:  # noqa: BLE001
            why = f"client setup: {exc}"
            tally.run(lambda: (False, why))
            return
        i = u
        while time.monotonic() < deadline:
            tally.run(lambda: step(c, i))
            i += 1

    threads = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    return tally
