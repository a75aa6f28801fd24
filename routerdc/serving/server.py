"""``python -m routerdc serve``: the routed OpenAI-compatible API alone, under uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``serve``."""
    p.add_argument("--checkpoint", required=True, help="router folder (as written by train)")
    p.add_argument("--models-config", help="models config (.yaml/.yml/.json) of the candidates (default: the router's "
                                           "LLMs answer with their recorded RouterBench answers and prices, "
                                           "see routerdc/serving/recorded_fleet.py)")
    p.add_argument("--data-dir", help="score-data directory of the recorded answers without --models-config "
                                      "(default: $ROUTERDC_DATA or ../shared/data)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", help="device of the router (default: CUDA when there is one, else the CPU)")
    from routerdc.inference import ENGINE_CHOICES

    p.add_argument("--engine", choices=ENGINE_CHOICES,
                   help="inference engine of the router (default: $ROUTERDC_ENGINE, else auto: the fastest that "
                        "routes like torch fp32)")
    p.add_argument("--micro-batch-ms", type=float, default=0.0,
                   help="gather concurrent requests for up to this many ms into one encoder batch "
                        "(default: 0, no waiting: the requests that queued while the last batch ran form the next)")
    p.add_argument("--no-micro-batching", action="store_true", help="route each request alone")
    from routerdc.serving.sessions import DEFAULT_MAX_SESSIONS, DEFAULT_TTL_S

    p.add_argument("--session-ttl", type=float, default=DEFAULT_TTL_S, metavar="SECONDS",
                   help="a conversation named by routerdc.session (or user) stays on its LLM until this many "
                        f"seconds pass without a turn (default: {DEFAULT_TTL_S:g})")
    p.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS, metavar="N",
                   help=f"keep at most N live sessions; beyond, the least recently used is dropped "
                        f"(default: {DEFAULT_MAX_SESSIONS})")
    p.add_argument("--preload", action="store_true",
                   help="load every candidate's backend (weights, tokenizers) before accepting requests")
    p.add_argument("--api-key", action="append", default=None, metavar="KEY",
                   help="key callers must send as 'Authorization: Bearer KEY' (repeatable, or comma-separated; "
                        "default: $ROUTERDC_API_KEY). Without one, only a loopback --host is allowed")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve without an API key on a non-loopback --host (anyone who reaches it may spend "
                        "the LLMs)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    p.add_argument("--enable-sleep-mode", action="store_true",
                   help="serve vLLM's sleep-mode routes (/sleep, /wake_up, /is_sleeping) for the in-process "
                        "models, so that a launcher or router can swap this server like a vLLM server")


def build_app(checkpoint: str, models_config: str | None, *, device: str | None = None, preload: bool = False,
              sleep_mode: bool = False, engine: str | None = None, batching: Any = None,
              api_keys: tuple[str, ...] = (), loopback_hosts: bool = False, sessions: Any = None,
              data_dir: str | None = None) -> Any:
    """Load the router (on ``engine``, see :func:`routerdc.load_router`) and the config, check that
    they match, and return the FastAPI app. Without a ``models_config`` the router's LLMs answer
    with their recorded RouterBench answers (:func:`routerdc.serving.recorded_fleet.recorded_config_for`)."""
    from routerdc.inference import default_engine, load_router
    from routerdc.serving.api import create_api
    from routerdc.serving.config import load_models_config
    from routerdc.serving.registry import Registry

    if models_config is None:
        from routerdc.serving.recorded_fleet import recorded_config_for

        config = recorded_config_for(checkpoint, data_dir)  # a clear error when the LLMs have none
        files = config.models[0].data_files
        print(f"no models config: {len(config.models)} LLMs answer with their recorded answers from {len(files)} "
              f"RouterBench files", file=sys.stderr, flush=True)
    else:
        config = load_models_config(models_config)
    router = load_router(checkpoint, engine or default_engine(), device)
    print(f"router: {router.describe()}", file=sys.stderr, flush=True)
    config.check_router(router.config.llm_names)  # a clear error before loading anything else
    registry = Registry(config)
    if preload:
        for name in registry.names:
            ok = registry.get(name).health()
            print(f"{name}: {'ready' if ok else 'NOT healthy'}", file=sys.stderr, flush=True)
    return create_api(router, registry, sleep_mode=sleep_mode, batching=batching, api_keys=api_keys,
                      loopback_hosts=loopback_hosts, sessions=sessions)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    import uvicorn

    from routerdc.serving.batcher import BatchConfig
    from routerdc.serving.auth import BindRefused, check_bind, is_loopback, keys_from_env
    from routerdc.serving.sessions import SessionConfig, SessionStore

    try:
        sessions = SessionStore(SessionConfig(ttl_s=args.session_ttl, max_sessions=args.max_sessions))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys = keys_from_env(args.api_key)
    try:
        line = check_bind(args.host, keys, args.allow_unauthenticated)
    except BindRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(line, file=sys.stderr, flush=True)
    app = build_app(args.checkpoint, args.models_config, device=args.device, preload=args.preload,
                    sleep_mode=args.enable_sleep_mode, engine=args.engine,
                    batching=BatchConfig(enabled=not args.no_micro_batching, window_ms=args.micro_batch_ms),
                    api_keys=keys, loopback_hosts=not keys and is_loopback(args.host), sessions=sessions,
                    data_dir=args.data_dir)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
