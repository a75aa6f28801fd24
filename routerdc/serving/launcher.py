"""Launch one OpenAI-compatible vLLM server process per ``vllm`` candidate, and keep them up.

``python -m routerdc serve-llms --models-config FILE`` (or :class:`Launcher` from the app):

- starts ``<python> -m vllm.entrypoints.openai.api_server --model M --port P ...`` on 127.0.0.1
  for each ``vllm`` candidate, with its ``gpu_memory_utilization`` share and ``max_context`` as
  ``--max-model-len``; the Python of vLLM's own venv is configurable (``--vllm-python`` or
  ``$ROUTERDC_VLLM_PYTHON``), and so is the whole command (``command`` template);
- waits for each server's ``/health``;
- restarts a server that dies (up to ``max_restarts`` times, with backoff);
- stops them all on exit (SIGTERM to each process group, then SIGKILL), leaving no orphans.

- when the candidates' GPU shares do not fit the config's ``gpu.memory_budget``, swaps them with
  vLLM's sleep mode: each server gets ``--enable-sleep-mode`` (and ``VLLM_SERVER_DEV_MODE=1``),
  the servers start one after another, and each is put to sleep once healthy so that the next
  one finds the memory free; the router service then wakes the chosen one per request
  (:mod:`routerdc.serving.swap`). vLLM on CPU refuses sleep mode.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:  # pydantic stays unimported until a config is read
    from routerdc.serving.config import ModelSpec, ModelsConfig

VLLM_PYTHON_ENV = "ROUTERDC_VLLM_PYTHON"
DEFAULT_COMMAND = ("{python}", "-m", "vllm.entrypoints.openai.api_server", "--model", "{model}",
                   "--served-model-name", "{model}", "--host", "127.0.0.1", "--port", "{port}",
                   "--max-model-len", "{max_context}")


class LaunchError(RuntimeError):
    """A server that did not start or become healthy."""


@dataclass
class LaunchOptions:
    """How servers are started.

    Attributes:
        python: the Python of vLLM's venv (default: ``$ROUTERDC_VLLM_PYTHON``, else this Python).
        command: the command template; placeholders ``{python} {model} {port} {max_context}
            {gpu_memory_utilization}``. ``--gpu-memory-utilization`` is appended when the
            candidate sets it and ``gpu`` is true.
        extra_args: appended to every command (e.g. ``--enforce-eager``).
        env: extra environment variables (e.g. ``VLLM_CPU_KVCACHE_SPACE=1``).
        gpu: pass ``--gpu-memory-utilization`` (vLLM on CPU ignores it; false there).
        health_timeout_s: how long to wait for ``/health`` at start and after a restart.
        max_restarts: restarts per server before giving up on it.
        log_dir: where each server's output goes (``<port>.log``); default: discarded.
    """

    python: str | None = None
    command: Sequence[str] = DEFAULT_COMMAND
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    gpu: bool = True
    health_timeout_s: float = 600.0
    max_restarts: int = 3
    log_dir: str | None = None

    def resolved_python(self) -> str:
        return self.python or os.environ.get(VLLM_PYTHON_ENV) or sys.executable


class ManagedServer:
    """One server process: start, health, stop (its whole process group)."""

    def __init__(self, spec: ModelSpec, options: LaunchOptions, sleep_mode: bool = False) -> None:
        self.spec = spec
        self.options = options
        self.sleep_mode = sleep_mode
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.url = f"http://127.0.0.1:{spec.port}"

    def command(self) -> list[str]:
        o, s = self.options, self.spec
        values = {"python": o.resolved_python(), "model": s.model, "port": s.port, "max_context": s.max_context,
                  "gpu_memory_utilization": s.gpu_memory_utilization or 0.9}
        cmd = [str(part).format(**values) for part in o.command]
        if o.gpu and s.gpu_memory_utilization:
            cmd += ["--gpu-memory-utilization", str(s.gpu_memory_utilization)]
        if self.sleep_mode:
            cmd.append("--enable-sleep-mode")
        return cmd + list(o.extra_args)

    def env(self) -> dict[str, str]:
        extra = {"VLLM_SERVER_DEV_MODE": "1"} if self.sleep_mode else {}  # exposes /sleep and /wake_up
        return {**os.environ, **extra, **self.options.env}

    def put_to_sleep(self, timeout: float = 300.0) -> None:
        """``POST /sleep?level=1``: offload the weights and free the KV cache."""
        req = urllib.request.Request(self.url + "/sleep?level=1", method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if r.status != 200:
                    raise LaunchError(f"{self.spec.name}: /sleep answered HTTP {r.status}")
        except OSError as exc:
            raise LaunchError(f"{self.spec.name}: cannot put the server on port {self.spec.port} to sleep: {exc}") \
                from exc

    def start(self) -> None:
        log = subprocess.DEVNULL
        if self.options.log_dir:
            Path(self.options.log_dir).mkdir(parents=True, exist_ok=True)
            log = open(Path(self.options.log_dir) / f"{self.spec.port}.log", "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env(), start_new_session=True)
        except OSError as exc:
            raise LaunchError(f"{self.spec.name}: cannot start {self.command()[0]!r}: {exc}") from exc
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def reap(self) -> None:
        """Kill whatever is left of the last process group (children of a server that died or
        was stopped, e.g. vLLM's engine core or a resource tracker that ignores SIGTERM)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2.0) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise LaunchError(f"{self.spec.name}: server on port {self.spec.port} exited with code {code} "
                                  f"before it was healthy (see {self.options.log_dir or 'its log'})")
            if self.healthy():
                return
            time.sleep(0.5)
        raise LaunchError(f"{self.spec.name}: server on port {self.spec.port} not healthy after {timeout:g} s")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` s, then reap what is left."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        self.reap()
        if p.poll() is None:
            p.wait(timeout=grace)


class Launcher:
    """All ``vllm`` candidates of a config; a context manager that stops them on exit."""

    def __init__(self, config: ModelsConfig, options: LaunchOptions | None = None) -> None:
        self.options = options or LaunchOptions()
        self.sleep_mode = config.uses_sleep_mode
        self.servers = [ManagedServer(m, self.options, self.sleep_mode) for m in config.models if m.backend == "vllm"]
        if not self.servers:
            raise LaunchError("the models config has no 'vllm' candidates to launch")
        ports = [s.spec.port for s in self.servers]
        if len(set(ports)) != len(ports):
            raise LaunchError(f"vllm candidates share ports: {ports}")
        self._stop = threading.Event()
        self._lock = threading.Lock()  # no (re)start once stop() began
        self._watch: threading.Thread | None = None
        self.events: list[str] = []  # restarts and give-ups, for logs and tests

    def start(self, wait: bool = True) -> "Launcher":
        """Start every server (in parallel; one after another, each put to sleep once healthy, in
        sleep mode), wait for their health, then watch them."""
        try:
            if self.sleep_mode:
                for s in self.servers:
                    s.start()
                    s.wait_healthy(self.options.health_timeout_s)
                    s.put_to_sleep()
                    self.events.append(f"{s.spec.name}: loaded and put to sleep")
            else:
                for s in self.servers:
                    s.start()
                if wait:
                    for s in self.servers:
                        s.wait_healthy(self.options.health_timeout_s)
        except BaseException:
            self.stop()
            raise
        self._watch = threading.Thread(target=self._watch_loop, name="vllm-watch", daemon=True)
        self._watch.start()
        return self

    def _watch_loop(self) -> None:
        while not self._stop.wait(1.0):
            for s in self.servers:
                if s.alive() or self._stop.is_set() or s.restarts > self.options.max_restarts:
                    continue
                if s.restarts == self.options.max_restarts:
                    s.reap()
                    s.restarts += 1
                    self.events.append(f"{s.spec.name}: gave up after {self.options.max_restarts} restarts")
                    continue
                s.reap()  # the dead server's children must not outlive it
                s.restarts += 1
                self.events.append(f"{s.spec.name}: died (code {s.proc.returncode}); restart {s.restarts}")
                if self._stop.wait(min(2.0 ** (s.restarts - 1), 30.0)):
                    return
                try:
                    with self._lock:
                        if self._stop.is_set():
                            return
                        s.start()
                    s.wait_healthy(self.options.health_timeout_s)
                    if self.sleep_mode:  # back within the budget; the router wakes it when chosen
                        s.put_to_sleep()
                    self.events.append(f"{s.spec.name}: healthy again")
                except LaunchError as exc:
                    self.events.append(str(exc))

    def healthy(self) -> dict[str, bool]:
        return {s.spec.name: s.healthy() for s in self.servers}

    def stop(self) -> None:
        """Stop watching and stop every server; idempotent."""
        self._stop.set()
        with self._lock:
            for s in self.servers:
                s.stop()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(timeout=5.0)

    def __enter__(self) -> "Launcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_serve_llms_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``serve-llms``."""
    p.add_argument("--models-config", required=True, help="models config; its 'vllm' candidates are launched")
    p.add_argument("--vllm-python", help=f"Python of the vLLM venv (default: ${VLLM_PYTHON_ENV}, else this Python)")
    p.add_argument("--extra-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every vLLM server (repeatable), e.g. --extra-arg=--enforce-eager")
    p.add_argument("--cpu", action="store_true",
                   help="vLLM on CPU: no --gpu-memory-utilization, VLLM_CPU_KVCACHE_SPACE=1 unless set")
    p.add_argument("--log-dir", help="write each server's output to DIR/<port>.log")
    p.add_argument("--health-timeout", type=float, default=600.0, help="seconds to wait for /health (default: 600)")


def cmd_serve_llms(args: argparse.Namespace) -> int:
    """Launch the servers, print their URLs, and keep them up until interrupted."""
    from routerdc.serving.config import load_models_config

    env = {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")} if args.cpu else {}
    options = LaunchOptions(python=args.vllm_python, extra_args=tuple(args.extra_arg), env=env, gpu=not args.cpu,
                            health_timeout_s=args.health_timeout, log_dir=args.log_dir)
    launcher = Launcher(load_models_config(args.models_config), options)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        launcher.start()
        for s in launcher.servers:
            print(f"{s.spec.name}: {s.url}/v1 (pid {s.proc.pid})", file=sys.stderr, flush=True)
        while True:
            time.sleep(5.0)
            for line in launcher.events:
                print(line, file=sys.stderr, flush=True)
            launcher.events.clear()
    except KeyboardInterrupt:
        return 0
    finally:
        launcher.stop()
