"""``POST /v1/completions`` for a named candidate, with ``echo`` and ``logprobs`` (OpenAI/vLLM shape).

This is what lm-evaluation-harness' ``local-completions`` backend sends: log-likelihood requests
are ``{"prompt": [[token ids], ...], "max_tokens": 1, "echo": true, "logprobs": 1, "temperature": 0}``
and it reads ``choices[i].logprobs.token_logprobs`` / ``top_logprobs`` past the context; generation
requests read ``choices[i].text``. The ``transformers`` backend computes prompt-token log-probabilities
with one forward pass over prompt + answer (raw logits, as vLLM reports them); ``openai``/``vllm``
candidates are forwarded to their server's own ``/v1/completions``; ``recorded`` ones cannot do it.
The model must be a candidate's name (routing a raw completion prompt is not offered). No streaming.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from routerdc.serving.backends import BackendError, SamplingParams
from routerdc.serving.registry import Registry

Prompt = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(BaseModel):
    """The accepted subset of OpenAI's completions request."""

    model_config = ConfigDict(extra="forbid")
    model: str
    prompt: Prompt
    max_tokens: int = Field(16, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    user: str | None = None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error" if status < 500
                                   else "backend_error", "code": status}}, status_code=status)


def _prompts(prompt: Prompt) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(x, int) for x in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def complete_transformers(backend: Any, prompt: str | list[int], params: SamplingParams, echo: bool,
                          logprobs: int | None) -> dict[str, Any]:
    """One choice: the answer (prompt included when ``echo``) and its OpenAI-shaped ``logprobs``."""
    import torch

    tok = backend._counter.tokenizer
    ids = list(prompt) if isinstance(prompt, list) else tok(prompt, add_special_tokens=True)["input_ids"]
    if not ids:
        raise ValueError("prompt: empty")
    if len(ids) + params.max_tokens > backend.spec.max_context:
        raise ValueError(f"prompt: {len(ids)} tokens + max_tokens {params.max_tokens} exceed the context of "
                         f"{backend.spec.name!r} ({backend.spec.max_context})")
    if any(not 0 <= i < len(tok) for i in ids):
        raise ValueError(f"prompt: token ids outside the vocabulary of {backend.spec.name!r} (0..{len(tok) - 1})")
    model = backend._load()
    with backend._gen_lock, torch.inference_mode():
        x = torch.tensor([ids], device=model.device)
        seq = ids
        if params.max_tokens > 0:
            kw: dict[str, Any] = dict(max_new_tokens=params.max_tokens, pad_token_id=tok.pad_token_id)
            if params.temperature > 0:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                kw.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            else:
                kw.update(do_sample=False, temperature=None, top_p=None)
            if params.stop:
                kw.update(stop_strings=list(params.stop), tokenizer=tok)
            seq = model.generate(x, attention_mask=torch.ones_like(x), **kw)[0].tolist()
        lp = torch.log_softmax(model(torch.tensor([seq], device=model.device)).logits[0].float(), dim=-1)
    new = seq[len(ids):]
    text = tok.decode(new, skip_special_tokens=True)
    shown = seq if echo else new
    start = 0 if echo else len(ids)
    out: dict[str, Any] = {"index": 0, "text": (tok.decode(ids) if echo else "") + text,
                           "finish_reason": "length" if len(new) >= params.max_tokens else "stop", "logprobs": None}
    if logprobs is not None:
        tokens = [tok.convert_ids_to_tokens(i) for i in shown]
        token_lps: list[float | None] = []
        tops: list[dict[str, float] | None] = []
        for j, t in enumerate(shown, start):
            if j == 0:
                token_lps.append(None)
                tops.append(None)
                continue
            row = lp[j - 1]
            token_lps.append(float(row[t]))
            k = max(logprobs, 1)
            v, i = row.topk(k)
            top = {tok.convert_ids_to_tokens(int(a)): float(b) for a, b in zip(i, v)}
            top.setdefault(tok.convert_ids_to_tokens(t), float(row[t]))
            tops.append(top)
        offsets, pos = [], 0
        for t in shown:
            offsets.append(pos)
            pos += len(tok.decode([t]))
        out["logprobs"] = {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}
    out["_usage"] = (len(ids), len(new))
    return out


def add_completions(app: FastAPI, registry: Registry) -> None:
    """Register ``POST /v1/completions`` on ``app`` (the router's API, :func:`.api.create_api`)."""

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Any:
        if req.model not in registry.names:
            return _error(404, f"unknown model {req.model!r}: /v1/completions serves a candidate by name, one of "
                               f"{list(registry.names)}")
        if req.stream:
            return _error(400, "stream: /v1/completions does not stream here; use stream=false")
        spec = registry.config.get(req.model)
        backend = registry.get(req.model)
        if spec.backend in ("openai", "vllm"):
            body = req.model_dump(exclude_none=True)
            body["model"] = spec.model
            try:
                resp = await anyio.to_thread.run_sync(lambda: backend.client.completions.create(**body))
            except Exception as exc:
                err = backend._error(exc)
                return _error(err.status, str(err))
            out = resp.model_dump()
            out["model"] = req.model
            return out
        if spec.backend != "transformers":
            return _error(400, f"model {req.model!r} is a {spec.backend!r} candidate: it cannot score or complete "
                               "raw prompts")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        params = SamplingParams.clamp(spec, registry.config.limits, max_tokens=max(req.max_tokens, 1),
                                      temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=stop)
        if req.max_tokens == 0:
            if not req.echo:
                return _error(400, "max_tokens: 0 needs echo=true")
            params = SamplingParams(0, params.temperature, params.top_p, params.seed, params.stop)
        choices, p_tok, c_tok = [], 0, 0
        try:
            for i, prompt in enumerate(_prompts(req.prompt)):
                c = await anyio.to_thread.run_sync(complete_transformers, backend, prompt, params, req.echo,
                                                   req.logprobs)
                p, n = c.pop("_usage")
                p_tok, c_tok = p_tok + p, c_tok + n
                choices.append({**c, "index": i})
        except ValueError as exc:
            return _error(400, str(exc))
        except BackendError as exc:
            return _error(exc.status, str(exc))
        return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": req.model, "choices": choices,
                "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}
