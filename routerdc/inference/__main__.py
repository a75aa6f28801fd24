"""``python -m routerdc.inference CHECKPOINT [--cache-dir DIR] [--threads N]``: measure ``engine="auto"``
for a router on this machine and cache the decision (and the ONNX form), then print the pick and
why. The app runs this in a low-priority process of its own, so that the measurement (torch
tracing and timing hold the GIL) never slows the requests it is serving."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m routerdc.inference", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--cache-dir", help="default: $ROUTERDC_CACHE or ~/.cache/routerdc")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", help="where the probe queries come from (the paper's test files)")
    p.add_argument("--remeasure", action="store_true")
    a = p.parse_args(argv)
    from routerdc.inference import EngineUnavailable, load_router

    try:
        router = load_router(a.checkpoint, "auto", a.device, threads=a.threads, cache_dir=a.cache_dir,
                             data_dir=a.data_dir, remeasure=a.remeasure)
    except (EngineUnavailable, OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{router.engine_name}: {router.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
