"""Swap ``vllm`` candidates on one GPU with vLLM's sleep mode.

When the candidates' ``gpu_memory_utilization`` shares add up to more than the config's
``gpu.memory_budget``, they cannot all be awake. The launcher then starts every server with
``--enable-sleep-mode`` (and ``VLLM_SERVER_DEV_MODE=1``, which exposes the routes) and puts each
to sleep once it is loaded. :class:`SleepSwapper`, in the process that forwards requests (the
routed API or the app), keeps the awake shares within the budget:

- before a request goes to candidate ``c``, :meth:`SleepSwapper.use` wakes ``c``
  (``POST /wake_up``), first putting the least recently used *idle* awake candidates to sleep
  (``POST /sleep?level=1``: weights to CPU memory, KV cache freed) until ``c`` fits;
- a candidate with requests in flight is never put to sleep; a request that finds the GPU busy
  waits (up to ``gpu.swap_timeout_s``) and then fails with a clear 503.

The state of each server is read from ``GET /is_sleeping`` on first use, so a swapper joining
servers that are already up (or restarted) starts from the truth.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, TYPE_CHECKING, Iterator, Sequence

import httpx

from routerdc.serving.backends.base import BackendUnavailable, Message, SamplingParams

if TYPE_CHECKING:
    from routerdc.serving.backends import Backend
    from routerdc.serving.config import ModelsConfig


def server_root(endpoint: str) -> str:
    """``http://host:port`` of an OpenAI base URL such as ``http://host:port/v1``."""
    root = endpoint.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class SleepSwapper:
    """Keeps the awake vllm candidates within the GPU budget, waking one on demand.

    Args:
        config: the models config (its ``vllm`` candidates and ``gpu`` plan).
        http_timeout_s: timeout of one sleep / wake-up call (a wake-up moves weights back).
    """

    def __init__(self, config: "ModelsConfig", *, http_timeout_s: float = 120.0) -> None:
        self.budget = config.gpu.memory_budget
        self.timeout_s = config.gpu.swap_timeout_s
        self.roots = {m.name: server_root(m.endpoint or "") for m in config.vllm_models}
        self.shares = {m.name: config.gpu_share(m) for m in config.vllm_models}
        self._awake: dict[str, bool] = {}  # known states; unknown ones are read from the server
        self._inflight = {n: 0 for n in self.roots}
        self._last_used = {n: 0.0 for n in self.roots}
        self._cond = threading.Condition()
        self._http = httpx.Client(timeout=http_timeout_s)
        self.events: list[str] = []  # "sleep A", "wake B", in order (logs and tests)

    # ---------------------------------------------------------------- server calls
    def _call(self, name: str, method: str, path: str) -> httpx.Response:
        url = self.roots[name] + path
        try:
            r = self._http.request(method, url)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(name, f"sleep-mode call {method} {url} failed: {type(exc).__name__}: {exc}") \
                from exc
        if r.status_code != 200:
            raise BackendUnavailable(name, f"sleep-mode call {method} {url} answered HTTP {r.status_code}: "
                                           f"{r.text[:300]} (was the server started with --enable-sleep-mode "
                                           "and VLLM_SERVER_DEV_MODE=1?)")
        return r

    def is_awake(self, name: str) -> bool:
        """The server's state (asked once, then tracked)."""
        if name not in self._awake:
            self._awake[name] = not bool(self._call(name, "GET", "/is_sleeping").json().get("is_sleeping"))
        return self._awake[name]

    def _sleep(self, name: str) -> None:
        self._call(name, "POST", "/sleep?level=1")
        self._awake[name] = False
        self.events.append(f"sleep {name}")

    def _wake(self, name: str) -> None:
        self._call(name, "POST", "/wake_up")
        self._awake[name] = True
        self.events.append(f"wake {name}")

    # ---------------------------------------------------------------- the policy
    def awake(self) -> list[str]:
        with self._cond:
            return [n for n in self.roots if self.is_awake(n)]

    def acquire(self, name: str) -> None:
        """Make ``name`` awake within the budget and count one request in flight on it."""
        if name not in self.roots:
            raise KeyError(name)
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while True:
                others = [n for n in self.roots if n != name and self.is_awake(n)]
                used = sum(self.shares[n] for n in others)
                if used + self.shares[name] <= self.budget + 1e-9:
                    if not self.is_awake(name):
                        self._wake(name)
                    break
                idle = sorted((n for n in others if self._inflight[n] == 0), key=self._last_used.__getitem__)
                if idle:
                    self._sleep(idle[0])
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BackendUnavailable(name, f"the GPU is busy: {others} are answering and {name!r} "
                                                   f"cannot be woken within gpu.memory_budget={self.budget:g} "
                                                   f"(waited {self.timeout_s:g} s)")
                self._cond.wait(timeout=left)  # until a candidate finishes a request
            self._inflight[name] += 1
            self._last_used[name] = time.monotonic()

    def release(self, name: str) -> None:
        with self._cond:
            self._inflight[name] = max(0, self._inflight[name] - 1)
            self._last_used[name] = time.monotonic()
            self._cond.notify_all()

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        self.acquire(name)
        try:
            yield
        finally:
            self.release(name)

    def forget(self, name: str) -> None:
        """Drop the known state of ``name`` (e.g. after its server restarted)."""
        with self._cond:
            self._awake.pop(name, None)

    def close(self) -> None:
        self._http.close()


class SwappedBackend:
    """A vllm candidate's backend whose requests first wake it through the :class:`SleepSwapper`."""

    def __init__(self, inner: "Backend", swapper: SleepSwapper) -> None:
        self.inner = inner
        self.swapper = swapper
        self.spec = inner.spec

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Any = None) -> Iterator[str]:
        with self.swapper.use(self.spec.name):
            try:
                yield from self.inner.stream(messages, params, cancel, outcome)
            except BackendUnavailable:
                self.swapper.forget(self.spec.name)  # e.g. restarted asleep: read its state again next time
                raise

    def count_tokens(self, text):  # type: ignore[no-untyped-def]
        return self.inner.count_tokens(text)

    def health(self) -> bool:
        return self.inner.health()

    def close(self) -> None:
        self.inner.close()
