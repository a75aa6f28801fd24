"""The embedding maps of the routers: each router's pool of reference queries (samples of the loaded
sets with its LLMs), their 2-D map with the LLM keys (:mod:`routerdc.inference.embedding_map`),
shipped with the router or cached on disk, and the threads that compute them in the background.
Nothing here imports Gradio; the figure is drawn by the Explore tab alone.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from routerdc.data import task_label

from .data import DataBank

if TYPE_CHECKING:
    from .routers import RouterView

log = logging.getLogger("routerdc.app")

__all__ = ["SHIPPED_MAP_DIR", "MapService", "Pool", "RouterMap", "build_pool", "map_file_name", "map_fingerprint"]


def map_fingerprint(folder: Path) -> str:
    """The identity of a router's map: what its embeddings depend on (the encoder's config fields and
    every weight file, :func:`routerdc.inference.embed_cache.checkpoint_key` with ``embeddings_only``),
    so that calibrating or costing a router keeps its map."""
    from routerdc.inference.embed_cache import checkpoint_key
    from routerdc.inference.embedding_map import map_key

    return map_key(checkpoint_key(folder, embeddings_only=True))


SHIPPED_MAP_DIR = "maps"  # a router folder may ship its map here (see RouterMap.ship)


def map_file_name(fingerprint: str, method: str, texts: Sequence[str]) -> str:
    """The map file of a router (by content) over exactly ``texts``, fitted with ``method``."""
    from routerdc.inference.embedding_map import map_key

    return f"map-{map_key(fingerprint, method, texts=texts)}.npz"


def _pool_seed(entry_key: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(entry_key.encode("utf-8")).digest()[:4], "little")


def _read_map(path: Path, n: int, n_llms: int):
    """``(map, raw embeddings)`` from ``path``, or ``(None, None)`` when it is unusable (logged)."""
    from routerdc.inference.embedding_map import load_map

    try:
        emap, extra = load_map(path)
        raw = extra["raw"]
    except (ValueError, KeyError) as exc:
        log.warning("ignoring map file %s: %s", path, exc)
        return None, None
    if len(emap) != n or emap.llm_coords.shape[0] != n_llms or raw.shape[0] != n:
        log.warning("ignoring map file %s: it does not fit this router's pool", path)
        return None, None
    return emap, raw


@dataclass
class Pool:
    """The reference queries of a router's map: samples of the data sets that share its LLMs."""

    texts: list[str]
    tasks: list[str]  # display labels
    roles: list[str]
    clusters: np.ndarray  # (n,) -1 when unknown
    scores: np.ndarray  # (n, T), aligned to the router's LLMs
    entry_rows: list[tuple[int, int]]  # (entry index in the DataBank, row)


def build_pool(data: DataBank, llms: Sequence[str], per_set: int) -> Pool:
    """The map's reference queries for a router over ``llms``: up to ``per_set`` rows of every loaded
    set with exactly these LLMs, sampled with a seed of the set's own key (so the same rows whatever
    else is loaded)."""
    texts, tasks, roles, clusters, scores, rows = [], [], [], [], [], []
    for i, e in enumerate(data.entries):
        if set(e.set.llms) != set(llms):
            continue
        s = e.set.align(llms)
        rng = np.random.default_rng(_pool_seed(e.key))
        idx = np.sort(rng.choice(len(s), per_set, replace=False)) if len(s) > per_set else np.arange(len(s))
        for r in idx:
            texts.append(s.queries[r])
            tasks.append(task_label(s.task) + (" (RB)" if e.family == "routerbench" else ""))
            roles.append(e.role)
            clusters.append(int(s.clusters[r]) if s.clusters is not None else -1)
            scores.append(s.scores[r])
            rows.append((i, int(r)))
    T = len(llms)
    return Pool(texts, tasks, roles, np.asarray(clusters, dtype=np.int64),
                np.asarray(scores, dtype=np.float32).reshape(-1, T), rows)


class RouterMap:
    """The map of one router: its pool, the fitted 2-D map (``emap``), the pool's embeddings (``raw``)
    and routed choices (``routed``), its state for the status area, and the figures drawn from it
    (``figures``: colouring -> plotly JSON; ``hover``: the points' hover texts), kept by the Explore tab."""

    def __init__(self, view: "RouterView") -> None:
        self.view = view
        self.pool: Pool | None = None
        self.emap = None  # routerdc.inference.embedding_map.EmbeddingMap once ready
        self.raw: np.ndarray | None = None  # (n, d) projected embeddings of the pool
        self.routed: np.ndarray | None = None  # (n,) the router's choice per pool query
        self.state = "not computed"
        self.seconds: float | None = None
        self.figures: dict[str, dict] = {}
        self.hover: list[str] | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.emap is not None

    def compute(self, data: DataBank, *, per_set: int, method: str, cache_dir: str | None,
                    on_state: Callable[[str], None] | None = None) -> None:
        """Build the pool, then load the map shipped with the router or from the disk cache, or fit
        and cache it. Never raises: a failure is the map's state, shown in the status area."""
        v = self.view
        from routerdc.inference.embed_cache import default_cache_dir
        from routerdc.inference.embedding_map import fit_map, save_map

        with self._lock:
            if self.emap is not None:
                return
            t0 = time.perf_counter()
            try:
                pool = build_pool(data, v.llms, per_set)
                if not pool.texts:
                    self.state = ("unavailable: no loaded data set has this router's LLMs "
                                      "(upload one in the Evaluate tab to score it)")
                    self.pool = pool
                    return
                # The map (embeddings and LLM keys in 2-D) does not depend on calibrated offsets, so a
                # router keeps its map when it is re-calibrated; the routed colouring is computed below.
                fingerprint = map_fingerprint(v.folder)
                name = map_file_name(fingerprint, method, pool.texts)
                path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "maps" / name
                emap = raw = None
                source = "cached"
                for where in (v.folder / SHIPPED_MAP_DIR / name, path):  # shipped with the router, else cached
                    if where.exists():
                        emap, raw = _read_map(where, len(pool.texts), len(v.llms))
                        if emap is not None:
                            source = "shipped with the router" if where != path else "cached"
                            break
                if emap is None:
                    source = "fitted"
                    self.state = f"computing: embedding {len(pool.texts)} queries"
                    raw = self._embed_pool(data, pool, cache_dir)
                    self.state = f"computing: fitting {method.upper()} on {len(pool.texts)} points"
                    emap = fit_map(raw, v.llm_keys, method=method)
                    try:
                        save_map(emap, path, raw=raw)
                    except OSError as exc:
                        log.warning("cannot write the map cache %s: %s", path, exc)
                self.pool, self.raw = pool, raw
                self.routed = v.route_embeddings(raw).choice
                self.emap = emap
                self.seconds = time.perf_counter() - t0
                self.state = (f"ready ({emap.method.upper()}, {len(pool.texts)} queries, {source}, "
                                  f"{self.seconds:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - reported in the status area, app stays up
                log.exception("map computation failed")
                self.state = f"failed: {type(exc).__name__}: {exc}"

    def ship(self, data: DataBank) -> Path:
        """Write the computed map into the router's folder (``maps/``, compact: float16, compressed),
        with which rows of which data files its points are, so that a fresh clone of the router
        starts with its map. Call after :meth:`compute`."""
        from routerdc.inference.embedding_map import save_map

        if self.emap is None or self.pool is None or self.raw is None:
            raise RuntimeError(f"{self.view.name}: no map to ship ({self.state})")
        root = Path(data.data_dir) if data.data_dir else None
        files = []
        for i, _ in self.pool.entry_rows:
            f = Path(data.entries[i].path)
            files.append(str(f.relative_to(root)) if root and f.is_relative_to(root) else f.name)
        fingerprint = map_fingerprint(self.view.folder)
        name = map_file_name(fingerprint, self.emap.method, self.pool.texts)
        out = self.view.folder / SHIPPED_MAP_DIR
        for old in out.glob("map-*.npz"):  # one shipped map per router
            if old.name != name:
                old.unlink()
        return save_map(self.emap, out / name, compact=True, raw=self.raw,
                        files=np.asarray(files), rows=np.asarray([r for _, r in self.pool.entry_rows], dtype=np.int64))

    def _embed_pool(self, data: DataBank, pool: Pool, cache_dir: str | None) -> np.ndarray:
        from routerdc.inference.embed_cache import cache_path, encoder_key

        v = self.view
        if encoder_key(v.engine) is None:
            return v.embed(pool.texts)
        out = np.zeros((len(pool.texts), v.dim), dtype=np.float32)
        by_entry: dict[int, list[tuple[int, int]]] = {}
        for j, (i, r) in enumerate(pool.entry_rows):
            by_entry.setdefault(i, []).append((j, r))
        for i, pairs in by_entry.items():
            s = data.entries[i].set
            if cache_path(v.engine, s.queries, cache_dir).exists():  # the trainer cached the whole set
                full = v.embed_set(s, cache_dir)
                for j, r in pairs:
                    out[j] = full[r]
            else:  # embed (and cache) only the sampled rows
                proj = v.embed_cached([s.queries[r] for _, r in pairs], cache_dir)
                for (j, _), vec in zip(pairs, proj):
                    out[j] = vec
        return out


class MapService:
    """Computes each router's map once, in a background thread at low CPU priority; ``after`` runs
    in that thread once the map is ready (the app measures the routing engines then)."""

    def __init__(self, settings, data: Callable[[], DataBank],
                 after: Callable[["RouterView", bool], None] | None = None) -> None:
        self.settings = settings
        self._data = data
        self.after = after
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def ensure(self, view: "RouterView", background: bool = True) -> None:
        """Start (once) the computation of ``view``'s map; synchronous when not ``background``."""
        if view.map.emap is not None:
            return
        s = self.settings

        def run() -> None:
            if background:
                background_priority()
            view.map.compute(self._data(), per_set=s.map_per_set, method=s.map_method, cache_dir=s.cache_dir)
            if self.after is not None:
                self.after(view, background)

        if not background:
            run()
            return
        with self._lock:
            t = self._threads.get(view.key)
            if t is not None and t.is_alive():
                return
            view.map.state = "computing"
            t = threading.Thread(target=run, name=f"map-{view.name}", daemon=True)
            self._threads[view.key] = t
        t.start()

    def wait(self, view: "RouterView", timeout: float | None = None) -> bool:
        """Wait for ``view``'s map computation; whether the map is ready."""
        t = self._threads.get(view.key)
        if t is not None:
            t.join(timeout)
        return view.map.emap is not None


def background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread is a task with its own nice value),
    so that background work (fitting a map, exporting the ONNX form) yields the cores to requests."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not on Linux, or not permitted: run at normal priority
        pass
