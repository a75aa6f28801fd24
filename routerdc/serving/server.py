"""``python -m routerdc serve``: the routed OpenAI-compatible API alone, under uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``serve``."""
    p.add_argument("--checkpoint", required=True, help="router folder (as written by train)")
    p.add_argument("--models-config", required=True, help="models config (.yaml/.yml/.json) of the candidates")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--device", default="cpu", help="device of the router (default: cpu)")
    p.add_argument("--preload", action="store_true",
                   help="load every candidate's backend (weights, tokenizers) before accepting requests")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default: info)")
    p.add_argument("--enable-sleep-mode", action="store_true",
                   help="serve vLLM's sleep-mode routes (/sleep, /wake_up, /is_sleeping) for the in-process "
                        "models, so that a launcher or router can swap this server like a vLLM server")


def build_app(checkpoint: str, models_config: str, *, device: str = "cpu", preload: bool = False,
              sleep_mode: bool = False) -> Any:
    """Load the router and the config, check that they match, and return the FastAPI app."""
    from ..model import RouterDC
    from .api import create_api
    from .config import load_models_config
    from .registry import Registry

    config = load_models_config(models_config)
    router = RouterDC.from_pretrained(checkpoint, device=device)
    config.check_router(router.config.llm_names)  # a clear error before loading anything else
    registry = Registry(config)
    if preload:
        for name in registry.names:
            ok = registry.get(name).health()
            print(f"{name}: {'ready' if ok else 'NOT healthy'}", file=sys.stderr, flush=True)
    return create_api(router, registry, sleep_mode=sleep_mode)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API until interrupted."""
    import uvicorn

    app = build_app(args.checkpoint, args.models_config, device=args.device, preload=args.preload,
                    sleep_mode=args.enable_sleep_mode)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
