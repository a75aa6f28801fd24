"""The app's process-wide context: one of each service, created by ``create_app`` and passed to
every tab builder. It holds only what all sessions share (read-mostly, guarded by the services'
locks); what a session chooses lives in its :class:`app.state.Session`. Nothing here imports Gradio.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .services.data import DataBank, load_data
from .services.maps import MapService
from .services.routers import Preload, RouterService, RouterView, prepare_engine
from .services.training import TrainingService

if TYPE_CHECKING:
    from .data_fetch import DataFetch
    from .generation import Generation
    from .settings import Settings

log = logging.getLogger("routerdc.app")

__all__ = ["AppContext"]


@dataclass
class AppContext:
    """Settings, the score data, the routers, their maps, the training run, the generation backends
    (with a models config) and the background data download (into an empty data directory)."""

    settings: "Settings"
    data: DataBank
    routers: RouterService
    maps: MapService
    training: TrainingService = field(default_factory=TrainingService)
    generation: "Generation | None" = None
    fetch: "DataFetch | None" = None
    notes: list[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    @property
    def default_key(self) -> str | None:
        """The router a new session starts with."""
        return self.routers.default_key

    @classmethod
    def create(cls, settings: "Settings", *, load_default: bool = True, background_map: bool = True,
               preload: Preload | None = None) -> "AppContext":
        data = preload.data.result() if preload is not None else load_data(settings)
        routers = RouterService(settings)
        maps = MapService(settings, lambda: ctx.data)  # the data may be replaced by a background download
        ctx = cls(settings=settings, data=data, routers=routers, maps=maps)
        maps.after = ctx._after_map
        from .data_fetch import start_fetch  # an empty data directory: download the data in the background

        ctx.fetch = start_fetch(ctx)
        if settings.models_config:
            from .generation import Generation

            ctx.generation = Generation.load(str(settings.resolve(settings.models_config)),
                                             launch=settings.launch_llms)
        if preload is not None and preload.router is not None:
            routers.preloaded(preload.key, preload.router)
        routers.discover()
        if load_default:
            ctx._load_default(background_map)
        return ctx

    def _load_default(self, background_map: bool) -> None:
        settings = self.settings
        primary = settings.resolve(settings.checkpoint)
        candidates = [primary]
        if not (primary / "config.json").exists():
            others = [Path(k) for k in self.routers.known if Path(k) != primary]
            self.notes.append(
                f"The router `{settings.checkpoint}` is not there (no config.json)"
                + (f"; using `{others[0]}` instead. Pick another router above, or train one in the Train tab."
                   if others else "; no other router found: train one in the Train tab.")
            )
            candidates = others[:1]
        for folder in candidates:
            try:
                view = self.routers.get(str(folder.resolve()))
                self.routers.default_key = view.key
                if background_map:
                    self.maps.ensure(view)
                break
            except Exception as exc:  # noqa: BLE001 - surfaced in the status area
                self.notes.append(f"Cannot load the router `{folder}`: {exc}")

    def _after_map(self, view: RouterView, background: bool) -> None:
        """Once a map is ready: with ``--engine auto`` not measured yet for this router, let the
        inference layer measure (once; the decision is cached)."""
        s = self.settings
        if s.engine == "auto" and view.engine.decision is None:
            log.info("%s: %s", view.name, prepare_engine(view, s.cache_dir, separate_process=background))
