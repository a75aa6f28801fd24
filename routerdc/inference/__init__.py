"""The inference layer: :func:`load_router` loads a router folder onto an engine and returns a
:class:`Router` with ``embed`` / ``route`` / ``route_embeddings``, ``config`` and ``llm_names``.

Engines (:data:`ENGINES`): ``torch`` (fp32), ``torch-bf16``, ``torch-bf16-checked`` (bf16 with the
near-ties re-encoded in fp32: routes like fp32), ``int8``, ``onnx``, ``onnx-int8``;
``auto`` picks the fastest one on this machine that routes like torch fp32
(:mod:`routerdc.inference.select`). Everything that routes (the CLI, ``serve`` and the routed API,
the trainer's evaluation, the embedding caches, the app) goes through here; nothing above chooses
an engine. Light at import: torch loads only when a torch engine (or an ONNX export) needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from routerdc.inference.engines import ENGINES, EngineUnavailable, Sources, build_engine
from routerdc.inference.router import Router

__all__ = ["ENGINES", "ENGINE_CHOICES", "ENGINE_ENV", "EngineUnavailable", "Router", "default_engine", "load_router",
           "onnx_dir", "router_fingerprint"]

ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINES)
ENGINE_ENV = "ROUTERDC_ENGINE"


def default_engine() -> str:
    """The engine of the commands and the app when none is given: ``$ROUTERDC_ENGINE``, else ``auto``."""
    name = os.environ.get(ENGINE_ENV) or "auto"
    if name not in ENGINE_CHOICES:
        raise ValueError(f"${ENGINE_ENV} must be one of {ENGINE_CHOICES}, got {name!r}")
    return name


def router_fingerprint(folder: str | os.PathLike) -> str:
    """Identity of a saved router's content (config and weights): a copy finds the same cached
    ONNX form and engine decision; any change to its files gives a new one."""
    from routerdc.inference.embed_cache import checkpoint_key
    from routerdc.inference.embedding_map import map_key

    return map_key(checkpoint_key(folder))


def onnx_dir(cache_dir: str | os.PathLike | None, fingerprint: str) -> Path:
    """Where the ONNX form of the router with ``fingerprint`` is cached."""
    from routerdc.inference.embed_cache import default_cache_dir

    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "onnx" / f"router-{fingerprint}"


def _default_device() -> str:
    from routerdc.inference.features import cuda_present

    if cuda_present():
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _cached_decision(cache: Path, fingerprint: str, device: str, engine: str) -> Any:
    """A checked engine asked for by name reuses the margin bounds ``auto`` measured (else it measures):
    the cached decision that holds them, or None."""
    from routerdc.inference.checked import CHECKED

    if engine not in CHECKED:
        return None
    from routerdc.inference.select import decision_path, read_decision

    decision = read_decision(decision_path(cache, fingerprint, device), names=())
    return decision


def load_router(folder: str | os.PathLike, engine: str = "auto", device: str | None = None, *,
                threads: int = 0, cache_dir: str | os.PathLike | None = None, token_budget: int | None = None,
                max_rows: int | None = None,
                data_dir: str | os.PathLike | None = None, remeasure: bool = False,
                candidates: Sequence[str] = ENGINES, measure: bool = True, model: Any = None,
                loader: Callable[[Path, str], Any] | None = None) -> Router:
    """Load the router in ``folder`` on ``engine``.

    Args:
        engine: ``auto`` or one of :data:`ENGINES`.
        device: ``cpu``, ``cuda``, ``cuda:1``...; None: CUDA when there is one, else the CPU.
        threads: > 0 caps the engine's intra-op threads.
        cache_dir: where the ONNX form and the ``auto`` decision are cached
            (default ``$ROUTERDC_CACHE`` or ``~/.cache/routerdc``).
        token_budget: padded tokens per batch (default :data:`routerdc.train.batching.DEFAULT_TOKEN_BUDGET`).
        max_rows: at most this many queries per batch.
        data_dir: where ``auto`` finds its probe queries (the paper's test files).
        remeasure: ``auto`` measures again instead of reading its cached decision.
        candidates: the engines ``auto`` may pick (torch fp32, the reference, is always measured).
        measure: ``auto`` without a cached decision measures now (minutes on a small CPU); False:
            torch fp32 until a later load measures (the app's start, which measures in the background).
        model: the torch router of ``folder`` when the caller has it loaded already.
    Raises:
        ValueError: an unknown engine; EngineUnavailable: the engine cannot run here.
    """
    from routerdc.inference.embed_cache import default_cache_dir

    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {ENGINE_CHOICES}, got {engine!r}")
    folder = Path(folder)
    device = str(device) if device is not None else _default_device()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = router_fingerprint(folder)
    sources = Sources(folder, device=device, threads=threads, onnx_dir=onnx_dir(cache, fingerprint), model=model,
                      loader=loader, data_dir=data_dir)
    reason, decision = f"{engine}: asked for", None
    if engine == "auto" and not measure and not remeasure:
        from routerdc.inference.select import decision_path, read_decision

        decision = read_decision(decision_path(cache, fingerprint, device)) if tuple(candidates) == ENGINES else None
        if decision is None:
            return Router(build_engine("torch", sources), reason="auto: not measured on this machine yet; torch fp32 "
                          "meanwhile", token_budget=token_budget, max_rows=max_rows, folder=folder, sources=sources)
        engine, reason = decision.engine, decision.reason + " (decision cached for this router and machine)"
    elif engine == "auto":
        from routerdc.inference.select import choose

        decision, cached = choose(sources, cache, fingerprint, data_dir=data_dir, token_budget=token_budget,
                                  remeasure=remeasure, candidates=candidates)
        engine = decision.engine
        reason = decision.reason + (" (decision cached for this router and machine)" if cached else "")
    measured = decision if decision is not None else _cached_decision(cache, fingerprint, device, engine)
    bounds = measured.bounds(engine) if measured is not None else None
    nov = measured.novelty_bound(engine) if measured is not None else None
    if bounds is None or nov is None:
        bounds, nov = None, None  # measured now, both on the same probes
    return Router(build_engine(engine, sources, bounds=bounds, novelty_bound=nov), reason=reason, token_budget=token_budget,
                  max_rows=max_rows, folder=folder, sources=sources, decision=decision)
