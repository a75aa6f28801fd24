"""In-process generation with transformers (CPU or a small GPU), streamed token by token.

``model.generate`` runs on a worker thread and feeds a ``TextIteratorStreamer``; a
``StoppingCriteria`` that reads the cancel ``Event`` stops it at the next token. Generations on
one model are serialised by a lock.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, Sequence

from routerdc.serving.config import ModelSpec
from routerdc.serving.backends.base import BackendError, BackendUnavailable, Message, Outcome, SamplingParams, check_fits
from routerdc.serving.backends.tokens import PromptCounter


class _EventStop:
    """A StoppingCriteria that stops generation once ``event`` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersBackend:
    """A causal LM loaded from a hub id or folder (``spec.model``)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._counter = PromptCounter(spec)
        self._active_lock = threading.Lock()
        self.active = 0  # generations in flight
        self.sleeping = False

    # ------------------------------------------------------------------ sleep mode (as vLLM's, level 1)
    def sleep(self) -> None:
        """Offload the weights to CPU memory (freeing the GPU) and refuse generation until woken."""
        self.sleeping = True
        with self._gen_lock:  # after the generation in flight, if any
            if self._model is not None and self.spec.device != "cpu":
                import torch

                self._model.to("cpu")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    def wake_up(self) -> None:
        """Move the weights back to the candidate's device and accept generation again."""
        with self._gen_lock:
            if self._model is not None and self.spec.device != "cpu":
                self._model.to(self.spec.device)
        self.sleeping = False

    # ------------------------------------------------------------------ loading
    def _load(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    from transformers import AutoModelForCausalLM

                    try:
                        model = AutoModelForCausalLM.from_pretrained(self.spec.model)
                    except Exception as exc:
                        raise BackendUnavailable(self.spec.name, f"cannot load {self.spec.model!r}: {exc}") from exc
                    self._model = model.to(self.spec.device).eval()
        return self._model

    def health(self) -> bool:
        try:
            self._load()
            return self._counter.tokenizer is not None
        except BackendError:
            return False

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        return self._counter.count(text)

    # ------------------------------------------------------------------ generation
    def stream(self, messages: Sequence[Message], params: SamplingParams,
               cancel: threading.Event | None = None, outcome: Outcome | None = None) -> Iterator[str]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        cancel = cancel or threading.Event()
        if self.sleeping:
            raise BackendUnavailable(self.spec.name, "the model is asleep (sleep mode); wake it up first")
        prompt = self._counter.render(messages)
        tok = self._counter.tokenizer
        ids = tok(prompt, return_tensors="pt", add_special_tokens=self.spec.prompt_format == "completion")
        n_prompt = int(ids["input_ids"].shape[1])
        params = check_fits(self.spec, n_prompt, params)
        model = self._load()
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60.0)
        kwargs: dict[str, Any] = dict(
            **{k: v.to(model.device) for k, v in ids.items()}, streamer=streamer,
            max_new_tokens=params.max_tokens, stopping_criteria=StoppingCriteriaList([_EventStop(cancel)]),
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        errors: list[BaseException] = []
        generated: list[Any] = []

        def run() -> None:
            with self._gen_lock:
                try:
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    with torch.inference_mode():
                        generated.append(model.generate(**kwargs)[0, n_prompt:].tolist())
                except BaseException as exc:  # surfaced in the consumer thread
                    errors.append(exc)
                    streamer.end()

        with self._active_lock:
            self.active += 1
        worker = threading.Thread(target=run, name=f"generate-{self.spec.name}", daemon=True)
        worker.start()
        try:
            for chunk in streamer:
                if cancel.is_set():
                    break
                if chunk:
                    yield chunk
            if errors:
                raise BackendError(self.spec.name, f"generation failed: {errors[0]}") from errors[0]
            worker.join(timeout=5.0)
            if outcome is not None and generated:
                self._report(outcome, generated[0], n_prompt, params, model)
        finally:
            cancel.set()  # also when the consumer stops early or closes the generator
            worker.join(timeout=5.0)
            with self._active_lock:
                self.active -= 1

    def _report(self, outcome: Outcome, new_ids: list[int], n_prompt: int, params: SamplingParams,
                model: Any) -> None:
        """Counts from the generated ids themselves; ``length`` only when max_tokens ended it."""
        tok = self._counter.tokenizer
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])
        pad = tok.pad_token_id if tok.pad_token_id is not None else None
        while new_ids and pad is not None and new_ids[-1] == pad and pad not in eos_ids:
            new_ids = new_ids[:-1]
        outcome.prompt_tokens = n_prompt
        outcome.completion_tokens = len(new_ids)
        ended = bool(new_ids) and new_ids[-1] in eos_ids
        if not ended and params.stop and len(new_ids) >= params.max_tokens:
            tail = tok.decode(new_ids[-32:], skip_special_tokens=True)
            ended = any(tail.endswith(s) for s in params.stop)
        outcome.finish_reason = "length" if len(new_ids) >= params.max_tokens and not ended else "stop"

    def close(self) -> None:
        self._model = None
