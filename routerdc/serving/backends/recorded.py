"""Recorded answers: for a RouterBench prompt, the answer the chosen LLM gave in the data set.

This lets a CPU-only deployment show real answers from the 11 RouterBench LLMs. Answers are
labelled as recorded (``source = "recorded"``; the API reports it in the ``routerdc`` field and
the ``X-RouterDC-Source`` header), with the price RouterBench recorded for that answer
(``<llm>|total_cost``, dollars; :attr:`Outcome.cost`, the API's ``routerdc.cost``). A prompt that
is not in the data gets a clear error.
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

from routerdc.data.scoreset import query_key
from routerdc.serving.config import ModelSpec
from routerdc.serving.backends.base import BackendError, Message, Outcome, SamplingParams
from routerdc.serving.backends.tokens import PromptCounter


class NotRecorded(BackendError):
    """The prompt has no recorded answer from this LLM."""

    status = 404


@functools.lru_cache(maxsize=8)
def _answers(files: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, tuple[Any, int]]]:
    """LLM names, and per prompt (:func:`routerdc.data.query_key`) the score set and row that record
    its answers (read with :meth:`routerdc.data.ScoreSet.recorded`)."""
    from routerdc.data import load_scores

    llms: tuple[str, ...] = ()
    table: dict[str, tuple[Any, int]] = {}
    for f in files:
        for s in load_scores(f, missing="zero"):  # scores are not used here
            if s.responses is None:
                raise ValueError(f"{f}: has no '<llm>|model_response' columns to serve")
            llms = llms or tuple(s.llms)
            missing = [m for m in llms if m not in s.llms]
            if missing:
                raise ValueError(f"{f}: no recorded answers of {missing}, which the other files have")
            for i, q in enumerate(s.queries):
                table.setdefault(query_key(q), (s, i))
    return llms, table


class RecordedBackend:
    """Serves ``spec.name``'s recorded answers from RouterBench CSVs (``spec.data_files``)."""

    source = "recorded"

    def __init__(self, spec: ModelSpec, files: Sequence[str | Path]) -> None:
        self.spec = spec
        self.files = tuple(str(Path(f)) for f in files)
        self._counter = PromptCounter(spec)

    def _table(self) -> dict[str, tuple[Any, int]]:
        try:
            llms, table = _answers(self.files)
        except (OSError, ValueError) as exc:
            raise BackendError(self.spec.name, f"cannot read recorded answers: {exc}", status=503) from exc
        if self.spec.name not in llms:
            raise BackendError(self.spec.name, f"no recorded answers for this LLM in {list(self.files)} "
                                               f"(it has {list(llms)})", status=503)
        return table

    def recorded(self, prompt: str) -> tuple[str, float | None]:
        """The recorded answer to ``prompt`` and its recorded price in dollars (None when the files
        record no costs); :class:`NotRecorded` if there is no answer."""
        where = self._table().get(query_key(prompt))
        found = None if where is None else where[0].recorded(where[1], self.spec.name)
        if found is None:
            raise NotRecorded(self.spec.name, "no recorded answer for this prompt; the recorded backend only "
                                              "answers prompts of its RouterBench files")
        return found

    def answer(self, prompt: str) -> str:
        """The recorded answer to ``prompt``; :class:`NotRecorded` if there is none."""
        return self.recorded(prompt)[0]

    def price(self, prompt: str) -> float | None:
        """The recorded price (dollars) of this LLM's answer to ``prompt``; see :meth:`recorded`."""
        return self.recorded(prompt)[1]

    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Outcome | None = None) -> Iterator[str]:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        text, cost = self.recorded(users[-1] if users else "")
        for piece in re.findall(r"\S+\s*|\s+", text):
            if cancel is not None and cancel.is_set():
                return
            yield piece
        if outcome is not None:  # a recorded answer is served whole: its own length, not max_tokens
            outcome.completion_tokens = self.count_tokens(text)
            outcome.finish_reason = "stop"
            outcome.cost = cost

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
