"""Counting a candidate's tokens with its own tokenizer, in its prompt format."""

from __future__ import annotations

import threading
from typing import Any, Sequence

from routerdc.serving.config import ModelSpec
from routerdc.serving.backends.base import BackendUnavailable, Message, render_prompt


class PromptCounter:
    """Renders messages as the candidate sees them and counts their tokens.

    The tokenizer (``spec.tokenizer_source``) is loaded lazily on first use. With no tokenizer
    source, counts fall back to a conservative estimate of one token per 3 characters.
    """

    def __init__(self, spec: ModelSpec, tokenizer: Any | None = None) -> None:
        self.spec = spec
        self._tok = tokenizer
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any | None:
        if self._tok is None and self.spec.tokenizer_source:
            with self._lock:
                if self._tok is None:
                    from transformers import AutoTokenizer

                    try:
                        self._tok = AutoTokenizer.from_pretrained(self.spec.tokenizer_source)
                    except Exception as exc:
                        raise BackendUnavailable(self.spec.name, f"cannot load tokenizer "
                                                 f"{self.spec.tokenizer_source!r}: {exc}") from exc
        return self._tok

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text: the chat template (``chat``) or plain text (``completion``)."""
        tok = self.tokenizer
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        if self.spec.prompt_format == "chat" and tok is not None and getattr(tok, "chat_template", None):
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return render_prompt(msgs)

    def count(self, text: str | Sequence[Message]) -> int:
        """Tokens of ``text`` (a string, or messages rendered first)."""
        if not isinstance(text, str):
            text = self.render(text)
        tok = self.tokenizer
        if tok is None:
            return max(1, -(-len(text) // 3))
        return len(tok(text, add_special_tokens=False)["input_ids"])
