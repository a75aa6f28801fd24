"""The app's generation layer: the models config, its backends, their health, and streamed answers.

Built only when a models config is given (``--models-config`` / ``ROUTERDC_MODELS_CONFIG``); the
serving package is imported then, not at start-up otherwise. Backends are created on first use
and shared by every session and by the routed API mounted beside the UI.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger("routerdc.app")

ANSWER_CHARS = 6_000  # an answer shown beyond this is cut (the stream is stopped)


@dataclass
class Generation:
    """The loaded models config and its registry, or why there is none."""

    path: str
    registry: object | None = None  # routerdc.serving.Registry
    error: str | None = None
    health: dict[str, str] = field(default_factory=dict)  # name -> "ready" | "unavailable: why" | "checking"
    launcher: object | None = None  # routerdc.serving.launcher.Launcher, with --launch-llms
    launch_state: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, path: str, *, check_health: bool = True, launch: bool = False) -> "Generation":
        """Load the config; a bad file becomes ``error`` (shown in the status area), never a crash.

        With ``launch``, the ``vllm`` candidates' servers are started in the background (the app
        does not wait for them; their health shows in the status area) and stopped by :meth:`close`.
        """
        from routerdc.serving import ConfigError, Registry, load_models_config

        try:
            config = load_models_config(path)
        except (ConfigError, OSError) as exc:
            return cls(path, error=str(exc))
        gen = cls(path, registry=Registry(config))
        gen.health = {n: "checking" for n in config.names}
        if launch:
            gen.launch_state = "starting"
            threading.Thread(target=gen._launch, args=(check_health,), name="launch-llms", daemon=True).start()
        elif check_health:
            threading.Thread(target=gen.check_health, name="health", daemon=True).start()
        return gen

    def _launch(self, check_health: bool) -> None:
        from routerdc.serving.launcher import LaunchError, Launcher

        try:
            self.launcher = Launcher(self.registry.config)  # type: ignore[union-attr]
            self.launcher.start()  # type: ignore[attr-defined]
            self.launch_state = f"{len(self.launcher.servers)} vLLM server(s) up"  # type: ignore[attr-defined]
        except (LaunchError, OSError) as exc:
            self.launch_state = f"failed: {exc}"
            log.warning("launching the vLLM servers failed: %s", exc)
        if check_health:
            self.check_health()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.registry.names) if self.registry is not None else ()

    def spec(self, name: str):
        return self.registry.config.get(name)

    def check_health(self, names: Sequence[str] | None = None) -> dict[str, str]:
        """Probe each candidate without loading weights: servers by HTTP, local models by their files."""
        for name in names or self.names:
            status = _probe(self, name)
            with self._lock:
                self.health[name] = status
        return dict(self.health)

    def mismatch(self, llms: Sequence[str]) -> str | None:
        """Why this config cannot serve a router with these LLM names, or None."""
        try:
            self.registry.check_router(llms)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - ConfigError
            return str(exc)
        return None

    def status_lines(self, llms: Sequence[str]) -> list[str]:
        if self.registry is None:
            return [f"- **Generation backend**: none; the models config `{self.path}` cannot be used: "
                    f"{html.escape(str(self.error))}"]
        kinds = sorted({self.spec(n).backend for n in self.names})
        lines = [f"- **Generation backend**: models config `{self.path}` with {len(self.names)} candidates "
                 f"({', '.join(kinds)}); the routed OpenAI-compatible API is at `/v1/chat/completions`."]
        if self.launch_state:
            lines.append(f"  - vLLM servers launched by the app: {html.escape(self.launch_state)}")
        if self.registry.swapper is not None:  # type: ignore[attr-defined]
            lines.append("  - the vllm candidates do not fit the GPU together: vLLM's sleep mode swaps them "
                         "(the first answer of a sleeping LLM waits for it to wake)")
        missing = [n for n in llms if n not in self.names]
        if missing:
            lines.append(f"  - no candidate for {len(missing)} of this router's LLMs, which therefore cannot answer: "
                         + ", ".join(f"`{n}`" for n in missing))
        with self._lock:
            bad = {n: s for n, s in self.health.items() if s != "ready"}
        for n, s in list(bad.items())[:8]:
            lines.append(f"  - `{n}`: {s}")
        return lines

    def close(self) -> None:
        if self.launcher is not None:
            self.launcher.stop()  # type: ignore[attr-defined]
        if self.registry is not None:
            self.registry.close()  # type: ignore[attr-defined]


def _probe(gen: Generation, name: str) -> str:
    spec = gen.spec(name)
    try:
        if spec.backend in ("openai", "vllm", "recorded"):
            return "ready" if gen.registry.get(name).health() else (  # type: ignore[union-attr]
                f"unavailable: no answer from {spec.endpoint}" if spec.endpoint else "unavailable")
        return "ready" if _weights_reachable(str(spec.model)) else (
            f"unavailable: no weights reachable for `{spec.model}` (not a local folder, not in the Hugging Face "
            "cache, and the hub is offline)")
    except Exception as exc:  # noqa: BLE001 - shown in the status area
        return f"unavailable: {type(exc).__name__}: {exc}"


def _weights_reachable(model: str) -> bool:
    """A local model folder, or a hub id whose config is in the local cache (offline-safe)."""
    if Path(model).expanduser().is_dir():
        return (Path(model).expanduser() / "config.json").exists()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # noqa: BLE001 - an invalid id
        return False


def stream_answer(gen: Generation, llm: str, query: str, cancel: threading.Event,
                  max_tokens: int | None = None) -> Iterator[str]:
    """Markdown of the chosen LLM's answer, growing as tokens arrive; errors become a message.

    The generation stops when ``cancel`` is set or the caller closes the generator (a user who
    presses Stop or leaves).
    """
    from routerdc.serving import BackendError

    if llm not in gen.names:
        yield f"The models config `{gen.path}` has no candidate `{llm}`, so it cannot answer."
        return
    spec = gen.spec(llm)
    # The routed API's request flow (routerdc.serving.Registry.stream): backend, clamped sampling, stream.
    backend, _, chunks = gen.registry.stream(llm, [{"role": "user", "content": query}], cancel,  # type: ignore[union-attr]
                                             max_tokens=max_tokens)
    recorded = getattr(backend, "source", "generated") == "recorded"
    head = (f"#### Recorded answer of `{llm}` (RouterBench, **recorded**, not generated live)" if recorded
            else f"#### Answer of `{llm}` ({spec.backend} backend)")
    parts: list[str] = []
    t0 = time.perf_counter()
    try:
        yield f"{head}\n\n*generating…*"
        for piece in chunks:
            parts.append(piece)
            text = "".join(parts)
            if len(text) > ANSWER_CHARS:
                cancel.set()
                yield _render(head, text[:ANSWER_CHARS] + "\n…(truncated)", "cut at the display limit")
                return
            yield _render(head, text, "generating…")
        took = time.perf_counter() - t0
        yield _render(head, "".join(parts), f"done in {took:.1f} s" if not recorded else "recorded")
    except BackendError as exc:
        done = "".join(parts)
        yield (_render(head, done, "stopped") + "\n\n" if done else f"{head}\n\n") + \
            f"**The answer failed:** {html.escape(str(exc))}. The routing decision above still stands."
    finally:
        cancel.set()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _render(head: str, text: str, state: str) -> str:
    body = text.replace("~~~", "~ ~ ~")
    return f"{head}\n\n~~~text\n{body}\n~~~\n\n*{state}*"
