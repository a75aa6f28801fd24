"""Shared by the benchmarks: a description of the machine the figures were measured on, and the
results file they write."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """Torch version, threads, CPU count and model, load average."""
    import torch

    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
        "cpu_model": cpu_model, "cpu_count": os.cpu_count(), "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(), "quantized_engine": torch.backends.quantized.engine,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a benchmark's ``report`` as indented JSON to ``path`` (folders created) and say so."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return out
