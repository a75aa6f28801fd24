"""2-D maps of a router's embedding space, and fast placement of new queries on them.

The map shows the router's (projected) query embeddings of some data sets together with its
LLM embeddings k_t, reduced to two dimensions with UMAP (cosine metric, umap-learn) or, where
UMAP is unavailable or too slow (tests), PCA of the unit-normalised vectors.

UMAP's numba compilation costs 30-50 s per process, so a map is fitted once per router and
stored (``save_map`` / ``load_map``: a ``.npz`` file, never a pickle). New queries are *not*
pushed through UMAP's ``transform``: :func:`place` puts a query at the similarity-weighted mean
of the map positions of its ``k`` nearest reference queries by cosine similarity in embedding
space (a k-NN interpolation, a few hundred microseconds for thousands of references). A query
close to known ones lands among them, which is what the map is read for.

Nothing here imports a UI library; umap-learn is imported only when a UMAP map is fitted.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

METHODS: tuple[str, ...] = ("umap", "pca")
MAP_FORMAT_VERSION = 1


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


@dataclass(frozen=True)
class EmbeddingMap:
    """A fitted map: reference embeddings (unit rows), their 2-D positions and the LLMs'.

    Attributes:
        embeddings: ``(n, d)`` unit-normalised reference query embeddings.
        coords: ``(n, 2)`` their map positions.
        llm_coords: ``(T, 2)`` the map positions of the LLM embeddings.
        method: ``"umap"`` or ``"pca"``.
    """

    embeddings: np.ndarray
    coords: np.ndarray
    llm_coords: np.ndarray
    method: str

    def __post_init__(self) -> None:
        n = len(self.embeddings)
        if self.coords.shape != (n, 2):
            raise ValueError(f"coords have shape {self.coords.shape}, expected ({n}, 2)")
        if self.llm_coords.ndim != 2 or self.llm_coords.shape[1] != 2:
            raise ValueError(f"llm_coords must be (T, 2), got {self.llm_coords.shape}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def __len__(self) -> int:
        return len(self.coords)

    def place(self, emb: np.ndarray, k: int = 10) -> np.ndarray:
        """Map positions ``(m, 2)`` of new query embeddings ``(m, d)``; see :func:`place`."""
        return place(emb, self.embeddings, self.coords, k=k)

    def neighbours(self, emb: np.ndarray, k: int = 5, among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(indices (m, k), cosine similarities (m, k))`` of the nearest reference queries.

        ``among``: optional boolean mask ``(n,)`` restricting the candidates.
        """
        return nearest(emb, self.embeddings, k=k, among=among)


def nearest(emb: np.ndarray, ref_unit: np.ndarray, *, k: int = 5,
            among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar rows of ``ref_unit`` (unit rows) for each row of ``emb``."""
    q = unit_rows(np.atleast_2d(emb))
    sims = q @ ref_unit.T
    if among is not None:
        sims = np.where(np.asarray(among, dtype=bool)[None, :], sims, -np.inf)
        k = min(k, int(np.count_nonzero(among)))
    k = max(0, min(k, sims.shape[1]))
    if k == 0:
        return np.zeros((len(q), 0), dtype=np.int64), np.zeros((len(q), 0), dtype=np.float32)
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(sims, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    return idx, np.take_along_axis(sims, idx, axis=1).astype(np.float32)


def place(emb: np.ndarray, ref_unit: np.ndarray, ref_coords: np.ndarray, *, k: int = 10,
          sharpness: float = 0.05) -> np.ndarray:
    """k-NN interpolation of map positions.

    Each new embedding lands at ``sum_i w_i * coords_i`` over its ``k`` nearest references
    (cosine), with ``w = softmax(cos / sharpness)``: the closest neighbours dominate; a query
    identical to a reference lands exactly on it.
    """
    idx, sims = nearest(emb, ref_unit, k=k)
    if idx.shape[1] == 0:
        return np.zeros((len(idx), 2), dtype=np.float32)
    logits = sims / sharpness
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    out = np.einsum("mk,mkc->mc", w, ref_coords[idx]).astype(np.float32)
    same = sims[:, 0] >= 1.0 - 1e-6  # a known query lands exactly on itself
    out[same] = ref_coords[idx[same, 0]]
    return out


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    comps = vt[:2]
    if comps.shape[0] < 2:  # fewer than 2 points or dimensions: pad with zeros
        comps = np.vstack([comps, np.zeros((2 - comps.shape[0], x.shape[1]), dtype=x.dtype)])
    return mean, comps, (x - mean) @ comps.T


def fit_map(query_emb: np.ndarray, llm_emb: np.ndarray, *, method: str = "umap", seed: int = 0,
            n_neighbors: int = 15, min_dist: float = 0.1) -> EmbeddingMap:
    """Fit a 2-D map of ``query_emb`` ``(n, d)`` and ``llm_emb`` ``(T, d)`` together.

    The LLM embeddings are part of the fit (cosine geometry is what routing uses), so each
    LLM marker lands among the queries most similar to it.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    q = unit_rows(query_emb)
    k = unit_rows(llm_emb)
    if len(q) == 0:
        raise ValueError("no query embeddings to map")
    both = np.concatenate([q, k])
    if method == "umap" and len(both) > max(n_neighbors, 4) + 1:
        import umap  # noqa: PLC0415 - heavy (numba), imported only here

        reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=min(n_neighbors, len(both) - 1),
                            min_dist=min_dist, random_state=seed, n_jobs=1, low_memory=True)
        xy = reducer.fit_transform(both).astype(np.float32)
    else:
        xy = _pca2(both)[2].astype(np.float32)
        method = "pca"  # asked for, or too few points for UMAP
    return EmbeddingMap(embeddings=q, coords=xy[: len(q)], llm_coords=xy[len(q):], method=method)


def save_map(m: EmbeddingMap, path: str | os.PathLike, *, compact: bool = False, **extra: np.ndarray) -> Path:
    """Write ``m`` (and extra arrays) to ``path`` (``.npz``) atomically.

    ``compact`` writes the form a router ships with (a few MB instead of a few tens): the reference
    embeddings are left out (they are the unit rows of ``extra["raw"]``, which is then required),
    float arrays are stored as float16, and the file is compressed. Its cosine similarities agree
    with the full form's within about 1e-3, plenty for placement and nearest-query look-ups.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {"coords": m.coords, "llm_coords": m.llm_coords, **extra}
    if compact:
        if "raw" not in extra:
            raise ValueError("a compact map needs the raw embeddings (raw=...)")
        arrays = {k: (v.astype(np.float16) if np.issubdtype(np.asarray(v).dtype, np.floating) else v)
                  for k, v in arrays.items()}
    else:
        arrays["embeddings"] = m.embeddings
    from routerdc.io import atomic_file

    with atomic_file(path, "wb") as f:
        (np.savez_compressed if compact else np.savez)(
            f, method=np.asarray(m.method), version=np.asarray(MAP_FORMAT_VERSION), **arrays)
    return path


def load_map(path: str | os.PathLike) -> tuple[EmbeddingMap, dict[str, np.ndarray]]:
    """Read a map written by :func:`save_map` (full or compact): ``(map, extra arrays)``, float
    arrays as float32. Raises ``ValueError``."""
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable map file ({exc})") from None
    if int(data.get("version", -1)) != MAP_FORMAT_VERSION:
        raise ValueError(f"{path}: unknown map format version")
    data = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in data.items()}
    try:
        emb = data.pop("embeddings") if "embeddings" in data else unit_rows(data["raw"])
        m = EmbeddingMap(embeddings=emb, coords=data.pop("coords"), llm_coords=data.pop("llm_coords"),
                         method=str(data.pop("method")))
    except KeyError as exc:
        raise ValueError(f"{path}: not a map file (no {exc.args[0]!r})") from None
    data.pop("version")
    return m, data


def map_key(*parts: str | bytes, texts: Sequence[str] = ()) -> str:
    """A short hex digest of ``parts`` and ``texts``, for cache file names."""
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else str(p).encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:24]


__all__ = ["EmbeddingMap", "METHODS", "fit_map", "load_map", "map_key", "nearest", "place", "save_map", "unit_rows"]
