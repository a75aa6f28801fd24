"""Session affinity for the routed API: the first turn of a conversation is routed, later turns
stay on the same LLM.

A request names its conversation with ``routerdc: {"session": ID}`` (or, failing that, the
OpenAI ``user`` field); ``routerdc: {"reroute": true}`` routes it again and keeps the new choice.
A session lives ``ttl_s`` seconds after its last turn and at most ``max_sessions`` are kept (the
least recently used goes first), so the store is bounded in time and memory.

The store is an ``OrderedDict`` in last-use order under one lock: with one TTL for all, that
order is also the order of expiry, so expired sessions are dropped from the front in O(expired)
per call. (``cachetools.TTLCache`` does the same but its current release needs Python 3.11 and
this project supports 3.10; the clock is injected here so tests can expire sessions without
sleeping.)
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["DEFAULT_MAX_SESSIONS", "DEFAULT_TTL_S", "SessionConfig", "SessionStore"]

DEFAULT_TTL_S = 1800.0  # 30 minutes without a turn
DEFAULT_MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class SessionConfig:
    """Bounds of the session store.

    Attributes:
        ttl_s: a session ends this many seconds after its last turn.
        max_sessions: at most this many live sessions; a new one beyond it evicts the least
            recently used.
    """

    ttl_s: float = DEFAULT_TTL_S
    max_sessions: int = DEFAULT_MAX_SESSIONS

    def __post_init__(self) -> None:
        if not (isinstance(self.ttl_s, (int, float)) and math.isfinite(self.ttl_s) and self.ttl_s > 0):
            raise ValueError(f"the session TTL must be a finite number of seconds > 0, got {self.ttl_s!r}")
        if not (isinstance(self.max_sessions, int) and self.max_sessions >= 1):
            raise ValueError(f"max_sessions must be an integer >= 1, got {self.max_sessions!r}")


class SessionStore:
    """Thread-safe map of session key -> the LLM its conversation stays on, with TTL and LRU bounds.

    Args:
        config: the TTL and the bound.
        clock: seconds, monotonic (default :func:`time.monotonic`; tests inject their own).
    """

    def __init__(self, config: SessionConfig = SessionConfig(), clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (llm, last use)
        self.evicted = 0  # sessions dropped by the LRU bound (not by expiry), for status and tests

    def _purge(self, now: float) -> None:
        ttl = self.config.ttl_s
        while self._items:
            key, (_, last) = next(iter(self._items.items()))
            if now - last < ttl:
                return
            del self._items[key]

    def _put(self, key: str, llm: str, now: float) -> None:
        self._items[key] = (llm, now)
        self._items.move_to_end(key)
        while len(self._items) > self.config.max_sessions:
            self._items.popitem(last=False)
            self.evicted += 1

    def get(self, key: str) -> str | None:
        """The live session's LLM, or None (never seen, expired or evicted); does not refresh it."""
        with self._lock:
            self._purge(self._clock())
            item = self._items.get(key)
            return None if item is None else item[0]

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._items)

    def decide(self, key: str, choice: str, *, reroute: bool = False,
               available: Callable[[str], bool] = lambda llm: True) -> tuple[str, dict[str, Any]]:
        """The LLM of this turn and what was decided, in one atomic step.

        A live session whose LLM is still ``available`` keeps it (``"kept"``) unless ``reroute``;
        otherwise the turn goes to the router's ``choice`` and the session now stays there
        (``"routed"``, with ``reason`` ``"new"``, ``"reroute"`` or ``"unavailable"`` and the
        ``previous`` LLM when there was one). Either way the session's TTL starts again.
        """
        with self._lock:
            now = self._clock()
            self._purge(now)
            item = self._items.get(key)
            prev = None if item is None else item[0]
            if prev is not None and not reroute and available(prev):
                self._put(key, prev, now)
                return prev, {"decision": "kept"}
            self._put(key, choice, now)
        info: dict[str, Any] = {"decision": "routed",
                                "reason": "new" if prev is None else ("reroute" if reroute else "unavailable")}
        if prev is not None:
            info["previous"] = prev
        return choice, info

    def move(self, key: str, old: str, new: str) -> bool:
        """Rebind ``key`` from ``old`` to ``new`` (its LLM failed); False when it no longer holds ``old``."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            item = self._items.get(key)
            if item is None or item[0] != old:
                return False
            self._put(key, new, now)
            return True

    def forget(self, key: str, llm: str | None = None) -> None:
        """Drop ``key`` (only while it is bound to ``llm``, when given)."""
        with self._lock:
            item = self._items.get(key)
            if item is not None and (llm is None or item[0] == llm):
                del self._items[key]

    def status(self) -> dict[str, Any]:
        return {"live": len(self), "ttl_s": self.config.ttl_s, "max_sessions": self.config.max_sessions,
                "evicted": self.evicted}
