"""Any OpenAI-compatible server by base URL (vLLM, TGI, llama.cpp, a hosted API, our own).

Uses the official ``openai`` client: SSE streaming, timeouts, and its retries with exponential
backoff on connection errors, 429 and 5xx (``limits.max_retries``). Failures become
:class:`~.base.BackendError` subclasses whose message names the model and the cause. Closing the
stream (on cancel) closes the HTTP connection, so the server aborts the generation.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Iterator, Sequence

from routerdc.serving.config import Limits, ModelSpec
from routerdc.serving.backends.base import BackendError, BackendUnavailable, Message, Outcome, SamplingParams, check_fits
from routerdc.serving.backends.tokens import PromptCounter


class OpenAIBackend:
    """A candidate served over the OpenAI protocol (``openai`` and ``vllm`` kinds)."""

    def __init__(self, spec: ModelSpec, limits: Limits | None = None) -> None:
        from openai import OpenAI, Timeout

        self.spec = spec
        self.limits = limits or Limits()
        self.base_url = spec.endpoint
        key = os.environ.get(spec.api_key_env, "") if spec.api_key_env else ""
        self.client = OpenAI(base_url=self.base_url, api_key=key or "EMPTY",
                             timeout=Timeout(self.limits.request_timeout_s, connect=5.0),
                             max_retries=self.limits.max_retries)
        self._counter = PromptCounter(spec)

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        return self._counter.count(text)

    def health(self) -> bool:
        try:
            self.client.with_options(timeout=3.0, max_retries=0).models.list()
            return True
        except Exception:
            return False

    def _error(self, exc: Exception) -> BackendError:
        import openai

        name, url = self.spec.name, self.base_url
        if isinstance(exc, openai.APITimeoutError):
            return BackendUnavailable(name, f"timed out after {self.limits.request_timeout_s:g} s at {url}")
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailable(name, f"cannot connect to {url}: {exc.__cause__ or exc}")
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, (dict, str)) else exc.message
            if isinstance(body, dict):
                body = body.get("message") or body.get("error", body)
                if isinstance(body, dict):
                    body = body.get("message", body)
            if exc.status_code == 503:  # down, overloaded or asleep: the caller may retry elsewhere
                return BackendUnavailable(name, f"{url} answered HTTP 503: {body}")
            status = 400 if exc.status_code in (400, 413, 422) else 502
            return BackendError(name, f"{url} answered HTTP {exc.status_code}: {body}", status=status)
        return BackendError(name, f"connection to {url} broke mid-answer: {type(exc).__name__}: {exc}")

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Outcome | None = None) -> Iterator[str]:
        cancel = cancel or threading.Event()
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        params = check_fits(self.spec, self.count_tokens(msgs), params)
        common: dict[str, Any] = dict(model=self.spec.model, max_tokens=params.max_tokens, n=1, stream=True,
                                      temperature=params.temperature, top_p=params.top_p,
                                      stream_options={"include_usage": True})  # the server's own counts
        if params.seed is not None:
            common["seed"] = params.seed
        if params.stop:
            common["stop"] = list(params.stop)
        try:
            if self.spec.prompt_format == "completion":
                stream = self.client.completions.create(prompt=self._counter.render(msgs), **common)
            else:
                stream = self.client.chat.completions.create(messages=msgs, **common)
        except Exception as exc:
            raise self._error(exc) from exc
        finished = False
        try:
            for event in stream:
                if cancel.is_set():
                    return
                usage = getattr(event, "usage", None)
                if usage is not None and outcome is not None:
                    outcome.completion_tokens = usage.completion_tokens
                    outcome.prompt_tokens = usage.prompt_tokens
                if not event.choices:
                    continue
                choice = event.choices[0]
                if choice.finish_reason and outcome is not None:
                    outcome.finish_reason = "length" if choice.finish_reason == "length" else "stop"
                finished = finished or bool(choice.finish_reason)
                text = choice.text if self.spec.prompt_format == "completion" else choice.delta.content
                if text:
                    yield text
        except GeneratorExit:
            raise
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            stream.close()
        if not finished and not cancel.is_set():
            raise BackendError(self.spec.name, f"the stream from {self.base_url} ended before the answer finished")

    def close(self) -> None:
        self.client.close()
