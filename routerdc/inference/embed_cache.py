"""An on-disk cache of query embeddings, keyed by the encoder's identity and the texts.

Embedding the ~20k shipped queries takes minutes on a CPU; the frozen-encoder trainer, the
k-NN / MLP baselines and the app's map all need the same vectors again. Entries are ``.npy``
files (never pickles) written atomically, named by a SHA-256 over the model key and the texts.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from routerdc.model.router import RouterDC

CACHE_ENV = "ROUTERDC_CACHE"


def default_cache_dir() -> Path:
    """``$ROUTERDC_CACHE``, else ``~/.cache/routerdc``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "routerdc").expanduser()


def encoder_key(model: "RouterDC") -> str | None:
    """A stable identity of the *pretrained* encoder of ``model``, or None when it was trained.

    Only an encoder loaded unchanged from its source can be identified by name; a router whose
    encoder weights were fine-tuned (saved inside its checkpoint) has no such key.
    """
    meta = getattr(model, "meta", None)  # None: built in memory from a pretrained encoder
    if meta is not None and meta.included:
        return None
    c = model.config
    key = f"{c.encoder}|pool={c.pooling}|max_length={c.max_length}"
    key = key if c.normalization == "none" else f"{key}|norm={c.normalization}"
    return key + getattr(model, "cache_tag", "")


def embedding_key(model: "RouterDC") -> str:
    """What the cached (pooled) embeddings of ``model`` depend on, and nothing else.

    :func:`encoder_key` for a pretrained encoder; for a fine-tuned one a SHA-256 over the encoder's
    weights (as loaded, in a fixed order) and the config fields that change E(x) (pooling,
    max_length, normalization). The LLM keys, the offsets and the projection are left out (the
    cache holds vectors before the projection), so a router whose fleet changed (``add-llm``,
    ``remove-llm``) or that was re-calibrated reuses its embeddings. About 0.2 s for MiniLM;
    memoised on the model.
    """
    key = encoder_key(model)
    if key is not None:
        return key
    memo = getattr(model, "_embedding_key", None)
    if memo is not None:
        return memo
    import torch

    c = model.config
    h = hashlib.sha256(f"{c.encoder}|pool={c.pooling}|max_length={c.max_length}|norm={c.normalization}".encode())
    with torch.no_grad():
        for name, t in sorted(model.encoder.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    key = f"encoder:{h.hexdigest()}"
    model._embedding_key = key  # type: ignore[attr-defined]  # memo; RouterDC is an nn.Module
    return key


def _embedding_config(path: Path) -> bytes:
    """config.json's bytes without what changes no embedding (offsets, costs:
    :meth:`routerdc.checkpoint.RouterMeta.embedding_bytes`); its own bytes when it has none of them
    (or is unreadable)."""
    import json

    from routerdc.checkpoint import CheckpointError, RouterMeta

    raw = path.read_bytes()
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or not ({"calibration", "costs"} & set(meta) or
                                              {"llm_bias", "llm_cost"} & set(meta.get("router") or {})):
            return raw
        return RouterMeta.from_dict(meta).embedding_bytes()
    except (ValueError, CheckpointError):
        return raw


def checkpoint_key(folder: str | os.PathLike, *, embeddings_only: bool = False) -> str:
    """A content identity of a saved router (its config and every weight file's bytes).

    Unlike :func:`encoder_key` it identifies fine-tuned encoders too, so the embeddings of a
    trained router can be cached (e.g. by ``python -m routerdc evaluate``); a copy of the folder
    has the same key, and any change to its weights gives a new one.

    Args:
        embeddings_only: leave out what changes no embedding (the routing offsets that calibration
            writes, the costs, the novelty fallback and its bank), so that a router and its
            calibrated or costed copy share cached query embeddings and maps.
    """
    from routerdc.novelty import NOVELTY_FILE

    folder = Path(folder)
    h = hashlib.sha256()
    for f in [folder / "config.json", *sorted(folder.rglob("*.safetensors"))]:
        if embeddings_only and f.relative_to(folder).as_posix() == NOVELTY_FILE:
            continue
        if f.exists():
            h.update(str(f.relative_to(folder)).encode())
            if embeddings_only and f.name == "config.json":
                h.update(_embedding_config(f))
                continue
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
    return f"checkpoint:{h.hexdigest()}"


def _digest(key: str, texts: Sequence[str]) -> str:
    h = hashlib.sha256(key.encode("utf-8"))
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:32]


def cached_embeddings(
    model: "RouterDC", texts: Sequence[str], *, cache_dir: str | os.PathLike | None = None,
    batch_size: int | None = None, key: str | None = None,
) -> np.ndarray:
    """Pooled encoder embeddings ``(n, d)`` of ``texts`` (before any projection), cached on disk.

    Args:
        key: the model identity; default :func:`encoder_key`. Without one (a fine-tuned
            encoder) nothing is cached and the texts are embedded directly.
    """
    key = key if key is not None else encoder_key(model)
    if key is None:
        return model.embed_texts(texts, batch_size=batch_size, project=False)
    key = key if key.endswith(getattr(model, "cache_tag", "")) else key + getattr(model, "cache_tag", "")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"emb-{_digest(key, texts)}.npy"  # as cache_path(), for an explicit key
    if path.exists():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (len(texts), model.dim):
                return arr
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed below
    arr = model.embed_texts(texts, batch_size=batch_size, project=False)
    try:
        from routerdc.io import atomic_file

        with atomic_file(path, "wb") as f:
            np.save(f, arr, allow_pickle=False)
    except OSError:
        pass  # a read-only cache is not an error
    return arr


def cache_path(model: "RouterDC", texts: Sequence[str], cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Where :func:`cached_embeddings` keeps ``texts``' vectors (None when the encoder has no key)."""
    key = encoder_key(model)
    if key is None:
        return None
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"emb-{_digest(key, texts)}.npy"


def router_embeddings(
    model: "RouterDC", texts: Sequence[str], *, cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Router embeddings ``(n, d)`` after the optional projection, through the cache when it applies
    (a pretrained encoder, or any router given its ``key``, e.g. :func:`checkpoint_key`)."""
    key = key if key is not None else encoder_key(model)
    if key is None:
        return model.embed_texts(texts, batch_size=batch_size, project=True)
    pooled = cached_embeddings(model, texts, cache_dir=cache_dir, batch_size=batch_size, key=key)
    if model.projection is None:
        return pooled
    import torch

    with torch.inference_mode():
        return model.project(torch.as_tensor(pooled, device=model.device)).float().cpu().numpy()
