"""The routed API's input bounds (values: :data:`routerdc.limits.BOUNDS`).

- :class:`BodyLimit`, a pure ASGI middleware: a body over ``max_body_bytes`` gets 413 from its
  ``Content-Length`` alone, or as soon as the bytes streamed in pass the bound, so a refused
  body is never read whole and never reaches routing;
- the constrained field types of the chat request (message count and characters, stop strings,
  seed range, names) and :func:`valid_text`, which refuses lone surrogates (text that cannot be
  encoded as UTF-8) as a 400.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

from routerdc.limits import BOUNDS
from routerdc.serving.auth import protected, send_error


def valid_text(value: str) -> str:
    """``value`` if it is valid Unicode text (no lone surrogates), else a ValueError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid text: a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                         f"{exc.start}; send valid UTF-8") from None
    return value


def printable(text: str) -> str:
    """``text`` made safe to send back (lone surrogates replaced)."""
    return text.encode("utf-8", "replace").decode("utf-8")


Text = Annotated[str, AfterValidator(valid_text)]
Content = Annotated[Text, Field(max_length=BOUNDS.max_message_chars)]
Name = Annotated[Text, Field(max_length=BOUNDS.max_name_chars)]
StopString = Annotated[Text, Field(min_length=1, max_length=BOUNDS.max_stop_chars)]
Stop = StopString | Annotated[list[StopString], Field(max_length=BOUNDS.max_stop)]
Seed = Annotated[int, Field(ge=BOUNDS.seed_min, le=BOUNDS.seed_max)]
MAX_MESSAGES = BOUNDS.max_messages


class BodyLimit:
    """ASGI middleware: 413 for a body over ``max_bytes`` on the API's paths, decided early."""

    def __init__(self, app: Any, max_bytes: int = BOUNDS.max_body_bytes) -> None:
        self.app = app
        self.max_bytes = int(max_bytes)

    async def _too_large(self, send: Any, size: str) -> None:
        await send_error(send, 413, f"the request body is {size}; the limit is {self.max_bytes:,} bytes",
                         "invalid_request_error")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not protected(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    n = int(value)
                except ValueError:
                    n = -1
                if n > self.max_bytes:
                    await self._too_large(send, f"{n:,} bytes")
                    return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body = msg.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(send, f"over {self.max_bytes:,} bytes")
                return
            chunks.append(body)
            more = msg.get("more_body", False)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
