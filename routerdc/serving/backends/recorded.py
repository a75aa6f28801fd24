"""Recorded answers: for a RouterBench prompt, the answer the chosen LLM gave in the data set.

This lets a CPU-only deployment show real answers from the 11 RouterBench LLMs. Answers are
labelled as recorded (``source = "recorded"``; the API reports it in the ``routerdc`` field and
the ``X-RouterDC-Source`` header). A prompt that is not in the data gets a clear error.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Iterator, Sequence

from routerdc.data.scoreset import query_key
from routerdc.serving.config import ModelSpec
from routerdc.serving.backends.base import BackendError, Message, Outcome, SamplingParams
from routerdc.serving.backends.tokens import PromptCounter


class NotRecorded(BackendError):
    """The prompt has no recorded answer from this LLM."""

    status = 404


@functools.lru_cache(maxsize=8)
def _answers(files: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """LLM names, and the recorded answers per prompt (whitespace-normalised) of these files."""
    from routerdc.data import load_scores

    llms: tuple[str, ...] = ()
    table: dict[str, tuple[str, ...]] = {}
    for f in files:
        for s in load_scores(f, missing="zero"):  # scores are not used here
            if s.responses is None:
                raise ValueError(f"{f}: has no '<llm>|model_response' columns to serve")
            llms = llms or tuple(s.llms)
            order = [s.llms.index(m) for m in llms]
            for q, row in zip(s.queries, s.responses):
                table.setdefault(query_key(q), tuple(row[i] for i in order))
    return llms, table


class RecordedBackend:
    """Serves ``spec.name``'s recorded answers from RouterBench CSVs (``spec.data_files``)."""

    source = "recorded"

    def __init__(self, spec: ModelSpec, files: Sequence[str | Path]) -> None:
        self.spec = spec
        self.files = tuple(str(Path(f)) for f in files)
        self._counter = PromptCounter(spec)

    def _table(self) -> tuple[int, dict[str, tuple[str, ...]]]:
        try:
            llms, table = _answers(self.files)
        except (OSError, ValueError) as exc:
            raise BackendError(self.spec.name, f"cannot read recorded answers: {exc}", status=503) from exc
        if self.spec.name not in llms:
            raise BackendError(self.spec.name, f"no recorded answers for this LLM in {list(self.files)} "
                                               f"(it has {list(llms)})", status=503)
        return llms.index(self.spec.name), table

    def answer(self, prompt: str) -> str:
        """The recorded answer to ``prompt``; :class:`NotRecorded` if there is none."""
        col, table = self._table()
        row = table.get(query_key(prompt))
        if row is None or not row[col]:
            raise NotRecorded(self.spec.name, "no recorded answer for this prompt; the recorded backend only "
                                              "answers prompts of its RouterBench files")
        return row[col]

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Outcome | None = None) -> Iterator[str]:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        text = self.answer(users[-1] if users else "")
        for piece in re.findall(r"\S+\s*|\s+", text):
            if cancel is not None and cancel.is_set():
                return
            yield piece
        if outcome is not None:  # a recorded answer is served whole: its own length, not max_tokens
            outcome.completion_tokens = self.count_tokens(text)
            outcome.finish_reason = "stop"

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        return self._counter.count(text)

    def health(self) -> bool:
        try:
            self._table()
            return True
        except BackendError:
            return False

    def close(self) -> None:
        pass
