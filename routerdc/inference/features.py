"""What this machine offers the inference engines: CPU flags read from ``/proc/cpuinfo`` (and
torch's own view, ``torch.backends.cpu.get_cpu_capability()``, once torch is loaded), and a
machine key under which :mod:`routerdc.inference.select` caches its decision.

Nothing is assumed: bf16 needs AMX-BF16 or AVX512-BF16 on a CPU (or CUDA), int8 wants VNNI or
AMX-INT8 to be fast.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuFeatures", "cpu_features", "cuda_present", "machine_key"]

_WATCHED = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU's model, usable cores and the flags that matter to the engines."""

    model: str
    cores: int
    flags: frozenset[str]

    @property
    def bf16(self) -> bool:
        """Native bf16 matmuls: AMX-BF16 or AVX512-BF16."""
        return bool({"amx_bf16", "avx512_bf16"} & self.flags)

    @property
    def int8(self) -> bool:
        """Fast int8 dot products: VNNI (AVX512 or AVX) or AMX-INT8."""
        return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & self.flags)

    def summary(self) -> str:
        shown = [f for f in _WATCHED if f in self.flags]
        return f"{self.model or 'unknown CPU'}, {self.cores} cores, " + (" ".join(shown) or "no AVX2")


def _read_flags(text: str) -> tuple[str, frozenset[str]]:
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_features() -> CpuFeatures:
    """This machine's CPU (cached for the process)."""
    try:
        model, flags = _read_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        model, flags = platform.processor(), frozenset()
    if "torch" in sys.modules:  # torch's dispatch level, when torch is already loaded (never imported here)
        try:
            cap = str(sys.modules["torch"].backends.cpu.get_cpu_capability()).lower()
            if "avx512" in cap:
                flags = flags | {"avx512f"}
            if "amx" in cap:
                flags = flags | {"amx_bf16", "amx_tile"}
        except Exception:  # noqa: BLE001 - an old torch without the call
            pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return CpuFeatures(model, cores, flags)


def cuda_present() -> bool:
    """Whether an NVIDIA device node exists (checked without importing torch)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia").exists()


def machine_key(device: str) -> str:
    """An identity of (CPU model, watched flags, cores, device, library versions) for the cache."""
    f = cpu_features()
    versions = []
    for mod in ("torch", "onnxruntime"):
        try:
            from importlib.metadata import version

            versions.append(f"{mod}={version(mod)}")
        except Exception:  # noqa: BLE001 - not installed
            versions.append(f"{mod}=none")
    text = "|".join([f.model, ",".join(sorted(f.flags & set(_WATCHED))), str(f.cores), device, *versions])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
