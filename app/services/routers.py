"""The routers the app routes with: :class:`RouterView` (a router on the inference layer's engine,
with its map and memoised choices), how one is loaded (:func:`load_view`, :class:`Preload` at
start-up), the engine measurement after the map (:func:`prepare_engine`) and :class:`RouterService`
(the routers that can be picked and those loaded). Nothing here imports Gradio; the engine is the
inference layer's choice (the app passes its ``--engine`` setting through).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from routerdc.data import ScoreSet
from routerdc.inference import router_fingerprint

from .data import load_data
from .maps import RouterMap

log = logging.getLogger("routerdc.app")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `python -m routerdc...` finds the library

__all__ = ["ENGINE_LABELS", "Preload", "RouterService", "RouterView", "load_view", "prepare_engine",
           "router_fingerprint"]


class RouterView:
    """A loaded router plus what the UI derives from it: its map (:class:`~app.services.maps.RouterMap`)
    and memoised choices on the shipped sets.

    Routing runs on ``engine``, a :class:`routerdc.inference.Router` from
    :func:`routerdc.load_router` (the inference layer chooses the engine: the app's ``--engine``
    is its engine argument). The torch router (``router``) is loaded on first use when the engine
    is not torch: training, evaluation and new maps need it.
    """

    def __init__(self, key: str, router, folder: Path, load_seconds: float = 0.0, *, engine=None,
                 torch_threads: int = 1, fingerprint: str | None = None):
        if router is None and engine is None:
            raise ValueError("a RouterView needs a torch router or a routerdc.inference.Router")
        if engine is None:
            from routerdc.inference import Router

            engine = Router.from_model(router)
        self.key = key
        self._router = router
        self.engine = engine
        self.folder = folder
        self.name = folder.name
        self.load_seconds = load_seconds
        self.torch_threads = torch_threads
        self.fingerprint = fingerprint or router_fingerprint(folder)
        self.map = RouterMap(self)
        self._choices: dict[tuple[int, int], np.ndarray] = {}
        self._emb_lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def loaded_model(self):
        """The torch router if it is loaded already, else None (never loads it)."""
        return self._router

    @property
    def router(self):
        """The torch :class:`~routerdc.model.router.RouterDC`, loaded on first use."""
        if self._router is None:
            with self._load_lock:
                if self._router is None:
                    self._router = self.engine.model
        return self._router

    @property
    def config(self):
        return self.engine.config

    @property
    def meta(self):
        """The router folder's :class:`routerdc.checkpoint.RouterMeta` (None: built in memory)."""
        return self.engine.meta

    @property
    def llms(self) -> tuple[str, ...]:
        return tuple(self.config.llm_names)

    @property
    def llm_keys(self) -> np.ndarray:
        """The LLM embeddings ``(T, d)``, float32."""
        return self.engine.keys

    @property
    def bank(self) -> np.ndarray | None:
        """The novelty fallback's training queries (None without the fallback)."""
        return self.engine.bank

    @property
    def dim(self) -> int:
        return int(self.llm_keys.shape[1])

    @property
    def engine_name(self) -> str:
        return ENGINE_LABELS.get(self.engine.engine_name, self.engine.engine_name)

    def describe(self) -> str:
        c = self.config
        fine_tuned = self.meta is None or self.meta.included
        enc = f"{c.encoder} ({'fine-tuned' if fine_tuned else 'frozen, pretrained'})"
        return (f"`{self.name}` ({self.folder}) - {len(c.llm_names)} LLMs, encoder {enc}, "
                f"pooling {c.pooling}, similarity {c.similarity}, tau {c.temperature:g}"
                + (", projection" if c.projection else "") + f"; routing on {self.engine_name}"
                + f" ({self.engine.reason})")

    def route_embeddings(self, emb: np.ndarray, temperature: float | None = None, cost_weight: float = 0.0):
        """:class:`~routerdc.routing.Routing` for query embeddings (as :meth:`embed` returns), with the
        cost weight lambda (0: the rule without costs; > 0 needs a router with costs)."""
        return self.engine.route_embeddings(emb, temperature, cost_weight)

    @property
    def has_costs(self) -> bool:
        """Whether the router knows its LLMs' costs (``python -m routerdc costs``), for the cost weight."""
        return self.config.llm_cost is not None

    def unk_tokens(self, text: str) -> tuple[int, int] | None:
        """``([UNK] count, token count)`` of ``text`` without special tokens; None when the
        encoder's tokenizer has no unknown token."""
        return self.engine.unk_tokens(text)

    # -- embeddings ---------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Projected router embeddings of ``texts`` on the inference layer's engine (thread-safe)."""
        return self.engine.embed(list(texts))

    def embed_set(self, s: ScoreSet, cache_dir: str | None) -> np.ndarray:
        """Projected embeddings of a whole set, through the on-disk cache when the encoder is
        frozen (the cache holds pre-projection vectors)."""
        from routerdc.inference.embed_cache import router_embeddings

        with self._emb_lock:
            return router_embeddings(self.engine, s.queries, cache_dir=cache_dir)

    def embed_cached(self, texts: Sequence[str], cache_dir: str | None) -> np.ndarray:
        """Projected embeddings of ``texts`` through the on-disk cache (thread-safe)."""
        from routerdc.inference.embed_cache import router_embeddings

        with self._emb_lock:
            return router_embeddings(self.engine, list(texts), cache_dir=cache_dir)

    def choices(self, entry_id: int, s: ScoreSet, cache_dir: str | None) -> np.ndarray:
        """The router's chosen LLM per query of ``s`` (indices into ``s.llms``), memoised."""
        key = (entry_id, len(s))
        if key not in self._choices:
            routing = self.route_embeddings(self.embed_set(s, cache_dir))
            col = {n: i for i, n in enumerate(s.llms)}
            self._choices[key] = np.asarray([col[n] for n in routing.llms], dtype=np.int64)
        return self._choices[key]


ENGINE_LABELS = {"onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime int8", "torch": "torch",
                 "torch-bf16": "torch bf16", "torch-bf16-checked": "torch bf16, near-ties in fp32",
                 "int8": "torch int8"}


def load_view(key: str, threads: int, cache_dir: str | None = None, engine: str = "auto") -> RouterView:
    """Load the router at ``key`` through the inference layer on ``engine``. With ``auto`` the
    engine decided for this router and machine before is used at once (an ONNX pick needs neither
    torch nor transformers); when there is none yet, torch fp32 routes until :func:`prepare_engine`
    has measured (after the map)."""
    from routerdc.inference import load_router

    t0 = time.perf_counter()
    folder = Path(key)
    # $ROUTERDC_DEVICE: cuda on the GPU Space (deploy/gpu-space, with ROUTERDC_ENGINE=torch); default cpu.
    device = os.environ.get("ROUTERDC_DEVICE") or "cpu"
    routing = load_router(key, engine, device, threads=threads, cache_dir=cache_dir, measure=False)
    return RouterView(key, None, folder, time.perf_counter() - t0, engine=routing, torch_threads=threads,
                      fingerprint=router_fingerprint(folder))


def prepare_engine(view: RouterView, cache_dir: str | None, *, separate_process: bool = False) -> str:
    """With ``auto`` not measured yet: let the inference layer measure the engines for ``view``'s
    router on this machine (the decision and any ONNX form are cached) and switch its routing to
    the pick.

    ``separate_process``: measure in a child process at the lowest CPU priority (``python -m
    routerdc.inference``), as the app does at start-up: torch tracing and timing hold the GIL for
    seconds, which would stall the requests this process is serving. Returns what happened, for
    logs and the status area; never raises."""
    if view.engine.decision is not None:
        return f"{view.engine_name} already in use"
    import subprocess
    import sys

    from routerdc.inference import EngineUnavailable, load_router

    try:
        if separate_process:
            cmd = [sys.executable, "-m", "routerdc.inference", str(view.folder), "--threads",
                   str(max(view.torch_threads, 1)), "--exit-with-parent"] + (
                ["--cache-dir", str(cache_dir)] if cache_dir else [])
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=_PROJECT_ROOT,
                                  preexec_fn=(lambda: os.nice(19)) if hasattr(os, "nice") else None)
            if done.returncode != 0:
                raise EngineUnavailable((done.stderr.strip().splitlines() or ["measurement failed"])[-1])
        view.engine = load_router(view.folder, "auto", "cpu", threads=view.torch_threads, cache_dir=cache_dir,
                                  model=view.loaded_model, measure=not separate_process)
        return f"routing on {view.engine_name}: {view.engine.reason}"
    except (EngineUnavailable, OSError, RuntimeError, subprocess.SubprocessError) as exc:
        log.warning("routing stays on torch: %s", exc)
        return f"routing stays on torch ({exc})"


@dataclass
class Preload:
    """Start-up work started before Gradio is imported: the data and the default router load in
    threads while the main thread imports Gradio (about 40% off the cold start on 2 cores)."""

    key: str
    data: Future
    router: Future | None

    @classmethod
    def start(cls, settings) -> "Preload":
        pool = ThreadPoolExecutor(2, thread_name_prefix="preload")
        folder = settings.resolve(settings.checkpoint)
        key = str(folder.resolve())
        router = (pool.submit(load_view, key, settings.torch_threads, settings.cache_dir, settings.engine)
                  if (folder / "config.json").exists() else None)
        data = pool.submit(load_data, settings)
        pool.shutdown(wait=False)
        return cls(key, data, router)


class RouterService:
    """The routers of this process: those that can be picked (``known``: key -> label) and those
    loaded (at most :attr:`MAX_ROUTERS`, the default one never evicted)."""

    MAX_ROUTERS = 4

    def __init__(self, settings) -> None:
        self.settings = settings
        self.default_key: str | None = None
        self.known: dict[str, str] = {}
        self.loaded: dict[str, RouterView] = {}
        self._preloaded: dict[str, Future] = {}
        self._lock = threading.Lock()

    def preloaded(self, key: str, router: Future) -> None:
        """A router already loading (see :class:`Preload`): :meth:`get` takes it when asked for ``key``."""
        self._preloaded[key] = router

    def discover(self) -> None:
        """Routers that can be picked: the configured one, extra ones, checkpoints/*, runs/*, the
        runs dir. Left-overs of killed writes (``.X.tmp-*``, ``.X.old-*``) are swept first and never listed."""
        from routerdc.checkpoint import list_routers

        s = self.settings
        cands = [s.resolve(s.checkpoint), *(s.resolve(c) for c in s.extra_checkpoints)]
        bases = (s.resolve("checkpoints"), s.resolve("runs"), s.runs_path) if s.discover else ()
        for base in bases:
            cands.extend(list_routers(base))
        for c in cands:
            if (c / "config.json").exists():
                self.register(c)

    def register(self, folder: Path, label: str | None = None) -> str:
        key = str(Path(folder).resolve())
        with self._lock:
            self.known.setdefault(key, label or self._label(Path(key)))
        return key

    def _label(self, folder: Path) -> str:
        try:
            return str(folder.relative_to(self.settings.resolve(".")))
        except ValueError:
            return str(folder)

    def choices(self) -> list[tuple[str, str]]:
        """``(label, key)`` of every router that can be picked."""
        with self._lock:
            return [(label, key) for key, label in self.known.items()]

    def get(self, key: str | None) -> RouterView:
        """The loaded router for ``key`` (a folder), loading it on first use."""
        if not key:
            raise LookupError("No router is loaded. Train one in the Train tab or pick one above.")
        with self._lock:
            view = self.loaded.get(key)
            if view is not None:
                return view
        fut = self._preloaded.pop(key, None)
        if fut is not None:
            view = fut.result()
        else:
            s = self.settings
            view = load_view(key, s.torch_threads, s.cache_dir, s.engine)
        with self._lock:
            if key in self.loaded:
                return self.loaded[key]
            if len(self.loaded) >= self.MAX_ROUTERS:
                for old in list(self.loaded):  # evict the oldest router that is not the default
                    if old != self.default_key:
                        del self.loaded[old]
                        break
            self.loaded[key] = view
            self.known.setdefault(key, self._label(Path(key)))
        return view
