"""The one small interface every candidate backend implements, and its errors.

A backend turns chat messages into a stream of text chunks::

    cancel = threading.Event()
    for chunk in backend.stream(messages, params, cancel):
        ...

Setting ``cancel`` (from any thread) stops generation promptly; :meth:`Backend.health` says
whether the backend can answer now; :meth:`Backend.count_tokens` counts with the candidate's own
tokenizer, so that :func:`check_fits` can refuse a prompt that does not fit before it is sent.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator, Mapping, Protocol, Sequence, runtime_checkable

from routerdc.serving.config import Limits, ModelSpec

Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


class BackendError(RuntimeError):
    """A backend that cannot answer (down, timed out, broke mid-stream). ``status`` is the HTTP code."""

    status = 502

    def __init__(self, model: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{model}: {message}")
        self.model = model
        if status is not None:
            self.status = status


class BackendUnavailable(BackendError):
    """The backend is down or unreachable."""

    status = 503


class PromptTooLong(BackendError):
    """The prompt does not fit the candidate's context."""

    status = 400

    def __init__(self, model: str, prompt_tokens: int, max_context: int) -> None:
        super().__init__(model, f"the prompt has {prompt_tokens} tokens but model {model!r} accepts at most "
                                f"{max_context} tokens of context (prompt + answer)")
        self.prompt_tokens = prompt_tokens
        self.max_context = max_context


@dataclass
class Outcome:
    """What a backend reports about one finished answer, from its own counts (filled in as the
    stream ends; ``None`` where the backend does not know): the tokens it generated and read,
    and why it stopped (``"stop"``: end of answer or a stop string; ``"length"``: max_tokens)."""

    completion_tokens: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    cost: float | None = None  # dollars, where the backend knows the answer's price (recorded answers)


@dataclass(frozen=True)
class SamplingParams:
    """Clamped sampling parameters: one answer, bounded length, finite temperature and top_p."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def clamp(cls, spec: ModelSpec, limits: Limits, *, max_tokens: int | None = None,
              temperature: float | None = None, top_p: float | None = None, seed: int | None = None,
              stop: Sequence[str] = ()) -> "SamplingParams":
        """The request's values (else the candidate's defaults), forced into safe ranges."""
        d = spec.sampling
        mt = d.max_tokens if max_tokens is None else int(max_tokens)
        mt = max(1, min(mt, limits.max_tokens))
        t = d.temperature if temperature is None or not math.isfinite(temperature) else float(temperature)
        p = d.top_p if top_p is None or not math.isfinite(top_p) else float(top_p)
        return cls(max_tokens=mt, temperature=min(max(t, 0.0), 2.0), top_p=min(max(p, 1e-3), 1.0),
                   seed=seed, stop=tuple(stop))


def check_fits(spec: ModelSpec, prompt_tokens: int, params: SamplingParams) -> SamplingParams:
    """Raise :class:`PromptTooLong` if the prompt leaves no room; else shrink max_tokens to fit."""
    room = spec.max_context - prompt_tokens
    if room < 1:
        raise PromptTooLong(spec.name, prompt_tokens, spec.max_context)
    if params.max_tokens <= room:
        return params
    return SamplingParams(room, params.temperature, params.top_p, params.seed, params.stop)


def render_prompt(messages: Sequence[Message]) -> str:
    """Plain-completion rendering of chat messages (for ``prompt_format: completion``)."""
    if len(messages) == 1 and messages[0].get("role") == "user":
        return messages[0]["content"]
    parts = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


@runtime_checkable
class Backend(Protocol):
    """A candidate LLM that streams text."""

    spec: ModelSpec

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Outcome | None = None) -> Iterator[str]:
        """Text chunks of the answer; stops early when ``cancel`` is set. At the end the backend
        fills ``outcome`` (when given) from its own counts."""
        ...

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        """Tokens of a text, or of messages rendered in the candidate's prompt format."""
        ...

    def health(self) -> bool:
        """Whether the backend can answer now."""
        ...

    def close(self) -> None:
        """Release resources (connections, model weights)."""
        ...
