"""The backends of a models config, created on first use and shared by all requests."""

from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

from routerdc.serving.backends import Backend, Message, Outcome, SamplingParams, make_backend
from routerdc.serving.config import ModelsConfig


class Registry:
    """Maps each candidate name to its backend.

    Args:
        config: the models config.
        backends: ready backends by name (e.g. shared with the app); the rest are made from the
            config when first needed.
    """

    def __init__(self, config: ModelsConfig, backends: dict[str, Backend] | None = None) -> None:
        self.config = config
        self._backends: dict[str, Backend] = dict(backends or {})
        self._lock = threading.Lock()
        self.swapper = None
        if config.uses_sleep_mode:  # vllm candidates that do not fit the GPU together
            from routerdc.serving.swap import SleepSwapper

            self.swapper = SleepSwapper(config)

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names

    def check_router(self, llm_names: Sequence[str]) -> None:
        """See :meth:`ModelsConfig.check_router`."""
        self.config.check_router(llm_names)

    def get(self, name: str) -> Backend:
        """The backend of candidate ``name`` (KeyError if the config has none)."""
        spec = self.config.get(name)
        with self._lock:
            if name not in self._backends:
                backend = make_backend(spec, self.config)
                if self.swapper is not None and spec.backend == "vllm":
                    from routerdc.serving.swap import SwappedBackend

                    backend = SwappedBackend(backend, self.swapper)
                self._backends[name] = backend
            return self._backends[name]

    def stream(self, name: str, messages: Sequence[Message], cancel: threading.Event, outcome: Outcome | None = None,
               **sampling: Any) -> tuple[Backend, SamplingParams, Iterator[str]]:
        """Start candidate ``name``'s answer: its backend, the request's sampling (``max_tokens``,
        ``temperature``, ``top_p``, ``seed``, ``stop``; None for the candidate's defaults) clamped to the
        config's limits, and the stream of text pieces (stops when ``cancel`` is set). The one request
        flow of the routed API and the app."""
        backend = self.get(name)
        params = SamplingParams.clamp(self.config.get(name), self.config.limits, **sampling)
        return backend, params, backend.stream(list(messages), params, cancel, outcome)

    def active(self) -> int:
        """Generations in flight in in-process backends."""
        return sum(int(getattr(b, "active", 0)) for b in self._backends.values())

    def close(self) -> None:
        with self._lock:
            for b in self._backends.values():
                b.close()
            self._backends.clear()
            if self.swapper is not None:
                self.swapper.close()
