"""API keys for the routed API: ``--api-key`` / ``ROUTERDC_API_KEY`` (several keys: comma-separated).

:class:`ApiKeyAuth` is a pure ASGI middleware: a request to a protected path (``/v1/...``,
``/docs``, ``/redoc``, ``/openapi.json`` and the sleep-mode routes) without a valid
``Authorization: Bearer <key>`` (or ``X-API-Key``) gets 401 in the OpenAI error shape, before
its body is read. Keys are compared in constant time (:func:`hmac.compare_digest` over every
key). Without keys, :func:`check_bind` allows only a loopback address unless the operator says
``--allow-unauthenticated``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from typing import Any, Iterable, Sequence

API_KEY_ENV = "ROUTERDC_API_KEY"
PROTECTED_PREFIXES = ("/v1", "/docs", "/redoc", "/openapi.json", "/sleep", "/wake_up", "/is_sleeping")


def parse_keys(*values: str | Iterable[str] | None) -> tuple[str, ...]:
    """Keys from option values and/or comma-separated strings; blanks dropped, order kept."""
    out: list[str] = []
    for v in values:
        if not v:
            continue
        items = v.split(",") if isinstance(v, str) else [p for x in v for p in str(x).split(",")]
        for k in (x.strip() for x in items):
            if k and k not in out:
                out.append(k)
    return tuple(out)


def keys_from_env(explicit: Sequence[str] | str | None = None) -> tuple[str, ...]:
    """The keys of ``explicit`` (``--api-key``), else of ``$ROUTERDC_API_KEY``."""
    return parse_keys(explicit) or parse_keys(os.environ.get(API_KEY_ENV))


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class BindRefused(SystemExit):
    """An unauthenticated API asked to listen beyond loopback."""


def check_bind(host: str, keys: Sequence[str], allow_unauthenticated: bool) -> str:
    """The start-up line about authentication; raises :class:`BindRefused` for an open public bind."""
    if keys:
        return f"routed API: API key required ({len(keys)} key(s)) for /v1, /docs and /openapi.json"
    if is_loopback(host):
        return (f"routed API: NO API key (set --api-key or ${API_KEY_ENV}); listening on loopback {host} only, "
                "so only this machine can call it")
    if allow_unauthenticated:
        return (f"routed API: NO API key and --allow-unauthenticated: anyone who reaches {host} may spend "
                "these LLMs")
    raise BindRefused(f"refusing to serve the routed API on {host} without an API key: set --api-key (or "
                      f"${API_KEY_ENV}), bind to 127.0.0.1, or pass --allow-unauthenticated")


def key_ok(given: str, keys: Sequence[str]) -> bool:
    """Constant-time membership: every key is compared, whatever matches."""
    g = given.encode("utf-8", "surrogatepass")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(g, k.encode("utf-8"))
    return ok


def _given(headers: Iterable[tuple[bytes, bytes]]) -> str:
    auth = api = ""
    for name, value in headers:
        if name == b"authorization":
            auth = value.decode("latin-1")
        elif name == b"x-api-key":
            api = value.decode("latin-1")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return api.strip()


def protected(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)


def _host(headers: Iterable[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"host":
            h = value.decode("latin-1").strip()
            return h[1:].split("]")[0] if h.startswith("[") else h.rsplit(":", 1)[0] if h.count(":") == 1 else h
    return ""


class ApiKeyAuth:
    """ASGI middleware: 401 for a protected path without a valid key. With no key configured all
    pass, except that ``loopback_hosts`` refuses (403) a ``Host:`` header that is not a loopback
    name, so a web page cannot reach a key-less loopback API by DNS rebinding."""

    def __init__(self, app: Any, keys: Sequence[str], loopback_hosts: bool = False) -> None:
        self.app = app
        self.keys = tuple(keys)
        self.loopback_hosts = loopback_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if not self.keys:
            host = _host(scope.get("headers", ()))
            if self.loopback_hosts and not is_loopback(host):
                await send_error(send, 403, f"Host {host!r} is not allowed: this API has no key and answers "
                                 "loopback names only (127.0.0.1, localhost, ::1)", "invalid_request_error")
                return
            await self.app(scope, receive, send)
            return
        given = _given(scope.get("headers", ()))
        if given and key_ok(given, self.keys):
            await self.app(scope, receive, send)
            return
        msg = ("invalid API key" if given else
               "missing API key: send 'Authorization: Bearer <key>' (the server's --api-key / "
               f"${API_KEY_ENV})")
        await send_error(send, 401, msg, "invalid_request_error", code="invalid_api_key",
                         headers=[(b"www-authenticate", b"Bearer")])


async def send_error(send: Any, status: int, message: str, kind: str, *, code: Any = None,
                     headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Send an OpenAI-shaped JSON error from ASGI middleware."""
    body = json.dumps({"error": {"message": message, "type": kind, "code": status if code is None else code}}
                      ).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
