"""What the commands share: the default router, ``--data-dir`` and the engine options."""

from __future__ import annotations

import argparse
from pathlib import Path

from routerdc.data.registry import DATA_ENV

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "routerdc-minilm"


def data_dir_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help=f"score-data directory (default: ${DATA_ENV} or ../shared/data)")


def engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` and ``--remeasure``: the inference layer's choice (see routerdc.inference)."""
    from routerdc.inference import ENGINE_CHOICES, ENGINE_ENV

    p.add_argument("--engine", choices=ENGINE_CHOICES,
                   help=f"inference engine (default: ${ENGINE_ENV}, else auto: the fastest on this machine that "
                        "routes like torch fp32, measured once per router and machine, then cached)")
    p.add_argument("--remeasure", action="store_true", help="with --engine auto: measure the engines again")
