"""The RouterDC Gradio app: ``create_app`` builds it, ``app.py`` at the project root launches it.

Light at import: Gradio, torch and the router load only when ``create_app`` / ``main`` run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "launch", "main", "Settings", "AppContext"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "launch", "main"):
        from . import main as _main

        return getattr(_main, name)
    if name == "Settings":
        from .settings import Settings

        return Settings
    if name == "AppContext":
        from .context import AppContext

        return AppContext
    raise AttributeError(name)
