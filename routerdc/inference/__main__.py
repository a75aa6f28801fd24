"""``python -m routerdc.inference CHECKPOINT [--cache-dir DIR] [--threads N] [--exit-with-parent]``:
measure ``engine="auto"`` for a router on this machine and cache the decision (and the ONNX form),
then print the pick and why. The app runs this in a low-priority process of its own, so that the
measurement (torch tracing and timing hold the GIL) never slows the requests it is serving, and
with ``--exit-with-parent``, so that a measurement nobody waits for stops when the app is killed."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Sequence

EXIT_PARENT_GONE = 3


def exit_with_parent(interval: float = 0.5) -> threading.Thread:
    """A daemon thread that ends this process (status :data:`EXIT_PARENT_GONE`) once its parent is
    gone: a child whose parent dies is handed to another process, so its parent pid changes (a
    parent that is killed but not yet reaped would still answer a signal; the parent pid does not
    lie)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(EXIT_PARENT_GONE)  # nothing is half-written: the decision cache is written atomically

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m routerdc.inference", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--cache-dir", help="default: $ROUTERDC_CACHE or ~/.cache/routerdc")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", help="where the probe queries come from (the paper's test files)")
    p.add_argument("--remeasure", action="store_true")
    p.add_argument("--exit-with-parent", action="store_true",
                   help=f"stop (status {EXIT_PARENT_GONE}) as soon as the process that started this one is gone")
    a = p.parse_args(argv)
    if a.exit_with_parent:
        exit_with_parent()
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
