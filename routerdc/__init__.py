"""routerdc: RouterDC (NeurIPS 2024), a query-based LLM router trained by dual contrastive learning.

Heavy modules (torch, transformers) load on first use::

    from routerdc import RouterDC, load_scores, load_router
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ScoreSet": "routerdc.data", "DataError": "routerdc.data", "load_scores": "routerdc.data",
    "load_many": "routerdc.data", "balance": "routerdc.data", "paper_files": "routerdc.data",
    "RouterDC": "routerdc.model.router", "RouterConfig": "routerdc.routing", "Routing": "routerdc.routing",
    "CheckpointError": "routerdc.checkpoint",
    "TrainConfig": "routerdc.train.config", "Trainer": "routerdc.train.trainer", "train": "routerdc.train.trainer",
    "results_table": "routerdc.evaluate.table",
    "load_router": "routerdc.inference", "Router": "routerdc.inference",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'routerdc' has no attribute {name!r}")


__all__ = sorted(_LAZY)
