"""Keep a Gradio session's memory small.

Gradio 6 copies every output value into the session's page config
(``SessionState.config_values``), which it reads only to rebuild a page from a deep link; this
app offers none. A routed query's outputs include the Explore map, thousands of points of plotly
JSON (about 2.7 MiB), so each session kept that much until it was evicted. :func:`install`
leaves plot values out of that copy (the browser already has them); everything else, and each
session's ``gr.State``, is kept as Gradio keeps it. Sessions are bounded too
(``state_session_capacity``, :data:`routerdc.limits.BOUNDS`).
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Patch ``SessionState._update_value_in_config`` once (idempotent) to skip plot values."""
    import gradio as gr
    from gradio.state_holder import SessionState

    original = SessionState._update_value_in_config
    if getattr(original, "_routerdc_lean", False):
        return

    def lean(self: Any, key: int, value: Any) -> None:
        if isinstance(self.blocks_config.blocks.get(key), gr.Plot):
            return  # only deep links read it; the plot's JSON would stay per session
        original(self, key, value)

    lean._routerdc_lean = True  # type: ignore[attr-defined]
    SessionState._update_value_in_config = lean  # type: ignore[method-assign]
