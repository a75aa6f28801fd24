"""Clustering the training queries for the sample-sample contrastive loss.

The paper runs k-means over embeddings of the *untrained* encoder (after a t-SNE reduction)
and uses the cluster ids as the groups of the sample-sample loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from routerdc.data.scoreset import ScoreSet

if TYPE_CHECKING:
    from routerdc.model.router import RouterDC

REDUCTIONS: tuple[str, ...] = ("none", "pca", "tsne")


def cluster_embeddings(
    embeddings: np.ndarray, n_clusters: int = 5, *, reduce: str = "none", dims: int = 2, seed: int = 0,
) -> np.ndarray:
    """k-means cluster ids ``(n,)`` for ``embeddings (n, d)``.

    Args:
        reduce: ``"none"``, ``"pca"`` or ``"tsne"`` (the paper's) to ``dims`` dimensions first.
        seed: seeds both the reduction and k-means.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {x.shape}")
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters must be between 1 and the number of queries ({len(x)}), got {n_clusters}")
    if reduce == "pca":
        from sklearn.decomposition import PCA

        x = PCA(n_components=min(dims, *x.shape), random_state=seed).fit_transform(x)
    elif reduce == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(1, len(x) - 1) / 3))
        x = TSNE(n_components=dims, random_state=seed, perplexity=perplexity, init="pca").fit_transform(x)
    elif reduce != "none":
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    return KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit_predict(x).astype(np.int64)


def assign_clusters(
    sets: Sequence[ScoreSet], model: "RouterDC", n_clusters: int = 5, *, reduce: str = "none",
    seed: int = 0, batch_size: int | None = None,
) -> list[ScoreSet]:
    """Cluster all queries of ``sets`` together with ``model``'s encoder; ids written into copies."""
    texts = [q for s in sets for q in s.queries]
    labels = cluster_embeddings(model.embed_texts(texts, batch_size=batch_size, project=False),
                                n_clusters, reduce=reduce, seed=seed)
    out, start = [], 0
    for s in sets:
        out.append(s.with_clusters(labels[start:start + len(s)]))
        start += len(s)
    return out
