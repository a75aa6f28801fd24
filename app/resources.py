"""Shared, process-wide resources of the app: the score data, the loaded routers and their maps.

One :class:`AppContext` is created by ``create_app`` and passed to every tab builder. It holds
only things shared by all sessions (read-mostly, guarded by locks); what a session chooses (its
router, its routed queries) lives in ``gr.State``. Nothing here imports Gradio.
"""

from __future__ import annotations

import os
import logging
import os
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from routerdc.data import DataError, ScoreSet, load_scores, resolve_data_dir, task_label

log = logging.getLogger("routerdc.app")
_PROJECT_ROOT = Path(__file__).resolve().parent.parent  # where `python -m routerdc...` finds the library

# The shipped score files, relative to the data directory: (family, role, path).
SHIPPED_FILES: tuple[tuple[str, str, str], ...] = (
    *(("routerdc", "train", f"routerdc/split2_model7_cluster/{f}") for f in (
        "mmlu_train.json", "gsm8k-train.json", "cmmlu_train.json", "arc_challenge_train.json",
        "humaneval_train.json")),
    *(("routerdc", "test", f"routerdc/split2_model7/{f}") for f in (
        "mmlu_test.json", "gsm8k-test.json", "cmmlu_test.json", "arc_challenge_test.json",
        "humaneval_test.json", "MATH_prealgebra.json", "mbpp.json", "ceval.json")),
    *(("routerbench", "train", f"routerbench/routerbench_cluster/{f}") for f in (
        "arc_challenge_train.csv", "mbpp_train.csv", "winograde_train.csv")),
    *(("routerbench", "test", f"routerbench/routerbench_zs/{f}") for f in (
        "arc_challenge_test.csv", "mbpp_test.csv", "winograde_test.csv")),
)
# The paper's in-distribution tasks (the others are out-of-distribution).
PAPER_ID = ("mmlu", "gsm8k", "cmmlu", "arc_challenge", "humaneval")
FAMILY_LABEL = {"routerdc": "RouterDC paper data (7 open LLMs)", "routerbench": "RouterBench (11 LLMs, recorded answers)"}


@dataclass
class DataEntry:
    """One loaded score set with where it came from."""

    key: str  # e.g. "routerdc/train/mmlu"
    family: str
    role: str  # "train" | "test" | "upload"
    set: ScoreSet
    path: str

    @property
    def label(self) -> str:
        fam = "RouterBench " if self.family == "routerbench" else ""
        return f"{fam}{task_label(self.set.task)} ({self.role}, {len(self.set)})"


class DataBank:
    """The shipped score sets, with an index from query text to its rows."""

    def __init__(self, entries: Sequence[DataEntry], errors: Sequence[str] = (), data_dir: str | None = None):
        self.entries = list(entries)
        self.errors = list(errors)
        self.data_dir = data_dir
        self.notes: list[str] = []  # e.g. rows skipped for missing scores
        self.index: dict[str, list[tuple[int, int]]] = {}
        for i, e in enumerate(self.entries):
            for r, q in enumerate(e.set.queries):
                self.index.setdefault(q.strip(), []).append((i, r))

    @classmethod
    def load(cls, data_dir: str | None, files: Sequence[tuple[str, str, str]] | None = None,
             max_rows: int = 0) -> "DataBank":
        errors: list[str] = []
        notes: list[str] = []
        try:
            root = resolve_data_dir(data_dir)
        except DataError as exc:
            return cls([], [str(exc)], None)
        if not os.access(root, os.R_OK | os.X_OK):
            return cls([], [f"data directory {root.name!r} is not readable (permission denied); fix its "
                            "permissions or pass another --data-dir"], None)
        entries: list[DataEntry] = []
        for family, role, rel in (files if files is not None else SHIPPED_FILES):
            path = root / rel
            if not path.exists():
                errors.append(f"{rel}: not found in {root}")
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    sets = load_scores(path, missing="drop")
                notes.extend(str(w.message) for w in caught)
            except DataError as exc:
                errors.append(str(exc))
                continue
            for s in sets:
                if max_rows and len(s) > max_rows:
                    s = s.subset(np.arange(max_rows))
                entries.append(DataEntry(f"{family}/{role}/{s.task}", family, role, s, str(path)))
        bank = cls(entries, errors, str(root))
        bank.notes = notes
        return bank

    def lookup(self, query: str) -> list[tuple[DataEntry, int]]:
        return [(self.entries[i], r) for i, r in self.index.get(query.strip(), [])]

    def matching(self, llms: Sequence[str], roles: Sequence[str] = ("train", "test")) -> list[DataEntry]:
        """The entries whose LLM set is exactly ``llms`` (any order)."""
        want = set(llms)
        return [e for e in self.entries if set(e.set.llms) == want and e.role in roles]

    def by_key(self, key: str) -> DataEntry:
        for e in self.entries:
            if e.key == key:
                return e
        raise KeyError(key)

    def examples(self, per_task: int = 1) -> list[tuple[str, str]]:
        """``(query, label)`` examples: the shortest-but-not-trivial query of each task, test sets
        first, so every task (and both languages) is covered."""
        out: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for e in sorted(self.entries, key=lambda e: (e.role != "test", e.family)):
            tag = (e.family, e.set.task)
            if tag in seen:
                continue
            seen.add(tag)
            qs = [q for q in e.set.queries if 40 <= len(q) <= 400] or list(e.set.queries)
            qs.sort(key=len)
            for q in qs[len(qs) // 4: len(qs) // 4 + per_task]:
                out.append((q, e.label))
        return out


# ---------------------------------------------------------------------------------- routers
def router_fingerprint(folder: Path, *, embeddings_only: bool = False) -> str:
    """Identity of a saved router's content (config and weights; SHA-256, about 0.1 s for the
    shipped 45 MB): a copy or a fresh clone of the same router finds the same cached map and ONNX
    form, and any change to its files gives a new identity. ``embeddings_only`` leaves out the
    calibrated routing offsets, which change no embedding (the map's cache key)."""
    from routerdc.inference.embed_cache import checkpoint_key
    from routerdc.inference.embedding_map import map_key

    return map_key(checkpoint_key(folder, embeddings_only=embeddings_only))


SHIPPED_MAP_DIR = "maps"  # a router folder may ship its map here (see RouterView.ship_map)


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


class RouterView:
    """A loaded router plus the derived data the UI needs (map, pool, evaluation cache).

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
        self.pool: Pool | None = None
        self.emap = None  # routerdc.inference.embedding_map.EmbeddingMap once ready
        self.pool_raw: np.ndarray | None = None  # (n, d) projected embeddings
        self.pool_routed: np.ndarray | None = None
        self.map_state = "not computed"
        self.map_seconds: float | None = None
        self._map_lock = threading.Lock()
        self._choices: dict[tuple[int, int], np.ndarray] = {}
        self._emb_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.map_json: dict = {}  # colouring -> the base map figure as a plotly JSON dict (app.common)

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
    def meta(self) -> dict:
        return getattr(self.engine, "meta", {}) or {}

    @property
    def llms(self) -> tuple[str, ...]:
        return tuple(self.config.llm_names)

    @property
    def llm_keys(self) -> np.ndarray:
        """The LLM embeddings ``(T, d)``, float32."""
        return self.engine.keys

    @property
    def dim(self) -> int:
        return int(self.llm_keys.shape[1])

    @property
    def engine_name(self) -> str:
        return ENGINE_LABELS.get(self.engine.engine_name, self.engine.engine_name)

    def describe(self) -> str:
        c = self.config
        weights = self.meta.get("encoder_weights", "included")
        enc = f"{c.encoder} ({'fine-tuned' if weights == 'included' else 'frozen, pretrained'})"
        return (f"`{self.name}` ({self.folder}) - {len(c.llm_names)} LLMs, encoder {enc}, "
                f"pooling {c.pooling}, similarity {c.similarity}, tau {c.temperature:g}"
                + (", projection" if c.projection else "") + f"; routing on {self.engine_name}"
                + f" ({self.engine.reason})")

    def route_embeddings(self, emb: np.ndarray, temperature: float | None = None):
        """:class:`~routerdc.routing.Routing` for query embeddings (as :meth:`embed` returns)."""
        return self.engine.route_embeddings(emb, temperature)

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

    def choices(self, entry_id: int, s: ScoreSet, cache_dir: str | None) -> np.ndarray:
        """The router's chosen LLM per query of ``s`` (indices into ``s.llms``), memoised."""
        key = (entry_id, len(s))
        if key not in self._choices:
            routing = self.route_embeddings(self.embed_set(s, cache_dir))
            col = {n: i for i, n in enumerate(s.llms)}
            self._choices[key] = np.asarray([col[n] for n in routing.llms], dtype=np.int64)
        return self._choices[key]

    # -- the map --------------------------------------------------------------------------
    def build_pool(self, data: DataBank, per_set: int) -> Pool:
        return build_pool(data, self.llms, per_set)

    def compute_map(self, data: DataBank, *, per_set: int, method: str, cache_dir: str | None,
                    on_state: Callable[[str], None] | None = None) -> None:
        """Build the pool, then load the map from the disk cache or fit and store it."""
        from routerdc.inference.embed_cache import default_cache_dir
        from routerdc.inference.embedding_map import fit_map, save_map

        with self._map_lock:
            if self.emap is not None:
                return
            t0 = time.perf_counter()
            try:
                pool = self.build_pool(data, per_set)
                if not pool.texts:
                    self.map_state = ("unavailable: no loaded data set has this router's LLMs "
                                      "(upload one in the Evaluate tab to score it)")
                    self.pool = pool
                    return
                # The map (embeddings and LLM keys in 2-D) does not depend on calibrated offsets, so a
                # router keeps its map when it is re-calibrated; the routed colouring is computed below.
                fingerprint = (self.fingerprint if not self.config.llm_bias
                               else router_fingerprint(self.folder, embeddings_only=True))
                name = map_file_name(fingerprint, method, pool.texts)
                path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "maps" / name
                emap = raw = None
                source = "cached"
                for where in (self.folder / SHIPPED_MAP_DIR / name, path):  # shipped with the router, else cached
                    if where.exists():
                        emap, raw = _read_map(where, len(pool.texts), len(self.llms))
                        if emap is not None:
                            source = "shipped with the router" if where != path else "cached"
                            break
                if emap is None:
                    source = "fitted"
                    self.map_state = f"computing: embedding {len(pool.texts)} queries"
                    raw = self._embed_pool(data, pool, cache_dir)
                    self.map_state = f"computing: fitting {method.upper()} on {len(pool.texts)} points"
                    emap = fit_map(raw, self.llm_keys, method=method)
                    try:
                        save_map(emap, path, raw=raw)
                    except OSError as exc:
                        log.warning("cannot write the map cache %s: %s", path, exc)
                self.pool, self.pool_raw = pool, raw
                self.pool_routed = self.route_embeddings(raw).choice
                self.emap = emap
                self.map_seconds = time.perf_counter() - t0
                self.map_state = (f"ready ({emap.method.upper()}, {len(pool.texts)} queries, {source}, "
                                  f"{self.map_seconds:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - reported in the status area, app stays up
                log.exception("map computation failed")
                self.map_state = f"failed: {type(exc).__name__}: {exc}"

    def ship_map(self, data: DataBank) -> Path:
        """Write the computed map into the router's folder (``maps/``, compact: float16, compressed),
        with which rows of which data files its points are, so that a fresh clone of the router
        starts with its map. Call after :meth:`compute_map`."""
        from routerdc.inference.embedding_map import save_map

        if self.emap is None or self.pool is None or self.pool_raw is None:
            raise RuntimeError(f"{self.name}: no map to ship ({self.map_state})")
        root = Path(data.data_dir) if data.data_dir else None
        files = []
        for i, _ in self.pool.entry_rows:
            f = Path(data.entries[i].path)
            files.append(str(f.relative_to(root)) if root and f.is_relative_to(root) else f.name)
        fingerprint = (self.fingerprint if not self.config.llm_bias
                       else router_fingerprint(self.folder, embeddings_only=True))
        name = map_file_name(fingerprint, self.emap.method, self.pool.texts)
        out = self.folder / SHIPPED_MAP_DIR
        for old in out.glob("map-*.npz"):  # one shipped map per router
            if old.name != name:
                old.unlink()
        return save_map(self.emap, out / name, compact=True, raw=self.pool_raw,
                        files=np.asarray(files), rows=np.asarray([r for _, r in self.pool.entry_rows], dtype=np.int64))

    def _embed_pool(self, data: DataBank, pool: Pool, cache_dir: str | None) -> np.ndarray:
        from routerdc.inference.embed_cache import cache_path, encoder_key, router_embeddings

        if encoder_key(self.engine) is None:
            return self.embed(pool.texts)
        out = np.zeros((len(pool.texts), self.dim), dtype=np.float32)
        by_entry: dict[int, list[tuple[int, int]]] = {}
        for j, (i, r) in enumerate(pool.entry_rows):
            by_entry.setdefault(i, []).append((j, r))
        for i, pairs in by_entry.items():
            s = data.entries[i].set
            if cache_path(self.engine, s.queries, cache_dir).exists():  # the trainer cached the whole set
                full = self.embed_set(s, cache_dir)
                for j, r in pairs:
                    out[j] = full[r]
            else:  # embed (and cache) only the sampled rows
                with self._emb_lock:
                    proj = router_embeddings(self.engine, [s.queries[r] for _, r in pairs], cache_dir=cache_dir)
                for (j, _), v in zip(pairs, proj):
                    out[j] = v
        return out


# ---------------------------------------------------------------------------------- start-up
def load_data(settings) -> DataBank:
    files = None
    if settings.data_files is not None:
        files = [f for f in SHIPPED_FILES if f[2] in settings.data_files]
    return DataBank.load(settings.data_dir, files, settings.max_rows)


ENGINE_LABELS = {"onnx": "ONNX Runtime", "onnx-int8": "ONNX Runtime int8", "torch": "torch",
                 "torch-bf16": "torch bf16", "int8": "torch int8"}


def onnx_dir(cache_dir: str | None, fingerprint: str) -> Path:
    """Where the ONNX form of the router with ``fingerprint`` is cached (the inference layer's)."""
    from routerdc.inference import onnx_dir as layer_onnx_dir

    return layer_onnx_dir(cache_dir, fingerprint)


def _load_view(key: str, threads: int, cache_dir: str | None = None, engine: str = "auto") -> RouterView:
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
                   str(max(view.torch_threads, 1))] + (["--cache-dir", str(cache_dir)] if cache_dir else [])
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=_PROJECT_ROOT,
                                  preexec_fn=(lambda: os.nice(19)) if hasattr(os, "nice") else None)
            if done.returncode != 0:
                raise EngineUnavailable((done.stderr.strip().splitlines() or ["measurement failed"])[-1])
        view.engine = load_router(view.folder, "auto", "cpu", threads=view.torch_threads, cache_dir=cache_dir,
                                  model=view._router, measure=not separate_process)
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
        router = (pool.submit(_load_view, key, settings.torch_threads, settings.cache_dir, settings.engine)
                  if (folder / "config.json").exists() else None)
        data = pool.submit(load_data, settings)
        pool.shutdown(wait=False)
        return cls(key, data, router)


# ---------------------------------------------------------------------------------- context
def _background_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread is a task with its own nice value),
    so that background work (fitting a map, exporting the ONNX form) yields the cores to requests."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):  # not on Linux, or not permitted: run at normal priority
        pass


@dataclass
class TrainingStatus:
    """The one training run of this process (shared, for the status area)."""

    running: bool = False
    owner: str | None = None
    step: int = 0
    steps: int = 0
    started: float = 0.0
    output_dir: str | None = None


@dataclass
class AppContext:
    settings: object  # app.settings.Settings
    data: DataBank
    default_key: str | None = None
    notes: list[str] = field(default_factory=list)
    routers: dict[str, RouterView] = field(default_factory=dict)
    known: dict[str, str] = field(default_factory=dict)  # key -> label, for the router picker
    train_lock: threading.Lock = field(default_factory=threading.Lock)
    training: TrainingStatus = field(default_factory=TrainingStatus)
    started_at: float = field(default_factory=time.time)
    generation: object | None = None  # app.generation.Generation, with a models config
    fetch: object | None = None  # app.data_fetch.DataFetch: the score data downloading in the background
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _map_threads: dict[str, threading.Thread] = field(default_factory=dict)
    _preloaded: dict[str, Future] = field(default_factory=dict)

    MAX_ROUTERS = 4

    @classmethod
    def create(cls, settings, *, load_default: bool = True, background_map: bool = True,
               preload: "Preload | None" = None) -> "AppContext":
        data = preload.data.result() if preload is not None else load_data(settings)
        ctx = cls(settings=settings, data=data)
        from .data_fetch import start_fetch  # an empty data directory: download the data in the background

        ctx.fetch = start_fetch(ctx)
        if settings.models_config:
            from .generation import Generation

            ctx.generation = Generation.load(str(settings.resolve(settings.models_config)),
                                             launch=settings.launch_llms)
        if preload is not None and preload.router is not None:
            ctx._preloaded[preload.key] = preload.router
        ctx._discover()
        if not load_default:
            return ctx
        primary = settings.resolve(settings.checkpoint)
        candidates = [primary]
        if not (primary / "config.json").exists():
            others = [Path(k) for k in ctx.known if Path(k) != primary]
            ctx.notes.append(
                f"The router `{settings.checkpoint}` is not there (no config.json)"
                + (f"; using `{others[0]}` instead. Pick another router above, or train one in the Train tab."
                   if others else "; no other router found: train one in the Train tab.")
            )
            candidates = others[:1]
        for folder in candidates:
            try:
                view = ctx.get_router(str(folder.resolve()))
                ctx.default_key = view.key
                if background_map:
                    ctx.ensure_map(view)
                break
            except Exception as exc:  # noqa: BLE001 - surfaced in the status area
                ctx.notes.append(f"Cannot load the router `{folder}`: {exc}")
        return ctx

    def _discover(self) -> None:
        """Routers that can be picked: the configured one, extra ones, runs/*, runs/app/*. Left-overs
        of killed writes (``.X.tmp-*``, ``.X.old-*``) are swept first and never listed."""
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

    def router_choices(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(label, key) for key, label in self.known.items()]

    def get_router(self, key: str | None) -> RouterView:
        """The loaded router for ``key`` (a folder), loading it on first use."""
        if not key:
            raise LookupError("No router is loaded. Train one in the Train tab or pick one above.")
        with self._lock:
            view = self.routers.get(key)
            if view is not None:
                return view
        fut = self._preloaded.pop(key, None)
        if fut is not None:
            view = fut.result()
        else:
            s = self.settings
            view = _load_view(key, s.torch_threads, s.cache_dir, s.engine)
        with self._lock:
            if key in self.routers:
                return self.routers[key]
            if len(self.routers) >= self.MAX_ROUTERS:
                # Evict the oldest router that is not the default.
                for old in list(self.routers):
                    if old != self.default_key:
                        del self.routers[old]
                        break
            self.routers[key] = view
            self.known.setdefault(key, self._label(Path(key)))
        return view

    def ensure_map(self, view: RouterView, background: bool = True) -> None:
        """Start (once) the computation of ``view``'s map; synchronous when not ``background``."""
        if view.emap is not None:
            return
        s = self.settings

        def run() -> None:
            if background:
                _background_priority()
            view.compute_map(self.data, per_set=s.map_per_set, method=s.map_method, cache_dir=s.cache_dir)
            if s.engine == "auto" and view.engine.decision is None:  # measured once, then cached
                log.info("%s: %s", view.name, prepare_engine(view, s.cache_dir, separate_process=background))

        if not background:
            run()
            return
        with self._lock:
            t = self._map_threads.get(view.key)
            if t is not None and t.is_alive():
                return
            view.map_state = "computing"
            t = threading.Thread(target=run, name=f"map-{view.name}", daemon=True)
            self._map_threads[view.key] = t
        t.start()

    def wait_map(self, view: RouterView, timeout: float | None = None) -> bool:
        t = self._map_threads.get(view.key)
        if t is not None:
            t.join(timeout)
        return view.emap is not None
