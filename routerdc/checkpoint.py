"""Checkpoint files: safetensors weights plus a JSON config, written atomically.

Layout of a router folder::

    config.json                      routerdc config: router, encoder, recipe, metrics
    model.safetensors                 weights (or model-0000k-of-0000n.safetensors + index)
    encoder/                          the encoder's HF config and tokenizer files

Only safetensors are ever read; pickled files (``*.bin``, ``*.pt``, ``*.pth``, ``*.pkl``,
``*.ckpt``) are refused. A folder is written to a temporary sibling and renamed into place, so
a crash or a cancel never leaves a half-written router where a good one was (the one
atomic-write path, :mod:`routerdc.io`, fsyncs files and folders around the renames).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from routerdc.io import atomic_dir, write_bytes

__all__ = ["atomic_dir", "write_json", "json_bytes", "read_config", "save_state_dict", "load_state_dict",
           "CheckpointError"]

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "config.json"
FORMAT = "routerdc"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class CheckpointError(RuntimeError):
    """A router folder is missing, foreign, pickled, corrupt or incompatible."""


def json_bytes(obj: Any) -> bytes:
    """The exact bytes :func:`write_json` writes for ``obj``."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(path: Path, obj: Any) -> None:
    """Write JSON to ``path`` atomically (:func:`routerdc.io.write_bytes`: fsync + rename)."""
    write_bytes(path, json_bytes(obj))


def write_config(folder: str | os.PathLike, meta: dict[str, Any], output: str | os.PathLike | None = None) -> Path:
    """Give the router in ``folder`` the config ``meta``: rewrite its ``config.json`` in place
    (atomically; the weights untouched) or, with another ``output``, write a copy of the folder with
    the new config there in one atomic step. Returns where the router now is."""
    import shutil

    folder = Path(folder)
    out = Path(output) if output is not None else folder
    if out.resolve() == folder.resolve():
        write_json(folder / CONFIG_NAME, meta)
    else:
        with atomic_dir(out) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
            write_json(tmp / CONFIG_NAME, meta)
    return out


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The routerdc config of ``folder``; :class:`CheckpointError` if it is not a router folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    path = folder / CONFIG_NAME
    if not path.exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        hint = f" (found pickled files {pickles}; they are never loaded)" if pickles else ""
        raise CheckpointError(f"{folder}: not a RouterDC checkpoint, {CONFIG_NAME} is missing{hint}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config ({exc})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a RouterDC config (no \"format\": \"{FORMAT}\")")
    if int(cfg.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {cfg.get('format_version')} is newer than this routerdc "
            f"({FORMAT_VERSION}); upgrade routerdc"
        )
    return cfg


def save_state_dict(
    state: dict[str, "torch.Tensor"], folder: Path, *, dtype: "torch.dtype | None" = None,
    max_shard_size: int | str = "5GB",
) -> None:
    """Save tensors as safetensors (sharded above ``max_shard_size``), optionally cast to ``dtype``."""
    from huggingface_hub import save_torch_state_dict

    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_torch_state_dict(state, folder, max_shard_size=max_shard_size,
                          metadata={"format": "pt"})


def load_state_dict(folder: Path) -> dict[str, "torch.Tensor"]:
    """Read the safetensors weights of ``folder`` (single file or sharded). Never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.exists():
        files = [single]
    elif index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{index}: unreadable shard index ({exc})") from None
    else:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{folder}: only pickled weights {pickles}; RouterDC loads safetensors only"
            )
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} (or sharded index) found")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.exists():
            raise CheckpointError(f"{f}: shard listed in the index is missing")
        try:
            state.update(load_file(f))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{f}: corrupt safetensors file ({exc})") from None
    return state


def list_routers(folder: str | os.PathLike, *, sweep: bool = True) -> list[Path]:
    """The router folders directly in ``folder``, newest first. Left-overs of killed writes
    (``.X.tmp-*``, ``.X.old-*``) are never listed; with ``sweep`` stale ones are removed first."""
    from routerdc.io import is_leftover, sweep_stale

    folder = Path(folder)
    if not folder.is_dir():
        return []
    if sweep:
        sweep_stale(folder)
    try:
        found = [p for p in folder.iterdir() if not is_leftover(p.name) and (p / CONFIG_NAME).exists()]
    except OSError:
        return []
    return sorted(found, key=lambda p: -p.stat().st_mtime)
