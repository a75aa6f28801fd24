"""A session's typed state (one ``gr.State`` per session): the router it routes with, its last
routed query (for the temperature and cost sliders, which re-render without re-encoding) and the
queries it routed (drawn on the Explore map). Bounded: :data:`MAX_ROUTED` queries per session."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["MAX_ROUTED", "Routed", "Session"]

MAX_ROUTED = 200  # routed queries a session keeps for its map


@dataclass(frozen=True)
class Routed:
    """One routed query: the router (key) it was routed by, its embedding, the text and the LLM chosen."""

    key: str
    emb: np.ndarray  # (d,) float32, the router's projected embedding
    query: str
    llm: str


@dataclass(frozen=True)
class Session:
    router_key: str | None = None
    last: Routed | None = None
    routed: tuple[Routed, ...] = field(default_factory=tuple)

    def with_router(self, key: str | None) -> "Session":
        return replace(self, router_key=key)

    def with_routed(self, r: Routed) -> "Session":
        """The session after routing ``r``: it is the last query, and the oldest ones are dropped
        beyond :data:`MAX_ROUTED`."""
        return replace(self, last=r, routed=(*self.routed[-(MAX_ROUTED - 1):], r))

    def routed_by(self, key: str) -> list[Routed]:
        """The queries routed by router ``key`` (another router's embeddings do not fit its map)."""
        return [r for r in self.routed if r.key == key]
