"""The router as an OpenAI-compatible service: ``POST /v1/chat/completions``, ``GET /v1/models``
(and ``POST /v1/completions`` for a named candidate: :mod:`.completions`).

The model ``routerdc`` routes the last user message with the router and forwards the request
to the chosen candidate; a candidate's own name is also accepted (then the router's opinion is
still reported, with ``routed: false``). ``routerdc:λ`` or the request field
``routerdc: {"cost_weight": λ}`` routes under cost weight λ; ``routerdc: {"session": ID}`` (or
``user``) keeps a conversation on the LLM its first turn was routed to (:mod:`.routing_options`,
:mod:`.sessions`). Every answer carries the routing decision:

- in the body (and in the final stream chunk) as ``"routerdc": {"llm", "routed", "router_choice",
  "probs": {llm: p}, "source", "cost_weight", "session"?: {"id", "from", "decision", ...}}``, plus
  ``"cost"`` (dollars) where the backend knows the answer's price (a recorded answer: the price
  RouterBench recorded for it);
- in the headers ``X-RouterDC-LLM``, ``X-RouterDC-Probs`` (compact JSON), ``X-RouterDC-Source``,
  ``X-RouterDC-Cost-Weight`` and, with a session, ``X-RouterDC-Session`` (routed or kept).

Errors use the OpenAI shape ``{"error": {"message", "type", "code"}}`` plus the ``routerdc``
field when a decision was made: 400 for a bad request or a prompt that does not fit, 502/503
for a backend that fails or is down, 401 without a valid API key (:mod:`.auth`), 413 for a body
over the bound (:mod:`.limits`). A client that disconnects cancels the generation. Every stream
ends with ``data: [DONE]``, after an error event too. ``usage`` and ``finish_reason`` come from
the backend's own counts. ``create_api(router, registry)`` returns a FastAPI app that the Gradio
app can mount.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, AsyncIterator, Iterator, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from routerdc.limits import BOUNDS
from routerdc.serving.auth import ApiKeyAuth, protected
from routerdc.serving.backends import BackendError, BackendUnavailable, Outcome
from routerdc.serving.batcher import BatchConfig, MicroBatcher
from routerdc.serving.limits import MAX_MESSAGES, BodyLimit, Content, Name, Seed, Stop, printable
from routerdc.serving.registry import Registry
from routerdc.serving.routing_options import ROUTED_MODEL, Ask, RouterdcOptions, model_entry, next_best, parse_ask
from routerdc.serving.sessions import SessionStore


class ChatMessage(BaseModel):
    """One chat message; only plain-text content."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: Content
    name: Name | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The accepted subset of OpenAI's chat-completions request; any other field is an error.

    ``n`` is clamped to 1, ``max_tokens`` to the server's bound and the context left by the
    prompt, ``temperature`` to [0, 2] and ``top_p`` to (0, 1]. Messages, stop strings and the
    seed are bounded (:data:`routerdc.limits.BOUNDS`); text must be valid Unicode.
    """

    model_config = ConfigDict(extra="forbid")
    model: Name
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    user: Name | None = None
    routerdc: RouterdcOptions | None = None


def _error(status: int, message: str, kind: str, routing: dict[str, Any] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": {"message": printable(message), "type": kind, "code": status}}
    if routing is not None:
        body["routerdc"] = routing
    return JSONResponse(body, status_code=status, headers=headers)


def _headers(routing: dict[str, Any]) -> dict[str, str]:
    h = {"X-RouterDC-LLM": routing["llm"], "X-RouterDC-Source": routing["source"],
         "X-RouterDC-Cost-Weight": repr(routing["cost_weight"]),
         "X-RouterDC-Probs": json.dumps({k: round(v, 6) for k, v in routing["probs"].items()},
                                        separators=(",", ":"), ensure_ascii=True)}
    if "session" in routing:
        h["X-RouterDC-Session"] = routing["session"]["decision"]
    return h


class _GenerationResponse(StreamingResponse):
    """An SSE response that cancels its backend generation however the response ends."""

    def __init__(self, body: AsyncIterator[str], cancel: threading.Event, chunks: Iterator[str],
                 headers: dict[str, str]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.cancel = cancel
        self.chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.cancel.set()
            close = getattr(self.chunks, "close", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(close)


_END = object()


def _next(it: Iterator[str]) -> Any:
    return next(it, _END)


def create_api(router: Any, registry: Registry, *, check: bool = True, sleep_mode: bool = False,
               batching: BatchConfig | None = None, api_keys: tuple[str, ...] = (),
               max_body_bytes: int = BOUNDS.max_body_bytes, loopback_hosts: bool = False,
               sessions: SessionStore | None = None) -> FastAPI:
    """The routed OpenAI-compatible API.

    Args:
        router: a :class:`routerdc.inference.Router` (from :func:`routerdc.load_router`; anything
            with ``config.llm_names`` and ``route(texts)``).
        registry: the candidates' backends.
        check: verify that the models config names exactly the router's LLMs.
        sleep_mode: also serve vLLM's sleep-mode routes (``POST /sleep?level=1``, ``POST /wake_up``,
            ``GET /is_sleeping``) for the in-process backends, so that this server can be swapped
            on a GPU like a vLLM server (see :mod:`routerdc.serving.swap`).
        batching: micro-batching of concurrent requests (:mod:`routerdc.serving.batcher`;
            default: on, 2 ms window).
        api_keys: the keys a caller must present (``Authorization: Bearer``) for ``/v1``,
            ``/docs`` and ``/openapi.json``; none: open (the caller decides where it binds, see
            :func:`routerdc.serving.auth.check_bind`).
        max_body_bytes: bodies over this get 413 before they are read whole.
        loopback_hosts: without keys, answer only requests whose ``Host:`` is a loopback name
            (set by ``serve`` and the app when they bind to loopback without a key).
        sessions: the session store (:class:`.sessions.SessionStore`; default: a new one, 30 min
            TTL, 10,000 sessions); pass one to share sessions across re-created apps.
    """
    llm_names = tuple(router.config.llm_names)
    if check:
        registry.check_router(llm_names)
    batcher = MicroBatcher(router, batching or BatchConfig())
    sessions = sessions if sessions is not None else SessionStore()
    app = FastAPI(title="RouterDC", description=__doc__)
    app.state.router = router
    app.state.batcher = batcher
    app.state.sessions = sessions
    app.state.registry = registry
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # inner: runs after the key check
    app.add_middleware(ApiKeyAuth, keys=tuple(api_keys), loopback_hosts=loopback_hosts)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Any:
        if not protected(request.url.path):  # e.g. the Gradio app mounted beside: its own shape
            return await http_exception_handler(request, exc)
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _error(exc.status_code, f"invalid request: {exc.detail}", kind, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); the server is still running", "server_error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"] if x != "body") or "body"
            msg = "unknown field; it is not forwarded" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] == "string_unicode":
                msg = "invalid text (a lone surrogate?); send valid UTF-8"
            if err["type"] == "json_invalid":
                msg = f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})"
            parts.append(f"{loc}: {msg}")
        return _error(400, "invalid request: " + "; ".join(parts), "invalid_request_error")

    def available(llm: str) -> bool:
        return llm in llm_names and llm in registry.names

    def decide(model: str, query: str, ask: Ask) -> dict[str, Any]:
        r = batcher.route(query, cost_weight=ask.cost_weight)
        probs = {n: float(p) for n, p in zip(llm_names, r.probs[0])}
        choice = llm_names[int(r.choice[0])]  # the novelty fallback's LLM for a query unlike the training data
        llm, extra = (choice if ask.routed else model), {}
        if r.nearest is not None:
            extra["novelty"] = r.novelty_record(0)
        if ask.session is not None:
            key, sid, source = ask.session
            llm, info = sessions.decide(key, choice, reroute=ask.reroute, available=available)
            extra["session"] = {"id": sid, "from": source, **info}
        return {"llm": llm, "routed": ask.routed, "router_choice": choice, "probs": probs,
                "source": getattr(registry.get(llm), "source", "generated"), "cost_weight": ask.cost_weight,
                **extra}

    def fall_back(routing: dict[str, Any], ask: Ask) -> dict[str, Any] | None:
        """A kept session's LLM is down: the router's next choice, rebound (None: no other)."""
        old, choice = routing["llm"], routing["router_choice"]
        new = choice if choice != old and choice in registry.names else next_best(routing["probs"], old,
                                                                                  registry.names)
        if new is None or not sessions.move(ask.session[0], old, new):
            return None
        session = {**routing["session"], "decision": "routed", "reason": "unavailable", "previous": old}
        return {**routing, "llm": new, "session": session,
                "source": getattr(registry.get(new), "source", "generated")}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "active": registry.active()}

    @app.get("/v1/routerdc/status")
    async def status() -> dict[str, Any]:
        """Generations in flight (in-process backends) and the candidates."""
        return {"active": registry.active(), "llms": list(llm_names),
                "engine": getattr(router, "engine_name", None), "engine_reason": getattr(router, "reason", None),
                "sessions": sessions.status(),
                "micro_batching": {"enabled": batcher.config.enabled, "window_ms": batcher.config.window_ms,
                                   "batches": batcher.batches, "routed": batcher.routed}}

    if sleep_mode:
        def sleepers() -> list[Any]:
            return [b for b in (registry.get(n) for n in registry.names) if hasattr(b, "sleep")]

        @app.post("/sleep")
        async def sleep(level: int = 1) -> Any:
            if level != 1:
                return _error(400, f"sleep level {level} is not supported here; level 1 offloads the weights",
                              "invalid_request_error")
            for b in sleepers():
                await anyio.to_thread.run_sync(b.sleep)
            return {"status": "sleeping", "level": level}

        @app.post("/wake_up")
        async def wake_up() -> dict[str, Any]:
            for b in sleepers():
                await anyio.to_thread.run_sync(b.wake_up)
            return {"status": "awake", "tags": None}

        @app.get("/is_sleeping")
        async def is_sleeping() -> dict[str, Any]:
            bs = sleepers()
            return {"is_sleeping": bool(bs) and all(b.sleeping for b in bs)}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        now = int(time.time())
        data = [{"id": ROUTED_MODEL, "object": "model", "created": now, "owned_by": "routerdc",
                 **model_entry(router.config)}]
        for name in registry.names:
            spec = registry.config.get(name)
            data.append({"id": name, "object": "model", "created": now, "owned_by": f"routerdc:{spec.backend}",
                         "max_model_len": spec.max_context})
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        try:
            ask = parse_ask(req.model, req.routerdc, req.user, router.config, registry.names)
        except LookupError as exc:
            return _error(404, str(exc.args[0]), "invalid_request_error")
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        users = [m.content for m in req.messages if m.role == "user"]
        if not users:
            return _error(400, "messages: need at least one user message to route", "invalid_request_error")
        routing = await anyio.to_thread.run_sync(decide, req.model, users[-1], ask)
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        while True:
            headers = _headers(routing)
            cancel, outcome = threading.Event(), Outcome()
            backend, params, chunks = registry.stream(
                routing["llm"], messages, cancel, outcome, max_tokens=req.max_completion_tokens or req.max_tokens,
                temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=stop)
            try:  # the first chunk before any byte is sent: a failing backend gives a plain HTTP error
                first = await anyio.to_thread.run_sync(_next, chunks)
                break
            except BackendError as exc:
                session = routing.get("session", {})
                moved = (fall_back(routing, ask) if isinstance(exc, BackendUnavailable)
                         and session.get("decision") == "kept" else None)
                if moved is None:
                    if session.get("decision") == "routed":  # the next turn routes afresh
                        sessions.forget(ask.session[0], routing["llm"])
                    return _error(exc.status, str(exc), "backend_error", routing, headers)
                routing = moved

        def usage(text: str) -> dict[str, int]:
            """The backend's own counts; re-tokenising only where a backend reports none."""
            p = outcome.prompt_tokens if outcome.prompt_tokens is not None else backend.count_tokens(messages)
            c = outcome.completion_tokens
            if c is None:
                c = backend.count_tokens(text) if text else 0
            return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

        def priced(done: Outcome) -> None:
            """Report the answer's price where the backend knows it (a recorded answer's recorded cost)."""
            if done.cost is not None:
                routing["cost"] = done.cost

        def finish(text: str) -> str:
            if outcome.finish_reason is not None:
                return outcome.finish_reason
            if routing["source"] == "recorded":  # a recorded answer is served whole
                return "stop"
            return "length" if text and backend.count_tokens(text) >= params.max_tokens else "stop"

        if not req.stream:
            parts = [] if first is _END else [first]
            try:
                while first is not _END:
                    if await request.is_disconnected():
                        cancel.set()
                        break
                    piece = await anyio.to_thread.run_sync(_next, chunks)
                    if piece is _END:
                        break
                    parts.append(piece)
            except BackendError as exc:
                return _error(exc.status, str(exc), "backend_error", routing, headers)
            finally:
                cancel.set()
            text = "".join(parts)
            priced(outcome)
            body = {"id": cid, "object": "chat.completion", "created": created, "model": routing["llm"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish(text)}],
                    "usage": await anyio.to_thread.run_sync(usage, text), "routerdc": routing}
            return JSONResponse(body, headers=headers)

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": routing["llm"],
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

        async def body() -> AsyncIterator[str]:
            parts: list[str] = []
            yield event({"role": "assistant", "content": ""})
            piece = first
            try:
                while piece is not _END:
                    parts.append(piece)
                    yield event({"content": piece})
                    piece = await anyio.to_thread.run_sync(_next, chunks)
            except BackendError as exc:
                err = {"error": {"message": printable(str(exc)), "type": "backend_error", "code": exc.status},
                       "routerdc": routing}
                yield f"data: {json.dumps(err)}\n\n"
                yield "data: [DONE]\n\n"  # clients that wait for [DONE] end here too
                return
            except Exception as exc:  # noqa: BLE001 - the stream still ends cleanly
                err = {"error": {"message": f"internal error ({type(exc).__name__})", "type": "server_error",
                                 "code": 500}, "routerdc": routing}
                yield f"data: {json.dumps(err)}\n\n"
                yield "data: [DONE]\n\n"
                return
            text = "".join(parts)
            priced(outcome)
            extra: dict[str, Any] = {"routerdc": routing}
            if req.stream_options and req.stream_options.include_usage:
                extra["usage"] = await anyio.to_thread.run_sync(usage, text)
            yield event({}, finish(text), **extra)
            yield "data: [DONE]\n\n"

        return _GenerationResponse(body(), cancel, chunks, headers)

    from routerdc.serving.completions import add_completions

    add_completions(app, registry)  # POST /v1/completions (echo + logprobs), in its own module
    return app
